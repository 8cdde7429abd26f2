"""``tenure report``: the portfolio's month as one self-contained HTML page (issue 17).

The figures are :func:`orchestrator.service_layer.portfolio.portfolio_figures`'s, the
same function ``GET /v1/metrics/portfolio`` answers from; :mod:`.shaping` formats them
and shapes the charts' series (pure), :mod:`.charts` draws the charts (matplotlib, Agg,
PNG embedded as data URIs), :mod:`.page` fills the template.
"""
