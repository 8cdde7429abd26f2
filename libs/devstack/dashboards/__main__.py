"""``python -m devstack.dashboards [FOLDER...]`` (``make dashboards``): write every dashboard
into the given folders, by default ``deploy/grafana/dashboards/`` and the Helm chart's
``files/dashboards/``, and print the paths written."""

from __future__ import annotations

import sys
from pathlib import Path

from devstack.dashboards import CHART_FOLDER, DASHBOARDS, FOLDER, write
from devstack.dashboards.grafana import REPO

chosen = tuple(Path(arg) for arg in sys.argv[1:]) or (FOLDER, CHART_FOLDER)
for written in write(DASHBOARDS, chosen):
    print(written.relative_to(REPO) if written.is_relative_to(REPO) else written)
