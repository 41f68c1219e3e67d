# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for bluegreen.haproxy.release_step: the module's run, then (step prepare) the node's clock.

The module runs as it would without this plugin, async included (the role arms a fleet's switch
step as an async task), exactly as ansible-core's own `normal` action runs a module. For a run
that is not an async launch, `module_started` (epoch) and `module_seconds` say when that run
started and how long it took on the controller's clock for this host: the fleet's switch lead is
estimated from PREPARE's. When the prepare step took the release lock (or, in check mode, could),
the node's clock is then read with one tiny command over the same connection
(plugins/plugin_utils/clock.py): the fleet switches at one instant of each node's own clock, so
a node whose clock disagrees is refused before anything moves.
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
        # As ansible-core's action/normal.py: the async wrapper unless the connection has its own.
        wrap_async = self._task.async_val and not self._connection.has_native_async
        started = time.time()
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if wrap_async:
            # The launch only: the module runs on in the background, from the tmp path it still needs.
            return result
        result["module_started"] = round(started, 3)
        result["module_seconds"] = round(time.time() - started, 3)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        if self._task.args.get("step") == "prepare" and result.get("lock_acquired"):
            result["clock"] = read_clock(self._low_level_execute_command)
        return result
