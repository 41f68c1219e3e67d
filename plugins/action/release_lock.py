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

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.timed_action import TimedModuleAction


class ActionModule(TimedModuleAction):

    # An async lock run has always reported its launch's time.
    _time_async_launch = True

    def wants_clock(self, result):
        return not result.get("failed") and self._task.args.get("state", "present") == "present"
