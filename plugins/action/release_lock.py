# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for bluegreen.haproxy.release_lock: the module's run, then the node's clock.

The module runs exactly as it would without this plugin; `module_started` (epoch) and
`module_seconds` say when that run started and how long it took, in the controller's time for
this host alone. When it took or kept the lock
(state=present, not async), the plugin then reads the node's clock with a tiny command over the
same connection and returns `clock`: the node's offset from the controller's clock and the error
bound of that measurement.

How the clock is read, and why that way: plugins/plugin_utils/clock.py.
"""

from __future__ import annotations

import time

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.clock import read_clock


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
        # the fleet's switch instant is chosen from it (the engine's switch_lead step).
        result["module_started"] = round(started, 3)
        result["module_seconds"] = round(time.time() - started, 3)
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        if not wrap_async and not result.get("failed") and self._task.args.get("state", "present") == "present":
            result["clock"] = read_clock(self._low_level_execute_command)
        return result
