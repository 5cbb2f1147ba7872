"""Spans of guarded calls: OpenTelemetry when it is importable, else only the
caller's ``traceparent``, passed on to the daemon's ``permit`` (whose span
of the call becomes its child; proto/PROTOCOL.md, permit)."""
import re
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Tuple

from .errors import InvalidRequest

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
_UNSET = object()
_api: Any = _UNSET


def check_traceparent(tp: Optional[str]) -> Optional[str]:
    """tp if it is a W3C trace context the daemon accepts, else
    InvalidRequest (None passes)."""
    if tp is None:
        return None
    m = _TRACEPARENT.fullmatch(tp) if isinstance(tp, str) else None
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        raise InvalidRequest(f"traceparent {tp!r}: expected "
                             "00-<32 hex>-<16 hex>-<2 hex>, in lower case, "
                             "ids not all zero")
    return tp


def otel() -> Any:
    """(opentelemetry.trace, opentelemetry.propagate), or None when
    opentelemetry is not importable."""
    global _api
    if _api is _UNSET:
        try:
            from opentelemetry import propagate, trace
            _api = (trace, propagate)
        except ImportError:
            _api = None
    return _api


@contextmanager
def call_span(traceparent: Optional[str]
              ) -> Iterator[Tuple[Any, Optional[str]]]:
    """A client span ``llm.call`` under the caller's current OpenTelemetry
    context, and the traceparent to send: the caller's own when given, else
    that span's.  Without opentelemetry: no span, the given traceparent."""
    api = otel()
    if api is None:
        yield None, traceparent
        return
    trace, propagate = api
    tracer = trace.get_tracer("llmguard")
    with tracer.start_as_current_span("llm.call",
                                      kind=trace.SpanKind.CLIENT) as span:
        if traceparent is None:
            carrier: dict = {}
            propagate.inject(carrier)
            traceparent = carrier.get("traceparent")
        yield span, traceparent


def set_call_attributes(span: Any, attrs: dict) -> None:
    """The llm.* attributes of a call, on its span (None values skipped)."""
    if span is None:
        return
    for k, v in attrs.items():
        if v is not None:
            span.set_attribute(k, v)
