# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the clock measurement of the lock-taking action plugins (plugins/plugin_utils/clock.py)."""

from __future__ import annotations

import os
import sys

import pytest

_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils import clock  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.clock import (  # noqa: E402
    clock_estimate,
    parse_reading,
    read_clock,
)


@pytest.mark.parametrize("stdout, expected", [
    ("1795788062.123456789\n", (1795788062.123456789, 0.0)),
    ("1795788062\n", (1795788062.0, 1.0)),
    # A date without %N (busybox, BSD) prints the format back: whole seconds only.
    ("1795788062.%N\n", (1795788062.0, 1.0)),
    ("1795788062.N\n", (1795788062.0, 1.0)),
    ("date: invalid option\n", None),
    ("", None),
])
def test_parse_reading(stdout, expected):
    assert parse_reading(stdout) == expected


def test_the_offset_is_measured_from_the_middle_of_the_bracket_and_bounded_by_half_of_it():
    # The node read 101.0 while the controller went from 99.99 to 100.01: 1 s ahead, +-10 ms.
    assert clock_estimate([(99.99, 101.0, 100.01, 0.0)]) == dict(offset=1.0, error=0.01, readings=1)


def test_the_tightest_reading_wins():
    readings = [(100.0, 100.9, 100.6, 0.0), (200.0, 200.502, 200.004, 0.0), (300.0, 300.2, 300.1, 0.0)]
    assert clock_estimate(readings) == dict(offset=0.5, error=0.002, readings=3)


def test_whole_seconds_add_their_resolution_to_the_error():
    # A whole-second reading 100 means the node's clock said something in [100, 101).
    estimate = clock_estimate([(100.25, 100.0, 100.25, 1.0)])
    assert estimate == dict(offset=0.25, error=0.5, readings=1)


def test_no_reading_is_no_estimate():
    assert clock_estimate([]) == dict(offset=None, error=None, readings=0)


def test_a_one_second_skew_is_not_hidden_by_a_slow_module():
    """The finding: a bracket as long as a module run (3 s) reported a 3 s skew as 1.4 s and passed 1 s.

    A bracket of one `date` command keeps the error small, so a 1 s skew is seen as about 1 s.
    """
    estimate = clock_estimate([(1000.0, 1001.004, 1000.008, 0.0)])
    assert estimate["offset"] == pytest.approx(1.0, abs=0.001) and estimate["error"] == 0.004


class _Node:
    """A node `offset` seconds ahead whose `date` takes the next of `durations` seconds of controller
    time to answer (it reads its clock halfway through); the controller's time is simulated."""

    def __init__(self, monkeypatch, durations, offset=0.2, stdout="%.6f\n"):
        self.now, self.durations, self.offset, self.stdout, self.calls = 1000.0, list(durations), offset, stdout, 0
        monkeypatch.setattr(clock, "time", self)

    def time(self):
        return self.now

    def execute(self, command, sudoable=True):
        assert command == "date +%s.%N" and sudoable is False
        duration = self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1
        self.now += duration / 2
        reading = self.now + self.offset
        self.now += duration / 2
        return dict(rc=0, stdout=self.stdout % reading if "%" in self.stdout else self.stdout, stderr="")


def test_one_quick_reading_is_enough(monkeypatch):
    node = _Node(monkeypatch, [0.004])
    estimate = read_clock(node.execute)
    assert node.calls == 1 and estimate == dict(offset=0.2, error=0.002, readings=1)


def test_three_readings_over_a_usual_connection(monkeypatch):
    # An SSH round trip of 30 ms: three readings, the tightest kept, no more.
    node = _Node(monkeypatch, [0.04, 0.03, 0.05, 0.001])
    estimate = read_clock(node.execute)
    assert node.calls == 3 and estimate["error"] == 0.015 and estimate["offset"] == pytest.approx(0.2, abs=1e-6)


def test_a_busy_controller_keeps_reading_until_one_answer_is_quick(monkeypatch):
    """The finding: on a loaded CI machine each reading took 0.6-0.8 s and a node on the controller's own
    clock was refused at 0.5 s tolerance. Readings go on (within the budget) while every bracket is wide."""
    node = _Node(monkeypatch, [0.8, 0.6, 0.7, 0.4, 0.02, 0.001])
    estimate = read_clock(node.execute)
    assert node.calls == 5 and estimate["error"] == 0.01 and estimate["readings"] == 5


def test_the_extra_readings_stop_at_the_time_budget(monkeypatch):
    node = _Node(monkeypatch, [0.9])
    estimate = read_clock(node.execute)
    # 0.9 s each: the fourth reading ends past MORE_SECONDS (3 s) of measuring.
    assert node.calls == 4 and estimate["error"] == 0.45
    assert node.now - 1000.0 == pytest.approx(3.6) and clock.MORE_SECONDS == 3.0


def test_the_extra_readings_stop_at_their_count(monkeypatch):
    node = _Node(monkeypatch, [0.15])
    read_clock(node.execute)
    assert node.calls == clock.MORE_READINGS


def test_a_whole_second_clock_is_not_read_again_for_precision_it_cannot_have(monkeypatch):
    node = _Node(monkeypatch, [0.002], stdout="1000\n")
    estimate = read_clock(node.execute)
    assert node.calls == 3 and estimate["error"] == pytest.approx(0.501)


def test_a_clock_that_cannot_be_read_stops_at_once_with_the_reason(monkeypatch):
    node = _Node(monkeypatch, [0.01], stdout="date: invalid option\n")
    estimate = read_clock(node.execute)
    assert node.calls == 1 and estimate["offset"] is None and "date: invalid option" in estimate["problem"]
