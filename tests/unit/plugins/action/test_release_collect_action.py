# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the release_collect action plugin: each look is one `cat` of the job's file over
the connection (no module run), decoded by this ansible-core's own module-result parsing (its
signature differs from 2.17 to 2.21: the version matrix runs these tests on each). The
connection is a stand-in; what is tested is the command asked of it and the result made of its
answers.
"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible.plugins.shell.sh import ShellModule  # noqa: E402

from ansible_collections.bluegreen.haproxy.plugins.action import release_collect as action  # noqa: E402

RUNNING = json.dumps({"started": 1, "finished": 0, "ansible_job_id": "j1.2"})
# What the async wrapper writes at the end: the module's own result.
SWITCHED = json.dumps({"changed": True, "switched": True, "stage": None, "late_by": 0.004,
                       "smoke": [{"key": "active", "passed": True}],
                       "invocation": {"module_args": {"step": "switch", "switch_at": 1796000000.5}}})


def plugin(monkeypatch, answers, args=None):
    task = mock.MagicMock(async_val=0, check_mode=False, args=dict(dict(jid="j1.2", interval=0.01, timeout=5), **(args or {})))
    connection = mock.MagicMock()
    connection._shell = ShellModule()
    connection._shell.tmpdir = None
    # Every argument by position: ansible-core 2.17 and 2.18 require shared_loader_obj too.
    plug = action.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock())
    plug.commands = []
    answers = list(answers)

    def execute(cmd, sudoable=True, **kwargs):
        plug.commands.append((cmd, sudoable))
        return answers.pop(0)

    monkeypatch.setattr(plug, "_low_level_execute_command", execute)
    monkeypatch.setattr(plug, "_remote_expand_user", lambda path, **kwargs: path.replace("~", "/home/deploy"))
    monkeypatch.setattr(plug, "get_shell_option", lambda option, default=None: default)
    monkeypatch.setattr(plug, "_execute_module", mock.Mock(side_effect=AssertionError("a look runs no module")))
    return plug


def answer(stdout, rc=0, stderr=""):
    return dict(rc=rc, stdout=stdout, stdout_lines=stdout.splitlines(), stderr=stderr, stderr_lines=stderr.splitlines())


def test_a_finished_job_is_read_with_one_cat_and_decoded_as_a_module_result(monkeypatch):
    plug = plugin(monkeypatch, [answer(SWITCHED + "\n")])
    result = plug.run(task_vars={})
    assert plug.commands == [("cat /home/deploy/.ansible_async/j1.2", True)]
    assert result["looks"] == 1 and result["finished"] is True and result["ansible_job_id"] == "j1.2"
    assert result["switched"] is True and result["late_by"] == 0.004 and result["smoke"] == [{"key": "active", "passed": True}]
    assert result["invocation"]["module_args"]["switch_at"] == 1796000000.5
    assert not result.get("failed")


def test_a_job_still_running_is_read_again_until_its_result(monkeypatch):
    plug = plugin(monkeypatch, [answer(RUNNING), answer(""), answer(SWITCHED)])
    result = plug.run(task_vars={})
    assert [command for command, _sudoable in plug.commands] == ["cat /home/deploy/.ansible_async/j1.2"] * 3
    assert result["looks"] == 3 and result["switched"] is True and result["finished"] is True


def test_a_job_that_failed_is_the_tasks_failure(monkeypatch):
    plug = plugin(monkeypatch, [answer(json.dumps({"failed": True, "msg": "SMOKE: 2 of 6 requests failed", "stage": "SMOKE",
                                                   "switched": True}))])
    result = plug.run(task_vars={})
    assert result["failed"] is True and result["msg"] == "SMOKE: 2 of 6 requests failed" and result["stage"] == "SMOKE"


def test_a_missing_job_file_fails_naming_the_file(monkeypatch):
    plug = plugin(monkeypatch, [answer("", rc=1, stderr="cat: /home/deploy/.ansible_async/j1.2: No such file or directory")])
    result = plug.run(task_vars={})
    assert result["failed"] is True and result["looks"] == 1
    assert result["msg"] == ("could not read async job j1.2's file /home/deploy/.ansible_async/j1.2: "
                             "cat: /home/deploy/.ansible_async/j1.2: No such file or directory")


def test_a_job_file_that_is_no_json_fails(monkeypatch):
    plug = plugin(monkeypatch, [answer("Traceback (most recent call last):\n  garbage")])
    result = plug.run(task_vars={})
    assert result["failed"] is True and result["finished"] is True


def test_a_job_path_with_a_space_is_quoted(monkeypatch):
    plug = plugin(monkeypatch, [answer(SWITCHED)])
    monkeypatch.setattr(plug, "get_shell_option", lambda option, default=None: "/var/lib/my async")
    plug.run(task_vars={})
    assert plug.commands == [("cat '/var/lib/my async/j1.2'", True)]
