# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for bluegreen.haproxy.release_lock: the module's run, then the node's clock.

The module runs exactly as it would without this plugin; `module_started` (epoch) and
`module_seconds` say when that run started and how long it took, in the controller's time for
this host alone. When it took or kept the lock
(state=present, not async), the plugin then reads the node's clock with a tiny command over the
same connection and returns `clock`: the node's offset from the controller's clock and the error
bound of that measurement.

Why a separate command and not the lock's own time: a module run on a busy controller takes
seconds (building it, a Python process, importing its libraries), so bracketing its time with
the controller's clock gives an error of seconds. `date +%s.%N` is one process on the node; the
controller notes its own time right before and after that one command, for this host only, so
the error is half that bracket (milliseconds locally, about one round trip over SSH). Up to
three readings are taken and the one with the tightest bracket is kept, as NTP does.
"""

from __future__ import annotations

import re
import time

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

# The node's clock as seconds.nanoseconds (GNU date, as on the Debian nodes this collection
# supports). A date without %N prints no digits after the dot: the reading then counts as
# whole seconds and its resolution is added to the error.
CLOCK_COMMAND = "date +%s.%N"
READINGS = 3
# A bracket this tight (seconds, half-width) needs no second reading.
GOOD_ENOUGH = 0.005
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


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        wrap_async = self._task.async_val and not self._connection.has_native_async
        started = time.time()
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        # What one module run on this host cost the controller right now, at this forks setting:
        # the fleet's switch instant is chosen from it (release_switch_lead filter).
        result["module_started"] = round(started, 3)
        result["module_seconds"] = round(time.time() - started, 3)
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if not wrap_async and not result.get("failed") and self._task.args.get("state", "present") == "present":
            result["clock"] = self._read_clock()
        return result

    def _read_clock(self):
        readings, problem = [], None
        for _attempt in range(READINGS):
            before = time.time()
            try:
                output = self._low_level_execute_command(CLOCK_COMMAND, sudoable=False)
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
            if (after - before) / 2.0 + reading[1] / 2.0 <= GOOD_ENOUGH:
                break
        clock = clock_estimate(readings)
        if problem and not readings:
            clock["problem"] = problem
        return clock
