# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A node's clock against the controller's, for the action plugins that take the release lock.

Why a separate command and not a module's own time: a module run on a busy controller takes
seconds (building it, a Python process, importing its libraries), so bracketing its time with
the controller's clock gives an error of seconds. `date +%s.%N` is one process on the node; the
controller notes its own time right before and after that one command, for this host only, so
the error is half that bracket (milliseconds locally, about one round trip over SSH). Up to
three readings are taken and the one with the tightest bracket is kept, as NTP does.

On a busy controller one command can take a second, and its bracket alone would exceed the
tolerance of a node whose clock is right. While the best bracket is still that wide, more readings
are taken, within a few seconds: one quick answer is enough. A node that still cannot be measured
precisely is refused with that reason (release_engine.clock_offset), not blamed on its NTP.
"""

from __future__ import annotations

import re
import time

# The node's clock as seconds.nanoseconds (GNU date, as on the Debian nodes this collection
# supports). A date without %N prints no digits after the dot: the reading then counts as
# whole seconds and its resolution is added to the error.
CLOCK_COMMAND = "date +%s.%N"
READINGS = 3
# A bracket this tight (seconds, half-width) needs no second reading.
GOOD_ENOUGH = 0.005
# While every bracket is wider than PRECISE (half-width), keep reading, up to MORE_READINGS in all
# and for at most MORE_SECONDS of measuring: a loaded controller answers quickly now and then.
PRECISE = 0.05
MORE_READINGS = 12
MORE_SECONDS = 3.0
_READING = re.compile(r"^\s*(\d+)(?:\.(\S*))?\s*$")


def parse_reading(stdout):
    """(node epoch, resolution in seconds) from the command's output, or None when it is not a time."""
    match = _READING.match(stdout or "")
    if not match:
        return None
    seconds, fraction = match.group(1), match.group(2) or ""
    if fraction.isdigit():
        return float("%s.%s" % (seconds, fraction)), 0.0
    return float(seconds), 1.0


def clock_estimate(readings):
    """The node's clock offset from the controller's, bounded by the measurement's own error.

    `readings` are (controller time before, node reading, controller time after, resolution)
    for one command each. The node read its clock at some controller time inside
    [before, after], so its offset lies within (after - before) / 2 of node - midpoint; a
    reading in whole seconds (resolution 1) lies up to one second below the true time. The
    tightest reading wins. Returns {offset, error, readings} (seconds, rounded to 0.1 ms).
    """
    best = None
    for before, node, after, resolution in readings:
        middle = (float(before) + float(after)) / 2.0
        offset = float(node) + float(resolution) / 2.0 - middle
        error = (float(after) - float(before)) / 2.0 + float(resolution) / 2.0
        if best is None or error < best[1]:
            best = (offset, error)
    if best is None:
        return dict(offset=None, error=None, readings=0)
    return dict(offset=round(best[0], 4), error=round(best[1], 4), readings=len(readings))


def _enough(readings, started):
    """Whether the readings so far measure the clock well enough (or as well as the budget allows)."""
    if not readings:
        return False
    errors = [(after - before) / 2.0 + resolution / 2.0 for before, _node, after, resolution in readings]
    if min(errors) <= GOOD_ENOUGH or len(readings) >= MORE_READINGS:
        return True
    if len(readings) < READINGS:
        return False
    # A whole-second clock (resolution 1) stays imprecise however fast it answers: only a wide
    # bracket is worth more readings.
    bracket = min((after - before) / 2.0 for before, _node, after, _resolution in readings)
    return bracket <= PRECISE or time.time() - started >= MORE_SECONDS


def read_clock(execute):
    """The node's clock against the controller's, through `execute` (ActionBase._low_level_execute_command)."""
    readings, problem = [], None
    started = time.time()
    while not _enough(readings, started):
        before = time.time()
        try:
            output = execute(CLOCK_COMMAND, sudoable=False)
        except Exception as exc:  # pylint: disable=broad-except
            problem = "%s failed: %s" % (CLOCK_COMMAND, exc)
            break
        after = time.time()
        reading = parse_reading(output.get("stdout")) if output.get("rc") == 0 else None
        if reading is None:
            problem = "%s answered rc=%s %r" % (CLOCK_COMMAND, output.get("rc"),
                                                (output.get("stdout", "") + output.get("stderr", ""))[:80])
            break
        readings.append((before, reading[0], after, reading[1]))
    clock = clock_estimate(readings)
    if problem and not readings:
        clock["problem"] = problem
    return clock
