"""What the data-modifying CTE buys (not part of ``make bench``).

    .venv/bin/python -m bench.orchestrator_cte

One replica fires the same blocks of due timers as ``bench.orchestrator`` (1,000,000
pending, 36,000 made due per measurement), in interleaved rounds: ``tenure1`` writes
each group with the one statement of ``adapters/step_store.py``, ``tenure1_plain``
with one plain statement per kind of row in the same transaction
(``bench.orchestrator_plain``). Prints every round and the medians; writes nothing.
``TENURE_BENCH_LOCK`` is honoured as in ``bench.orchestrator``.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from statistics import median

import bench.orchestrator as b
from common.db import create_engine, upgrade_async
from devstack.postgres import EmbeddedPostgres

MEASURES = ("tenure1", "tenure1_plain")


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="tenure-bench-cte-", dir="/tmp") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", database="bench_cte")
        url = pg.start()
        try:
            postmaster = int((pg.data_dir / "postmaster.pid").read_text().split()[0])
            await upgrade_async(url)
            engine = create_engine(url, pool_size=2)
            blocks = b.Blocks()
            try:
                await b.load(engine, url)
                rounds = await b.measure(engine, url, postmaster, blocks, MEASURES)
            finally:
                await engine.dispose()
        finally:
            pg.stop()
    ratios = b.per_round(rounds, "tenure1", "tenure1_plain")
    one, plain = (median(m["rate"] for m in rounds[name]) for name in MEASURES)
    print(
        f"CTE / plain statements per round: {', '.join(f'{x:.3f}' for x in ratios)}; "
        f"medians {one:,.0f} against {plain:,.0f} timers/s ({one / plain - 1:+.1%})",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
