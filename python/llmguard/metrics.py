"""The daemon's metrics: ``get_metrics_summary()``.

The summary keeps the shape programs written for per-process limiters
expect: ``counters`` and ``gauges`` map each metric name to its sum over
its label sets (so ``summary["counters"].get("llm_requests_total", 0)`` is
a number), ``histograms`` each name to ``{count, sum}``; ``series`` holds
every label set, as ``llmguardctl --json metrics`` prints them.  llmguardd(8)
lists the metrics.
"""
from typing import Any, Dict, List, Optional, Tuple

from .client import Client, default_client

__all__ = ["get_metrics_summary", "MetricsPages"]

_KINDS = {"counter": "counters", "gauge": "gauges", "histogram": "histograms"}


class MetricsPages:
    """Collects the pages of a ``metrics`` reply (proto/PROTOCOL.md,
    metrics): next_fields() gives the next request, add() takes its reply,
    until next_fields() is None."""

    def __init__(self) -> None:
        self.series: Dict[str, Dict[str, List[Dict[str, Any]]]] = {
            kind: {} for kind in _KINDS.values()}
        # (kind, name, rows) of each family, in the daemon's order.
        self.order: List[Tuple[str, str, List[Dict[str, Any]]]] = []
        self._cursor: Optional[int] = 0

    def next_fields(self) -> Optional[Dict[str, Any]]:
        """The fields of the next page's request; None after the last."""
        if self._cursor is None:
            return None
        return {"cursor": self._cursor or None}

    def add(self, rep: Dict[str, Any]) -> None:
        """Take one page."""
        for fam in rep.get("families") or []:
            kind = _KINDS.get(fam["type"])
            if kind is None:
                continue            # a type of a later version
            rows = self.series[kind].get(fam["name"])
            if rows is None:
                rows = self.series[kind][fam["name"]] = []
                self.order.append((kind, fam["name"], rows))
            names = fam["label_names"]
            for s in fam["series"]:
                labels = dict(zip(names, s["labels"]))
                if kind != "histograms":
                    rows.append({"labels": labels,
                                 "value": float(s.get("value", 0.0))})
                    continue
                bounds = fam.get("bounds") or []
                buckets = [{"le": float(le), "count": int(n)} for le, n in
                           zip(bounds, s.get("buckets") or [])]
                buckets.append({"le": "+Inf", "count": s.get("count", 0)})
                rows.append({"labels": labels, "count": s.get("count", 0),
                             "sum": float(s.get("sum", 0.0)),
                             "buckets": buckets})
        self._cursor = rep.get("next_cursor")

    def summary(self) -> Dict[str, Any]:
        """The summary of every page taken."""
        out: Dict[str, Any] = {"counters": {}, "gauges": {}, "histograms": {},
                               "series": self.series}
        for name, rows in self.series["counters"].items():
            total = float(sum(r["value"] for r in rows))
            out["counters"][name] = int(total) if total.is_integer() \
                else total
        for name, rows in self.series["gauges"].items():
            out["gauges"][name] = float(sum(r["value"] for r in rows))
        for name, rows in self.series["histograms"].items():
            out["histograms"][name] = {
                "count": sum(r["count"] for r in rows),
                "sum": float(sum(r["sum"] for r in rows))}
        return out


def get_metrics_summary(client: Optional[Client] = None) -> Dict[str, Any]:
    """``{counters, gauges, histograms, series}`` of llmguardd's metrics
    (``client`` None: the default client)."""
    client = client or default_client()
    pages = MetricsPages()
    while (fields := pages.next_fields()) is not None:
        pages.add(client.call("metrics", fields))
    return pages.summary()
