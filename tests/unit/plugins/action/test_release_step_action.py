# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the release_step action plugin: a module run as ansible-core's `normal` action
runs one (async included), timed on the controller's clock, and the node's clock after a prepare
step that took the lock. The connection and the module run are stand-ins: what is tested is what
the plugin asks of them and what it adds to the result.
"""

from __future__ import annotations

import os
import sys
from unittest import mock

import pytest

_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.action import release_step as action  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.plugin_utils import timed_action  # noqa: E402

CLOCK = dict(offset=0.001, error=0.002, readings=1)


def plugin(monkeypatch, step, module_result, async_val=0, native_async=False):
    task = mock.MagicMock(async_val=async_val, check_mode=False, args=dict(step=step))
    connection = mock.MagicMock(has_native_async=native_async)
    connection._shell.tmpdir = "/tmp/ansible-tmp-1"
    # Every argument by position: ansible-core 2.17 and 2.18 require shared_loader_obj too.
    plug = action.ActionModule(task, connection, mock.MagicMock(), mock.MagicMock(), mock.MagicMock(), mock.MagicMock())
    plug.calls = []
    monkeypatch.setattr(plug, "_execute_module",
                        lambda **kwargs: plug.calls.append(("execute", kwargs["wrap_async"])) or dict(module_result))
    monkeypatch.setattr(plug, "_remove_tmp_path", lambda path: plug.calls.append(("remove", path)))
    monkeypatch.setattr(timed_action, "read_clock", lambda execute: plug.calls.append(("clock", None)) or dict(CLOCK))
    return plug


def test_prepare_is_timed_then_the_clock_is_read_when_the_lock_was_acquired(monkeypatch):
    plug = plugin(monkeypatch, "prepare", dict(lock_acquired=True, changed=True))
    result = plug.run(task_vars={})
    assert plug.calls == [("execute", False), ("remove", "/tmp/ansible-tmp-1"), ("clock", None)]
    assert result["clock"] == CLOCK and result["module_seconds"] >= 0 and result["module_started"] > 0


@pytest.mark.parametrize("step, module_result", [
    ("prepare", dict(lock_acquired=False, failed=True, stage="LOCK")),
    ("finish", dict(lock_acquired=True, unlocked=True)),  # only prepare's lock_acquired means a clock is wanted
])
def test_no_clock_without_a_lock_acquired_by_prepare(monkeypatch, step, module_result):
    plug = plugin(monkeypatch, step, module_result)
    result = plug.run(task_vars={})
    assert ("clock", None) not in plug.calls and "clock" not in result
    assert "module_seconds" in result


def test_an_async_launch_keeps_its_tmp_path_and_is_not_timed(monkeypatch):
    """The role arms a fleet's switch step as an async task: the module runs on from the tmp path."""
    plug = plugin(monkeypatch, "switch", dict(ansible_job_id="j1", started=1, finished=0), async_val=60)
    result = plug.run(task_vars={})
    assert plug.calls == [("execute", True)]
    assert result["ansible_job_id"] == "j1" and "module_started" not in result and "module_seconds" not in result


def test_a_connection_with_native_async_runs_the_module_itself(monkeypatch):
    plug = plugin(monkeypatch, "switch", dict(switched=True), async_val=60, native_async=True)
    plug.run(task_vars={})
    assert plug.calls == [("execute", False), ("remove", "/tmp/ansible-tmp-1")]
