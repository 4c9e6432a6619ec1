"""Bulk phases: the cyclic garbage collector paused while a pull, a record or a plan builds its objects.

A pull of 100,000 people creates a few million objects that all stay alive until the run ends; each time the
collector's generation thresholds are crossed it walks every one of them again, looking for cycles that these
phases do not make. At 100,000 users that walk cost about 3.5 s of an 8 s reconcile (measured in the steady-state
benchmark; BENCHMARKS.md). Reference counting still frees everything as usual while paused; cycles made meanwhile
are collected once the collector runs again.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]

_lock = threading.Lock()
_depth = 0
_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic collector for the block (nested and concurrent blocks share one pause)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
