"""Token quotas per workflow and per tenant over a rolling window, held by
llmguardd: ``get_quota_manager()``.

A subject is ``workflow:<id>`` or ``tenant:<id>``; a subject never seen has
used 0 tokens of the default limit.  In soft mode (QUOTA_ENFORCEMENT=soft)
an over-quota reservation is allowed and flagged, in hard mode refused
(proto/PROTOCOL.md, "Quota subjects, windows and reservations").  Times are
timezone-aware UTC datetimes.
"""
from datetime import datetime, timezone
from typing import Any, Dict, Optional

from . import _args
from .client import Client, default_client
from .errors import QuotaExceededError

__all__ = ["QuotaManager", "get_quota_manager"]


def _utc(ts: Optional[float]) -> Optional[datetime]:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


def subject_fields(workflow_id: Optional[str],
                   tenant_id: Optional[str]) -> Dict[str, Any]:
    """The id fields of a quota request."""
    return {"workflow_id": _args.opt_id(workflow_id, "workflow_id"),
            "tenant_id": _args.opt_id(tenant_id, "tenant_id")}


def reserve_fields(workflow_id: Optional[str], tenant_id: Optional[str],
                   tokens: int) -> Dict[str, Any]:
    """The fields of a quota_reserve."""
    f = subject_fields(workflow_id, tenant_id)
    f["tokens"] = _args.count(tokens, "tokens")
    return f


def commit_fields(workflow_id: Optional[str], tenant_id: Optional[str],
                  reservation: int, estimate: int,
                  actual: int) -> Dict[str, Any]:
    """The fields of a quota_commit."""
    if type(reservation) is not int:
        raise TypeError("reservation must be the int reserve() gave")
    f = subject_fields(workflow_id, tenant_id)
    f.update(reservation=reservation, estimate=_args.count(estimate,
                                                           "estimate"),
             actual=_args.count(actual, "actual"))
    return f


def decision_dict(rep: Dict[str, Any]) -> Dict[str, Any]:
    """reserve()'s dict from a quota_reserve reply."""
    d = {k: rep[k] for k in ("allowed", "over_quota", "subject",
                             "tokens_used", "tokens_limit",
                             "tokens_remaining", "reservation")}
    d["reset_at"] = _utc(rep["reset_at"])
    return d


def status_dict(rep: Dict[str, Any]) -> Dict[str, Any]:
    """get_quota_status's dict from a quota_status reply."""
    return {
        "subject": rep["subject"], "tokens_used": rep["tokens_used"],
        "tokens_remaining": rep["tokens_remaining"],
        "tokens_limit": rep["tokens_limit"],
        "window_start": _utc(rep["window_start"]),
        "window_end": _utc(rep["window_end"]),
        "reset_at": _utc(rep["reset_at"]),
    }


class QuotaManager:
    """The quotas of llmguardd (``client`` None: the default client)."""

    def __init__(self, client: Optional[Client] = None) -> None:
        self._client = client

    @property
    def client(self) -> Client:
        """The client this manager talks through."""
        return self._client or default_client()

    def check_and_reserve(self, workflow_id: Optional[str] = None,
                          tenant_id: Optional[str] = None,
                          tokens: int = 0) -> bool:
        """Check the workflow's and/or the tenant's quota and reserve
        ``tokens`` on both, atomically (0 only checks).  False when a hard
        quota refused (nothing was reserved); True otherwise, also in soft
        mode over the limit."""
        try:
            self.reserve(workflow_id, tenant_id, tokens)
        except QuotaExceededError:
            return False
        return True

    def reserve(self, workflow_id: Optional[str] = None,
                tenant_id: Optional[str] = None,
                tokens: int = 0) -> Dict[str, Any]:
        """As check_and_reserve, with the decision: ``{allowed, over_quota,
        subject, tokens_used, tokens_limit, tokens_remaining, reset_at,
        reservation}``; ``reservation`` is for commit().  Raises
        QuotaExceededError when a hard quota refuses."""
        rep = self.client.call("quota_reserve", reserve_fields(
            workflow_id, tenant_id, tokens))
        return decision_dict(rep)

    def commit(self, workflow_id: Optional[str] = None,
               tenant_id: Optional[str] = None, *, reservation: int,
               estimate: int, actual: int) -> None:
        """Reconcile a reservation of ``estimate`` tokens with the ``actual``
        tokens used (0 cancels it); give the ids the reservation had."""
        self.client.call("quota_commit", commit_fields(
            workflow_id, tenant_id, reservation, estimate, actual))

    def get_quota_status(self, workflow_id: Optional[str] = None,
                         tenant_id: Optional[str] = None) -> Dict[str, Any]:
        """One subject's quota (give exactly one id): ``{subject,
        tokens_used, tokens_remaining, tokens_limit, window_start,
        window_end, reset_at}``; ``reset_at`` is None when nothing is
        used."""
        rep = self.client.call("quota_status",
                               subject_fields(workflow_id, tenant_id))
        return status_dict(rep)


_manager: Optional[QuotaManager] = None


def get_quota_manager() -> QuotaManager:
    """The process's QuotaManager, on the default client."""
    global _manager
    if _manager is None:
        _manager = QuotaManager()
    return _manager
