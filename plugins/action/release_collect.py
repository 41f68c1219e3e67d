# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for bluegreen.haproxy.release_collect: an async job's result with one look at it.

`ansible.builtin.async_status` with `until` looks at the job at once, when a fleet's switch step
armed for an instant cannot have finished yet: a module run on every node for nothing, and with
more nodes than forks a whole batch of them. This plugin waits on the controller (the workers of a
batch wait side by side, a later batch finds the time already past) until the job should be done,
then looks at it through the same async_status module; only a job still running is looked at
again (plugins/plugin_utils/collect.py).
"""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.collect import collect


class ActionModule(ActionBase):

    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        validation, args = self.validate_argument_spec(argument_spec=dict(
            jid=dict(type="str", required=True),
            not_before=dict(type="float"),
            interval=dict(type="float", default=0.5),
            timeout=dict(type="float", default=60.0),
        ))
        if args["interval"] <= 0 or args["timeout"] < 0:
            return dict(result, failed=True, msg="release_collect: interval must be above 0 and timeout at least 0, got "
                                                 "interval=%s timeout=%s" % (args["interval"], args["timeout"]))
        async_dir = self._remote_expand_user(self.get_shell_option("async_dir", default="~/.ansible_async"))

        def look():
            return self._execute_module(module_name="ansible.legacy.async_status", task_vars=task_vars,
                                        module_args=dict(jid=args["jid"], mode="status", _async_dir=async_dir))

        job, looks = collect(look, args["not_before"], args["interval"], args["timeout"])
        self._remove_tmp_path(self._connection._shell.tmpdir)
        result.update(job)
        result["looks"] = looks
        return result
