# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for release_finish: persist and unlock, or roll back and unlock, in one module run.

The map is a fake HAProxy (fake_map_haproxy) with a real map file and lock file in a temporary
directory; the old version's smoke test after a rollback is http_smoke's, recorded here.
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

from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import release_finish  # noqa: E402

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

MAP = "/etc/haproxy/maps/bluegreen.map"
SERVICE = dict(key="active", smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:80")
GREEN, BLUE = {"active": "backend_green"}, {"active": "backend_blue"}


@pytest.fixture
def node(tmp_path, monkeypatch):
    """A node after its switch to green: runtime green, disk blue, this run's lock held."""
    fake = FakeHAProxy({MAP: [("active", "backend_green")]})
    monkeypatch.setattr(release_finish, "RuntimeAPIClient", fake.client)
    map_file = tmp_path / "bluegreen.map"
    map_file.write_text("# the switch\nactive backend_blue\n")
    lock = tmp_path / "bluegreen.map.lock"
    lock.write_text(json.dumps(dict(owner="run-1", phase="switching", acquired_epoch=1.0)))
    smoked = []

    def run_smoke(url, **options):
        smoked.append(dict(regex=options["body_regex"].pattern, live=fake.values(MAP)))
        return dict(passed=True, passed_count=1, failed_count=0, requests=1, summary={}, msg="1 request passed")

    monkeypatch.setattr(smoke, "run_smoke", run_smoke)
    return dict(haproxy=fake, map_file=map_file, lock=lock, smoked=smoked)


def run(node, outcome, **args):
    params = dict(dict(map=MAP, map_file=str(node["map_file"]), outcome=outcome, targets=GREEN, previous=BLUE,
                       switched=True, services=[SERVICE], socket="/nonexistent/admin.sock",
                       lock=dict(path=str(node["lock"]), owner="run-1")), **args)
    return run_main(release_finish.main, params)


def test_persist_writes_the_live_value_and_releases_the_lock(node):
    outcome = run(node, "persist")
    assert not outcome.failed, outcome.result["msg"]
    assert node["map_file"].read_text() == "# the switch\nactive backend_green\n"
    assert node["haproxy"].writes == [] and node["haproxy"].values(MAP) == GREEN
    assert outcome.result["unlocked"] is True and not node["lock"].exists()
    assert outcome.result["persist"]["disk_value"] == "backend_green" and outcome.result["persist"]["persisted"] is True
    assert outcome.result["changed"] is True and outcome.result["rolled_back"] is False


def test_manual_persistence_only_releases_the_lock(node):
    outcome = run(node, "persist", persist=False)
    assert not outcome.failed and outcome.result["persist"] is None
    assert "active backend_blue" in node["map_file"].read_text() and not node["lock"].exists()


def test_persist_never_moves_traffic_when_the_live_value_moved(node):
    node["haproxy"].maps[MAP].entries = [("active", "backend_canary")]
    outcome = run(node, "persist")
    assert outcome.failed and outcome.result["stage"] == "PERSIST"
    assert node["haproxy"].values(MAP) == {"active": "backend_canary"} and node["haproxy"].writes == []
    assert "active backend_blue" in node["map_file"].read_text()
    # The lock is released whatever happened: the report says what is live.
    assert outcome.result["unlocked"] is True and not node["lock"].exists()


def test_rollback_puts_the_old_value_back_at_runtime_and_on_disk_then_smokes_it(node):
    node["map_file"].write_text("# the switch\nactive backend_green\n")
    outcome = run(node, "rollback")
    assert not outcome.failed, outcome.result["msg"]
    assert node["haproxy"].values(MAP) == BLUE and node["map_file"].read_text() == "# the switch\nactive backend_blue\n"
    assert outcome.result["rolled_back"] is True and outcome.result["rollback"]["runtime_entries"] == BLUE
    assert node["smoked"] == [dict(regex="version=blue", live=BLUE)]
    assert outcome.result["rollback_smoke"][0]["key"] == "active" and not node["lock"].exists()


def test_a_node_that_did_not_switch_has_nothing_to_roll_back(node):
    node["haproxy"].maps[MAP].entries = [("active", "backend_blue")]
    outcome = run(node, "rollback", switched=False)
    assert not outcome.failed and outcome.result["rolled_back"] is False and outcome.result["rollback"] is None
    assert node["haproxy"].writes == [] and node["smoked"] == [] and not node["lock"].exists()


def test_a_rollback_whose_read_back_disagrees_fails_naming_it(node):
    node["haproxy"].lie_after_write = {"active": "backend_green"}
    outcome = run(node, "rollback")
    assert outcome.failed and outcome.result["stage"] == "ROLLBACK"
    assert "backend_green" in outcome.result["msg"] and outcome.result["rolled_back"] is False
    assert node["smoked"] == []


def test_another_runs_lock_is_never_released(node):
    node["lock"].write_text(json.dumps(dict(owner="someone-else", acquired_epoch=1.0)))
    outcome = run(node, "release", switched=False)
    assert outcome.failed and outcome.result["stage"] == "UNLOCK" and "someone-else" in outcome.result["msg"]
    assert node["lock"].exists()
