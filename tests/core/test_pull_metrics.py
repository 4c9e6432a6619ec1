"""What a pull skipped or met is counted in the metrics, by source and kind."""

from __future__ import annotations

from syncd.metrics import Metrics
from syncd.model import Snapshot
from syncd.pull import _count_problems


def test_problems_met_while_pulling_are_counted_by_source_and_kind() -> None:
    metrics = Metrics()
    snapshot = Snapshot("corp", counters={"skipped_no_email": 3, "grant_errors": 2, "users_read": 100})
    _count_problems(metrics, snapshot)
    _count_problems(metrics, snapshot)
    value = metrics.registry.get_sample_value
    assert value("syncd_source_problems_total", {"source": "corp", "kind": "skipped_no_email"}) == 6
    assert value("syncd_source_problems_total", {"source": "corp", "kind": "grant_errors"}) == 4
    assert value("syncd_grant_errors_total", {"source": "corp"}) == 4
    assert value("syncd_source_problems_total", {"source": "corp", "kind": "users_read"}) is None
