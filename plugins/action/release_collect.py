# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin for bluegreen.haproxy.release_collect: an async job's result with one look at it.

`ansible.builtin.async_status` with `until` looks at the job at once, when a fleet's switch step
armed for an instant cannot have finished yet: a module run on every node for nothing, and with
more nodes than forks a whole batch of them. This plugin waits on the controller (the workers of a
batch wait side by side, a later batch finds the time already past) until the job should be done,
then reads its file with one command (no module run on the node) and judges it as async_status
does; only a job still running is looked at again (plugins/plugin_utils/collect.py).
"""

from __future__ import annotations

import inspect

from ansible.plugins.action import ActionBase

try:
    from ansible.vars.clean import remove_internal_keys
except ImportError:  # ansible-core 2.21 and later: the task result object removes them itself
    remove_internal_keys = None

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.collect import collect, job_result


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
        shell = self._connection._shell
        path = shell.join_path(async_dir, args["jid"])

        def look():
            res = self._low_level_execute_command("cat %s" % shell.quote(path), sudoable=True)
            return job_result(res, args["jid"], path, self._module_result)

        job, looks = collect(look, args["not_before"], args["interval"], args["timeout"])
        self._remove_tmp_path(self._connection._shell.tmpdir)
        result.update(job)
        result["looks"] = looks
        return result

    def _module_result(self, res):
        """The job's JSON as the controller decodes a module's result, internal keys removed.

        The decoding is ActionBase's own (`_parse_returned_data`), whose signature changed: from
        ansible-core 2.19 it takes the module's serialization profile (`legacy`, what every
        Python module's result is written with), and from 2.21 it returns a task result object.
        """
        if "profile" in inspect.signature(self._parse_returned_data).parameters:
            parsed = self._parse_returned_data(res, "legacy")
        else:
            parsed = self._parse_returned_data(res)
        if hasattr(parsed, "as_result_dict"):
            parsed.remove_internal_keys()
            return parsed.as_result_dict(for_round_trip=True)
        remove_internal_keys(parsed)
        return parsed
