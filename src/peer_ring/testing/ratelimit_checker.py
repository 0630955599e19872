"""Accuracy checker for a rate limiter: did the cluster admit more than it may?

Clients record every answer they got for one key (:meth:`AccuracyChecker.record`);
the checker counts the admitted hits per window (fixed windows aligned to the
epoch, as the limiter's ``FIXED_WINDOW`` counts) and compares each window's
count with ``limit + bound``, where ``bound`` is the over-admission the mode
documents for the fault injected (0 without a fault).

Real time, not the limiter's word: a decision happened after its request
was sent and before its answer arrived. An admission whose request was sent
in one window and answered in the next was decided in one of the two, and
the client cannot know which (the limiter's ``reset_at`` would say, but the
checker does not trust the system it checks). Such an admission is counted
in neither window and reported apart (``straddling``): every excess the
checker reports is real, and the count of straddling admissions says how
much an excess could hide behind them. Recording the answer's arrival only
(no ``sent_ns``) attributes each admission to that instant, as before. Used by
``tests/fault/test_ratelimit_accuracy.py`` and ``bench/ratelimit.py``.

Pure: no I/O, no clocks; times are whatever the clients' clocks read (use
the same wall clock the nodes use: windows are aligned to it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

__all__ = ["AccuracyChecker", "AccuracyReport"]


@dataclass(frozen=True, slots=True)
class AccuracyReport:
    """The outcome of a check: ``ok`` iff no window admitted over ``limit + bound``."""

    ok: bool
    limit: int
    bound: int
    admitted: dict[int, int]  #: window start (ns) -> admitted hits
    refused: int
    errors: int
    worst_over: int  #: the largest ``admitted - limit`` over all windows (<= 0: none over)
    straddling: int = 0  #: admissions sent in one window, answered in a later one

    def __str__(self) -> str:
        windows = ", ".join(f"{n}" for n in self.admitted.values()) or "none"
        verdict = "OK" if self.ok else "OVER THE BOUND"
        return (
            f"{verdict}: admitted per window [{windows}] against limit {self.limit} + bound"
            f" {self.bound} (worst over: {self.worst_over}); {self.refused} refused,"
            f" {self.errors} errors, {self.straddling} admitted across a window boundary"
        )


@dataclass(slots=True)
class AccuracyChecker:
    """Collects answers for one key with ``limit`` hits per ``window_ns``."""

    limit: int
    window_ns: int
    bound: int = 0
    _admitted: Counter[int] = field(default_factory=Counter)
    _refused: int = 0
    _errors: int = 0
    _straddling: int = 0

    def __post_init__(self) -> None:
        if self.limit < 1 or self.window_ns < 1 or self.bound < 0:
            raise ValueError("limit and window must be positive, bound >= 0")

    def record(
        self, t_ns: int, allowed: bool | None, hits: int = 1, sent_ns: int | None = None
    ) -> None:
        """One answer that arrived at ``t_ns`` (for a request sent at
        ``sent_ns``): True admitted, False refused, None an error."""
        if allowed is None:
            self._errors += 1
        elif allowed:
            window = t_ns - t_ns % self.window_ns
            if sent_ns is not None and sent_ns < window:
                self._straddling += hits  # decided in an earlier window or this one
            else:
                self._admitted[window] += hits
        else:
            self._refused += 1

    @property
    def admitted_total(self) -> int:
        return sum(self._admitted.values())

    def report(self) -> AccuracyReport:
        admitted = dict(sorted(self._admitted.items()))
        worst = max((n - self.limit for n in admitted.values()), default=-self.limit)
        return AccuracyReport(
            ok=worst <= self.bound,
            limit=self.limit,
            bound=self.bound,
            admitted=admitted,
            refused=self._refused,
            errors=self._errors,
            worst_over=worst,
            straddling=self._straddling,
        )
