"""Counting problems by kind while a run is loaded and served: the first of each kind logged in full, then a count.

Serving meets the same fault on every call (a missing column, a member that fails, a malformed batch): one
traceback per kind keeps the log readable over thousands of calls, and the counts per kind are what the end-of-run
summary (`spread.infer.summary_text`) and the fault bench (bench/bench_faults.py) report.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Problems:
    """Counts of every problem kind met while loading and serving; logs the first of each kind (per `key`) in full,
    then a running count at 10, 100, 1000, ... occurrences."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._logged: set[tuple[str, str]] = set()

    def report(
        self, kind: str, message: str, level: int = logging.WARNING, key: str = "", exc: BaseException | None = None
    ) -> None:
        """Count one `kind`; log `message` (at `level`, with `exc`'s traceback) the first time for `key`."""
        count = self.counts.get(kind, 0) + 1
        self.counts[kind] = count
        if (kind, key) not in self._logged:
            self._logged.add((kind, key))
            log.log(level, "[%s] %s", kind, message, exc_info=exc)
        elif count in (10, 100, 1000) or count % 10_000 == 0:
            log.log(level, "[%s] %d times so far", kind, count)
