"""The rate-limit accuracy checker: admissions per fixed window, in real time."""

from __future__ import annotations

import pytest

from peer_ring.testing.ratelimit_checker import AccuracyChecker

W = 1_000_000_000  # a one-second window, in ns


def test_admissions_over_the_limit_in_one_window_fail_the_check() -> None:
    c = AccuracyChecker(limit=3, window_ns=W)
    for t in (10, 20, 30):
        c.record(t, True, sent_ns=t - 5)
    c.record(40, False, sent_ns=35)
    c.record(50, None, sent_ns=45)
    assert c.report().ok
    c.record(60, True, sent_ns=55)
    report = c.report()
    assert not report.ok
    assert report.worst_over == 1
    assert (report.admitted, report.refused, report.errors) == ({0: 4}, 1, 1)


def test_an_admission_answered_after_the_boundary_it_was_sent_before_counts_in_neither() -> None:
    # The limiter admitted the limit in window 0, the last ones answered just
    # after the boundary, then the limit again in window 1: no window was
    # over. Counting by arrival (the old checker) reported window 1 over.
    c = AccuracyChecker(limit=4, window_ns=W)
    for t in (100, 200):
        c.record(t, True, sent_ns=t - 10)
    for _ in range(2):  # decided in window 0, answered in window 1
        c.record(W + 50, True, sent_ns=W - 50)
    for t in (W + 100, W + 200, W + 300, W + 400):
        c.record(t, True, sent_ns=t - 10)
    report = c.report()
    assert report.ok, str(report)
    assert report.admitted == {0: 2, W: 4}
    assert report.straddling == 2
    assert "2 admitted across a window boundary" in str(report)
    by_arrival = AccuracyChecker(limit=4, window_ns=W)
    for t in (100, 200, W + 50, W + 50, W + 100, W + 200, W + 300, W + 400):
        by_arrival.record(t, True)
    assert not by_arrival.report().ok  # what the arrival time alone concludes


def test_an_excess_inside_one_window_is_found_whatever_straddles_it() -> None:
    c = AccuracyChecker(limit=2, window_ns=W, bound=1)
    c.record(W + 5, True, sent_ns=W - 5)  # straddling: not counted
    for t in (W + 10, W + 20, W + 30, W + 40):
        c.record(t, True, sent_ns=t - 1)
    report = c.report()
    assert not report.ok
    assert report.worst_over == 2


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        AccuracyChecker(limit=0, window_ns=W)
    with pytest.raises(ValueError, match="positive"):
        AccuracyChecker(limit=1, window_ns=W, bound=-1)
