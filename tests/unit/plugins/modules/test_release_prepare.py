# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for release_prepare and module_utils/release_steps.py: READ, LOCK, PRECHECK in one run.

The maps are a fake HAProxy at the level of the bytes sent (fake_map_haproxy); the precheck
itself (health, preflight, current path) is release_precheck's, tested in
test_release_precheck.py: here it is a recorder, so each test shows what PREPARE asks of it
and in which order against the lock.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import release_steps  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import release_prepare  # noqa: E402

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

MAP = "/etc/haproxy/maps/bluegreen.map"
SERVICE = dict(key="active", target="backend_green", backends=["backend_blue", "backend_green"],
               smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:80")
RUN = dict(owner="run-1", action="cutover", controller="ctl", controller_pid=42, started_at="2026-12-07T07:00:00Z")


@pytest.fixture
def haproxy(monkeypatch):
    fake = FakeHAProxy({MAP: [("active", "backend_blue")]})
    monkeypatch.setattr(release_prepare, "RuntimeAPIClient", fake.client)
    return fake


class Precheck(object):
    """run_precheck stand-in: records the services it was asked to prove and whether the lock was held then."""

    def __init__(self, lock_path, failed=False):
        self.lock_path, self.failed, self.calls = lock_path, failed, []

    def __call__(self, client, services, **options):
        self.calls.append(dict(services=services, lock_held=os.path.exists(self.lock_path), options=options))
        return dict(services=[dict(key=s["key"], backend=s["backend"], health=dict(healthy=not self.failed))
                              for s in services],
                    failed=self.failed, failed_stage="health" if self.failed else None,
                    msg="backend 'backend_green' is not healthy" if self.failed else "precheck passed")


@pytest.fixture
def node(tmp_path, monkeypatch):
    map_file = tmp_path / "bluegreen.map"
    map_file.write_text("active backend_blue\n")
    lock_path = str(tmp_path / "bluegreen.map.lock")
    precheck = Precheck(lock_path)
    monkeypatch.setattr(release_steps, "run_precheck", precheck)
    return dict(map_file=str(map_file), lock=lock_path, precheck=precheck)


def run(node, check=False, services=None, run_record=None, lock=True, **args):
    params = dict(dict(map=MAP, map_file=node["map_file"], services=services or [SERVICE], run=run_record or RUN,
                       socket="/nonexistent/admin.sock"), **args)
    if lock:
        params["lock"] = dict(path=node["lock"])
    return run_main(release_prepare.main, params, check=check)


def test_reads_locks_then_proves_in_one_run(haproxy, node):
    outcome = run(node, health_wait=30)
    result = outcome.result
    assert not outcome.failed, result["msg"]
    assert haproxy.writes == []  # PREPARE only reads the map
    assert result["entries"] == {"active": "backend_blue"} and result["disk_entries"] == {"active": "backend_blue"}
    assert result["plan"]["targets"] == {"active": "backend_green"} and result["plan"]["lives"] == {"active": "backend_blue"}
    assert result["lock_taken"] is True and result["changed"] is True and result["stage"] is None
    with open(node["lock"]) as handle:
        record = json.load(handle)
    assert (record["owner"], record["phase"], record["previous"], record["target"]) == \
        ("run-1", "precheck", "backend_blue", "backend_green")
    assert record["controller_pid"] == 42
    # The precheck ran once, after the lock was taken, on the target with the current path's answer.
    (call,) = node["precheck"].calls
    assert call["lock_held"] is True and call["options"]["health_wait"] == 30
    (checked,) = call["services"]
    assert checked["backend"] == "backend_green" and checked["preflight"] and checked["current"]
    assert checked["current_body_regex"].pattern == "version=blue"


def test_check_mode_proves_the_lock_could_be_taken_and_writes_nothing(haproxy, node):
    outcome = run(node, check=True)
    assert not outcome.failed, outcome.result["msg"]
    assert outcome.result["lock_acquired"] is True and outcome.result["lock_taken"] is False
    assert outcome.result["changed"] is False and not os.path.exists(node["lock"])
    assert len(node["precheck"].calls) == 1


def test_a_lock_held_by_another_run_refuses_before_the_precheck(haproxy, node):
    with open(node["lock"], "w") as handle:
        json.dump(dict(owner="someone-else", acquired="2026-12-07T06:00:00Z", acquired_epoch=1.0), handle)
    outcome = run(node)
    assert outcome.failed and outcome.result["stage"] == "LOCK"
    assert "held by someone-else" in outcome.result["msg"] and outcome.result["holder"]["owner"] == "someone-else"
    assert outcome.result["lock_taken"] is False and node["precheck"].calls == []


def test_drift_refuses_before_the_lock_and_changes_nothing(haproxy, node):
    with open(node["map_file"], "w") as handle:
        handle.write("active backend_green\n")
    outcome = run(node)
    assert outcome.failed and outcome.result["stage"] == "PRECHECK"
    assert outcome.result["msg"].startswith("drift: active is backend_blue at runtime but backend_green on disk")
    assert not os.path.exists(node["lock"]) and node["precheck"].calls == []
    # What was read is in the result: the report shows it.
    assert outcome.result["entries"] == {"active": "backend_blue"}


def test_a_node_already_on_the_target_is_neither_locked_nor_checked(haproxy, node):
    outcome = run(node, services=[dict(SERVICE, target="backend_blue")])
    assert not outcome.failed and outcome.result["already_live"] is True
    assert not os.path.exists(node["lock"]) and node["precheck"].calls == []
    assert outcome.result["changed"] is False


def test_a_failed_precheck_keeps_the_lock_for_the_run_to_release(haproxy, node):
    node["precheck"].failed = True
    outcome = run(node)
    assert outcome.failed and outcome.result["stage"] == "PRECHECK"
    assert outcome.result["msg"] == "backend 'backend_green' is not healthy"
    assert outcome.result["lock_taken"] is True and os.path.exists(node["lock"])


def test_an_unloaded_map_fails_the_read(haproxy, node):
    outcome = run(node, map="/etc/haproxy/maps/other.map")
    assert outcome.failed and outcome.result["stage"] == "READ" and "other.map" in outcome.result["msg"]
    assert not os.path.exists(node["lock"])


def test_a_rollback_after_a_dead_run_returns_to_the_previous_value_its_lock_records(haproxy, node):
    with open(node["lock"], "w") as handle:
        json.dump(dict(owner="dead-run", previous="backend_green", target="backend_blue", key="active",
                       acquired="2026-12-07T06:00:00Z", acquired_epoch=1.0), handle)
    with open(node["map_file"], "w") as handle:
        handle.write("active backend_green\n")
    rollback = dict(RUN, action="rollback")
    outcome = run(node, services=[dict(SERVICE, target="")], run_record=rollback, lock=False)
    # Without force the dead run's record is not used: a rollback goes to the other backend.
    assert outcome.result["plan"]["targets"] == {"active": "backend_green"} and outcome.result["plan"]["recovery"] == {}
    params = dict(map=MAP, map_file=node["map_file"], services=[dict(SERVICE, target="")], run=rollback,
                  socket="/nonexistent/admin.sock", lock=dict(path=node["lock"], force=True))
    outcome = run_main(release_prepare.main, params)
    assert not outcome.failed, outcome.result["msg"]
    assert outcome.result["plan"]["targets"] == {"active": "backend_green"}
    assert outcome.result["plan"]["recovery"]["owner"] == "dead-run" and outcome.result["taken_over"] is True


def test_bad_options_fail_before_anything_is_asked(haproxy, node):
    outcome = run(node, requests=0)
    assert outcome.failed and outcome.result["stage"] == "INIT" and "requests must be at least 1" in outcome.result["msg"]
    assert haproxy.log == [] and haproxy.writes == []
    assert not os.path.exists(node["lock"])
