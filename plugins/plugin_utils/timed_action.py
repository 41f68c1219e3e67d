# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action plugins that time their module's run and then read the node's clock (release_lock, release_step).

The module runs as it would under ansible-core's action/normal.py (the async wrapper unless the
connection has its own); `module_started` (epoch) and `module_seconds` say when that run started
and how long it took, on the controller's clock for this host alone - the fleet's switch lead is
estimated from them. When `wants_clock(result)` says so, the node's clock is then read with one
tiny command over the same connection (plugins/plugin_utils/clock.py).
"""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.clock import read_clock


class TimedModuleAction(ActionBase):

    _supports_check_mode = True
    _supports_async = True
    # Whether an async launch gets module_started/module_seconds too (the launch's, not the run's).
    _time_async_launch = False

    def wants_clock(self, result):
        """Whether to read the node's clock after a synchronous run that returned `result`."""
        return False

    def run(self, tmp=None, task_vars=None):
        result = super(TimedModuleAction, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        wrap_async = self._task.async_val and not self._connection.has_native_async
        started = time.time()
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if wrap_async and not self._time_async_launch:
            # The launch only: the module runs on in the background, from the tmp path it still needs.
            return result
        result["module_started"] = round(started, 3)
        result["module_seconds"] = round(time.time() - started, 3)
        if wrap_async:
            return result
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if self.wants_clock(result):
            result["clock"] = read_clock(self._low_level_execute_command)
        return result
