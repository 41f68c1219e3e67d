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

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.clock import (  # noqa: E402
    clock_estimate,
    parse_reading,
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
