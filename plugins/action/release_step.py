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

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.timed_action import TimedModuleAction


class ActionModule(TimedModuleAction):

    def wants_clock(self, result):
        return self._task.args.get("step") == "prepare" and bool(result.get("lock_acquired"))
