"""Every Prometheus metric syncd exports, on a registry of its own (built by the caller, never at import).

Label values are bounded: sources, actions, endpoints, statuses — never a user id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """The metric families, registered on `registry` (a fresh one unless given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.runs = Counter("syncd_runs", "Sync runs by source and outcome", ["source", "outcome"], registry=r)
        self.run_duration = Histogram(
            "syncd_run_duration_seconds", "Duration of sync runs", ["source"], buckets=_RUN_BUCKETS, registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds", "Unix time of the last successful run", ["source"], registry=r
        )
        self.managed_users = Gauge("syncd_managed_users", "Managed LiteLLM users by state", ["state"], registry=r)
        self.changes = Counter(
            "syncd_changes", "Changes applied by action and result", ["action", "result"], registry=r
        )
        self.guard_holds = Counter("syncd_guard_holds", "Runs held by the deactivation guard", registry=r)
        self.held_plans = Gauge(
            "syncd_held_plans",
            "Open held plans: held (waiting for a decision), approved (for the next run), rejected",
            ["status"],
            registry=r,
        )
        self.conflicts = Gauge(
            "syncd_conflicts", "Known conflicts: people syncd writes nothing for until their inputs change", registry=r
        )
        self.litellm_calls = Counter(
            "syncd_litellm_calls", "LiteLLM admin API calls by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.litellm_latency = Histogram(
            "syncd_litellm_call_duration_seconds",
            "LiteLLM admin API call latency",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.scim_requests = Counter(
            "syncd_scim_requests",
            "SCIM requests by method, resource and status",
            ["method", "resource", "status"],
            registry=r,
        )
        self.scim_auth_failures = Counter(
            "syncd_scim_auth_failures", "SCIM requests refused for their token", ["reason"], registry=r
        )
        self.oauth_token_requests = Counter(
            "syncd_oauth_token_requests",
            "Requests to /oauth/token by outcome: issued, or the RFC 6749 error answered",
            ["outcome"],
            registry=r,
        )
        self.scim_to_litellm = Histogram(
            "syncd_scim_to_litellm_seconds",
            "Time from a SCIM write to the LiteLLM change it caused",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.source_problems = Counter(
            "syncd_source_problems", "Entries skipped or problems met while pulling", ["source", "kind"], registry=r
        )
        self.grant_errors = Counter(
            "syncd_grant_errors", "Malformed grants kept in the directory", ["source"], registry=r
        )
        self.identity_conflicts = Gauge(
            "syncd_identity_conflicts",
            "Identities refused at the last full plan: their email or user_id is another person's",
            ["kind"],
            registry=r,
        )
        self.source_drift = Counter(
            "syncd_source_drift",
            "Rows (identities, groups, memberships) a true full pull found different from the change-based state",
            ["source"],
            registry=r,
        )

        self.notifications_sent = Counter(
            "syncd_notifications_sent",
            "Notifications a webhook accepted, by webhook and event",
            ["webhook", "event"],
            registry=r,
        )
        self.notifications_failed = Counter(
            "syncd_notifications_failed",
            "Notifications given up (after their retries, or dropped), by webhook, event and reason",
            ["webhook", "event", "reason"],
            registry=r,
        )

        self._add_daemon_metrics(r)

    def _add_daemon_metrics(self, r: CollectorRegistry) -> None:
        """The families of `syncd serve`: scheduled pulls, leadership, the reconcile worker."""
        self.pulls = Counter(
            "syncd_pulls", "Scheduled LDAP pulls by source, mode and outcome", ["source", "mode", "outcome"], registry=r
        )
        self.leader = Gauge("syncd_leader", "1 while this replica runs the scheduled pulls and the applies", registry=r)
        self.pending_changes = Gauge("syncd_pending_changes", "Journaled changes still pending", registry=r)
        self.failed_changes = Gauge("syncd_failed_changes", "Changes that failed in the last run", registry=r)
        self.reconcile_requests = Counter(
            "syncd_reconcile_requests", "Reconciles asked of the worker, by trigger", ["trigger"], registry=r
        )
        self.up_since = Gauge("syncd_start_time_seconds", "Unix time this process started", registry=r)

    def record_litellm_call(self, endpoint: str, status: int | None, seconds: float) -> None:
        """The LiteLLM client's on_call hook: one call, its status (None: no answer) and latency."""
        self.litellm_calls.labels(endpoint, str(status) if status is not None else "error").inc()
        self.litellm_latency.labels(endpoint).observe(seconds)
