"""The report's charts, drawn with matplotlib's object-oriented API on its Agg canvas
(off-screen, no display, no pyplot global state) and returned as PNG data URIs to embed
in the page (``<img src="data:image/png;base64,...">``): the page needs no other file
and no network. Each function takes the series :mod:`.shaping` made and draws them as
they are.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orchestrator.adapters.portfolio import TierAtRisk
from orchestrator.entrypoints.report.shaping import Bar, Series, UpliftPoint, tier_order

WIDTH_IN = 7.0  # inches; at DPI, 1,050 pixels wide
HEIGHT_IN = 3.2
DPI = 150
COLOURS = {
    "total": "#4c6a92",
    "up": "#3a9a5b",
    "down": "#c8553d",
    "NRR": "#4c6a92",
    "GRR": "#d08c2c",
    "high": "#c8553d",
    "medium": "#d08c2c",
    "low": "#3a9a5b",
}
OTHER = "#7f7f7f"


def _figure(height: float = HEIGHT_IN) -> Figure:
    fig = Figure(figsize=(WIDTH_IN, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _style(ax: Axes) -> None:
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="y", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)


def waterfall(bars: Sequence[Bar], currency: str, title: str) -> str:
    """The MRR waterfall: start, each movement floating on the running total, end."""
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    labels = [b.label for b in bars]
    drawn = ax.bar(
        labels,
        [b.height for b in bars],
        bottom=[b.bottom for b in bars],
        color=[COLOURS[b.kind] for b in bars],
        width=0.6,
    )
    ax.bar_label(
        drawn, labels=[f"{abs(b.height):,.0f}" if b.height else "" for b in bars], fontsize=8
    )
    top = max(max(b.bottom, b.bottom + b.height) for b in bars)
    ax.set_ylim(0, top * 1.15 if top > 0 else 1)  # room for the labels under the title
    ax.set_ylabel(f"MRR ({currency})")
    ax.set_title(title, fontsize=10)
    ax.tick_params(axis="x", labelsize=8)
    return _png(fig)


def retention(series: Sequence[Series], currency: str) -> str:
    """NRR and GRR by month, as percentages, with the 100 % line."""
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    for s in series:
        months = [m for m, _ in s.points]
        ax.plot(
            months,
            [v * 100 for _, v in s.points],
            marker="o",
            label=s.name,
            color=COLOURS.get(s.name, OTHER),
        )
    ax.axhline(100, color="#999999", linewidth=0.8, linestyle="--")
    ax.set_ylabel("% of MRR at start")
    ax.set_title(f"NRR and GRR by month ({currency})", fontsize=10)
    ax.legend(frameon=False, fontsize=8)
    ax.tick_params(axis="x", labelsize=8, rotation=30)
    return _png(fig)


def churn_by_plan(bars: Sequence[tuple[str, float, str]]) -> str:
    """Monthly customer churn by plan, each bar labelled lost/at start."""
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    drawn = ax.bar([p for p, _, _ in bars], [r * 100 for _, r, _ in bars], color=COLOURS["down"])
    ax.bar_label(drawn, labels=[label for _, _, label in bars], padding=2, fontsize=8)
    ax.margins(y=0.12)
    ax.set_ylabel("customers lost (%)")
    ax.set_title("Customer churn by plan (lost / at start)", fontsize=10)
    return _png(fig)


def at_risk(by_currency: Mapping[str, Mapping[str, TierAtRisk]]) -> str:
    """MRR at risk now by risk tier, one group of bars per currency."""
    currencies = sorted(by_currency)
    tiers = tier_order(sorted({t for tiers in by_currency.values() for t in tiers}))
    fig = _figure()
    ax = fig.add_subplot()
    _style(ax)
    width = 0.8 / max(len(tiers), 1)
    for i, tier in enumerate(tiers):
        xs = [c + (i - (len(tiers) - 1) / 2) * width for c in range(len(currencies))]
        values = [
            float(by_currency[cur][tier].mrr_at_risk) if tier in by_currency[cur] else 0.0
            for cur in currencies
        ]
        drawn = ax.bar(xs, values, width=width, label=tier, color=COLOURS.get(tier, OTHER))
        ax.bar_label(drawn, labels=[f"{v:,.0f}" if v else "" for v in values], fontsize=8)
    ax.margins(y=0.12)
    ax.set_xticks(range(len(currencies)), currencies)
    ax.set_ylabel("MRR at risk (MRR x churn probability)")
    ax.set_title("MRR at risk now, by risk tier", fontsize=10)
    ax.legend(title="tier", frameon=False, fontsize=8)
    return _png(fig)


def uplift(points: Sequence[UpliftPoint], confidence: float) -> str:
    """Each playbook's conversion uplift against its holdout, with its interval."""
    fig = _figure(height=max(1.6, 0.55 * len(points) + 1.0))
    ax = fig.add_subplot()
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)
    ys = list(range(len(points)))
    ax.errorbar(
        [p.estimate * 100 for p in points],
        ys,
        xerr=[
            [(p.estimate - p.low) * 100 for p in points],
            [(p.high - p.estimate) * 100 for p in points],
        ],
        fmt="o",
        color=COLOURS["total"],
        capsize=4,
    )
    ax.axvline(0, color="#999999", linewidth=0.8, linestyle="--")
    ax.set_yticks(ys, [p.playbook for p in points])
    ax.set_ylim(-0.7, len(points) - 0.3)
    ax.invert_yaxis()
    ax.set_xlabel(
        f"conversion uplift, treatment - holdout (points, {confidence * 100:g} % interval)"
    )
    ax.set_title("Playbook uplift against the holdout", fontsize=10)
    return _png(fig)
