# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stdout callback for the test suite: every task result as one JSON document.

ansible-core ships no JSON stdout callback (it lives in ansible.posix), and the
tests must not need any collection besides the one under test.
"""

from __future__ import annotations

import json

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: test_json
type: stdout
short_description: JSON report of every task, for bluegreen.haproxy's own tests
description: Prints one JSON document with plays, tasks and per-host results at the end of the run.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "test_json"

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.plays = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append(dict(play=dict(name=play.get_name()), tasks=[]))

    def v2_playbook_on_task_start(self, task, is_conditional):
        if not self.plays:
            self.plays.append(dict(play=dict(name=""), tasks=[]))
        # `step`: which step of the release engine's one module (release_step) the task runs.
        step = task.args.get("step") if isinstance(task.args.get("step"), str) else None
        self.plays[-1]["tasks"].append(dict(task=dict(name=task.get_name(), action=task.action, step=step), hosts={}))

    v2_playbook_on_handler_task_start = v2_playbook_on_task_start

    def _record(self, result, **flags):
        payload = dict(result._result)
        payload.update(flags)
        self.plays[-1]["tasks"][-1]["hosts"][result._host.get_name()] = payload

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_playbook_on_stats(self, stats):
        summary = {host: stats.summarize(host) for host in sorted(stats.processed)}
        self._display.display(json.dumps(dict(plays=self.plays, stats=summary), default=str))
