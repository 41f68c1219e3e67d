# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Canary releases (issue 15, "Canary steps: release_strategy: canary") under live traffic.

1,000 distinct users (each one's stable bucket hashed from its X-User-Id header, as the README's
"Canary routing" lines do) send requests through the nodes' listeners while the real cutover
playbook runs with release_strategy=canary against real HAProxy 2.6 on loopback. The users'
own answers are the proof: the share on the new version at each step, nobody switching back and
forth, no failed request with a healthy canary; a canary failing a share of real requests (on
`/`, a path the smoke tests never send) is ended on every node after its step.
"""

from __future__ import annotations

import collections
import os
import sys
import threading
import time

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import canary_bucket
from lab import App, free_port, wait_for
from release_report import artifacts, final_message, lock_files, prechecked, ran
from test_release_services import BLUE, GREEN, HostKeyedNode, services

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
USERS = 1000
CANARY = {"release_target": "backend_green", "release_strategy": "canary", "release_canary_step_seconds": 4,
          "release_min_requests": 20}


class Users(threading.Thread):
    """USERS distinct users, each always through the same node, requesting / in turn until
    stopped (bounded); every answer is kept as (time, user, status, version)."""

    def __init__(self, fleet, index, threads, max_seconds=240):
        super().__init__(daemon=True)
        self.fleet, self.index, self.threads, self.max_seconds = fleet, index, threads, max_seconds
        self.answers = []
        self.stopped = threading.Event()

    def run(self):
        deadline = time.time() + self.max_seconds
        users = range(self.index, USERS, self.threads)
        while not self.stopped.is_set() and time.time() < deadline:
            for user in users:
                if self.stopped.is_set():
                    return
                node = self.fleet.nodes[user % len(self.fleet.nodes)]
                self.answers.append((time.time(), user) + self.ask(node, user))

    @staticmethod
    def ask(node, user):
        try:
            status, body = node.get(path="/", headers={"X-User-Id": "user-%d" % user})
            return status, body.strip() if status == 200 else None
        except (OSError, ValueError, IndexError) as exc:
            return None, repr(exc)


def start_users(fleet, threads=3):
    users = [Users(fleet, index, threads) for index in range(threads)]
    for thread in users:
        thread.start()
    wait_for(lambda: sum(len(thread.answers) for thread in users) >= USERS, timeout=60,
             what="every user's first answer")
    return users


def stop(users):
    for thread in users:
        thread.stopped.set()
    for thread in users:
        thread.join(timeout=30)
    return sorted(answer for thread in users for answer in thread.answers)


def summary(report):
    return artifacts(report)["release_summary"]


def test_a_healthy_canary_moves_a_stable_share_of_users_step_by_step_then_promotes(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=3, canary=True)
    users = start_users(fleet)

    rc, report = run_playbook(CUTOVER, dict(CANARY, release_canary_steps=[10, 50], release_canary_smoke_header="X-User-Id"),
                              inventory=fleet.inventory)

    answers = stop(users)
    assert rc == 0, final_message(report)
    # Each step first sent its smoke requests through each node with a bucket in the step's share:
    # HAProxy routed every one of them to green.
    # (A fleet's steps are plain runs in one batch of forks; with more nodes, async jobs whose
    # results are the collected ones.)
    steps = ran(report, "release_step", "canary") + ran(report, "release_collect")
    smoked = [(result["weight"], [(item["passed"], item["passed_count"]) for item in result["smoke"]])
              for _name, _host, result in steps if result.get("weight")]
    assert sorted(smoked) == [(10, [(True, 6)])] * 3 + [(50, [(True, 6)])] * 3, smoked
    assert [answer for answer in answers if answer[2] != 200] == [], "a healthy canary fails no request"
    for host, node in summary(report).items():
        steps = node["canary_steps"]
        assert [(step["weight"], step["verdict"]) for step in steps] == [(10, "passed"), (50, "passed")], (host, steps)
    for index, weight in enumerate((10, 50)):
        # The step's window on every node: from the last node's start to the first node's end.
        started = max(node["canary_steps"][index]["started"] for node in summary(report).values())
        ended = min(node["canary_steps"][index]["ended"] for node in summary(report).values())
        seen = collections.defaultdict(set)
        for at, user, _status, version in answers:
            if started <= at <= ended:
                seen[user].add(version)
        assert len(seen) >= USERS * 0.9, "most users answered within the %d%% step" % weight
        assert [user for user, versions in seen.items() if len(versions) > 1] == [], \
            "no user sees both versions within a step"
        share = 100.0 * sum(1 for versions in seen.values() if versions == {"version=green"}) / len(seen)
        assert abs(share - weight) <= 5, "%.1f%% of users on green at the %d%% step" % (share, weight)
        switched = [node["canary_steps"][index]["switched_at"] for node in summary(report).values()]
        assert max(switched) - min(switched) <= 5, "every node steps at one instant (release_max_spread)"
    # Promoted: everybody on green, the share back to 0, the disk holds the live key only.
    assert fleet.map_values() == ["backend_green"] * 3 and fleet.disk_values() == ["backend_green"] * 3
    assert [node.map_value("active.weight") for node in fleet.nodes] == ["0"] * 3
    assert all("weight" not in node.disk_text() for node in fleet.nodes)
    assert {Users.ask(fleet.nodes[user % 3], user) for user in range(0, USERS, 20)} == {(200, "version=green")}
    assert lock_files(fleet) == []


def test_a_canary_failing_real_users_is_ended_on_every_node_after_its_step(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2, canary=True)
    for node in fleet.nodes:
        for app in node.apps.values():
            if app.color == "green":
                # Real users' path only: the preflight and smoke tests (/release) still pass.
                with open(app.fail_file, "w") as handle:
                    handle.write("0.2 /\n")
    users = start_users(fleet)

    rc, report = run_playbook(CUTOVER, dict(CANARY, release_canary_steps=[5, 50]), inventory=fleet.inventory)

    answers = stop(users)
    message = final_message(report)
    assert rc != 0
    assert "CANARY: at 5%: " in message and "backend_green" in message, message
    for node in summary(report).values():
        # The 5% step failed, then the canary's end (weight 0) on every node.
        assert [(step["weight"], step["verdict"]) for step in node["canary_steps"]] == [(5, "failed"), (0, "ended")]
        assert node["canary_steps"][0]["error_rate"] > 1.0, node["canary_steps"]
    # Ended on every node: the share back to 0, the live key and the disk never moved.
    assert [node.map_value("active.weight") for node in fleet.nodes] == ["0", "0"]
    assert fleet.map_values() == ["backend_blue"] * 2 and fleet.disk_values() == ["backend_blue"] * 2
    # Only the canary's share of users met the failures: at most about share x failure rate x
    # requests (every request of the run counted, so the bound holds however long the step took).
    failed = [answer for answer in answers if answer[2] != 200]
    assert 0 < len(failed) <= 0.05 * 0.2 * len(answers) * 2 + 10, (len(failed), len(answers))
    failing_users = set(answer[1] for answer in failed)
    assert len(failing_users) <= USERS * 0.05 * 2, "the users who met a failure are the canary's share"
    # Ended: those users are back on the stable version.
    assert {Users.ask(fleet.nodes[user % 2], user) for user in failing_users} == {(200, "version=blue")}
    assert lock_files(fleet) == []


def test_a_configuration_that_ignores_the_weight_is_not_a_healthy_canary(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    users = start_users(fleet, threads=2)

    rc, report = run_playbook(CUTOVER, dict(CANARY, release_canary_steps=[30]), inventory=fleet.inventory)

    stop(users)
    message = final_message(report)
    assert rc != 0
    assert "the canary does not route: backend_green got no request while backend_blue got" in message, message
    assert fleet.map_values() == ["backend_blue"] and fleet.nodes[0].map_value("active.weight") == "0"


def test_a_canary_a_dead_run_left_is_refused_by_a_cutover_and_ended_by_a_rollback(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2, canary=True)
    for node in fleet.nodes:  # what a run killed during its 30% step leaves
        node.runtime("add map %s active.canary backend_green" % node.map_path)
        node.runtime("add map %s active.weight 30" % node.map_path)
    on_canary = [user for user in range(200) if Users.ask(fleet.nodes[user % 2], user) == (200, "version=green")]
    # Exactly the users whose bucket, as the engine computes HAProxy's crc32(1),mod(100), is below 30.
    assert on_canary == [user for user in range(200) if canary_bucket("user-%d" % user) < 30]
    assert 20 <= len(on_canary) <= 100, "about 30% of the users on the canary"

    rc, report = run_playbook(CUTOVER, dict(CANARY, release_canary_steps=[10]), inventory=fleet.inventory)
    assert rc != 0 and "a canary is already running here (active.weight is 30)" in final_message(report)
    # Refused: it changed nothing, the other run's share included.
    assert [node.map_value("active.weight") for node in fleet.nodes] == ["30", "30"]

    rollback = os.path.join(REPO, "playbooks", "rollback.yml")
    rc, report = run_playbook(rollback, {}, inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    assert {node["outcome"] for node in summary(report).values()} == {"canary ended"}
    # The live key stayed on blue (a rollback's "other backend" would have been green) and the share is 0.
    assert fleet.map_values() == ["backend_blue"] * 2 and fleet.disk_values() == ["backend_blue"] * 2
    assert [node.map_value("active.weight") for node in fleet.nodes] == ["0", "0"]
    assert {Users.ask(fleet.nodes[user % 2], user) for user in on_canary} == {(200, "version=blue")}
    assert lock_files(fleet) == []


def test_a_canary_in_check_mode_proves_the_gates_and_changes_nothing(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2, canary=True)
    disks = [node.disk_text() for node in fleet.nodes]
    started = time.time()

    # Steps of 60 s: a check run that armed them or waited their windows would take minutes.
    rc, report = run_playbook(CUTOVER, dict(CANARY, release_canary_steps=[10, 50], release_canary_step_seconds=60),
                              inventory=fleet.inventory, check=True)

    took = time.time() - started
    assert rc == 0, final_message(report)
    assert took < 60, "a check run waits no analysis window (%.1f s)" % took
    # Every gate ran on every node and passed: health, preflight and the current path.
    for stage in ("health", "preflight", "current"):
        checks = prechecked(report, stage)
        assert sorted(host for host, _key, _result in checks) == ["node1", "node2"], stage
        assert not [result for _host, _key, result in checks if result["failed"]], (stage, checks)
    # No step was armed, none ran: nothing at runtime, no lock, the disk byte for byte.
    assert ran(report, "release_step", "canary") == [] and ran(report, "release_collect") == []
    for node in fleet.nodes:
        entries = node.runtime("show map %s" % node.map_path)
        assert "active.canary" not in entries and "active.weight" not in entries, entries
    assert fleet.map_values() == ["backend_blue"] * 2
    assert [node.disk_text() for node in fleet.nodes] == disks
    assert lock_files(fleet) == []
    # The report says it was a check.
    assert artifacts(report)["release_outcome"] == "checked"
    assert {node["outcome"] for node in summary(report).values()} == {"checked"}
    assert all(not node.get("canary_steps") for node in summary(report).values())


# The haproxy role's canary lines for a host-keyed map (haproxy_canary: true with
# haproxy_switch_key: req.hdr(host),lower): each host's `<host>.canary` and `<host>.weight`.
HOST_CANARY_LINES = """\
    http-request set-var(txn.bg_bucket) req.hdr(x-user-id),crc32(1),mod(100)
    http-request set-var(txn.bg_weight) req.hdr(host),lower,concat(,,.weight),map({map_path},0)
    use_backend %[req.hdr(host),lower,concat(,,.canary),map({map_path},static_blue)] if {{ var(txn.bg_bucket) -m found }} \
{{ var(txn.bg_weight),sub(txn.bg_bucket) -m int gt 0 }}
"""


class HostKeyedCanaryNode(HostKeyedNode):
    """test_release_services' host-keyed node, its frontend routing each host's canary share."""

    def write_config(self):
        super().write_config()
        switch = "    use_backend %%[req.hdr(host),lower,map(%s,static_blue)]\n" % self.map_path
        with open(self.config_path) as handle:
            config = handle.read()
        assert switch in config
        with open(self.config_path, "w") as handle:
            handle.write(config.replace(switch, HOST_CANARY_LINES.format(map_path=self.map_path) + switch, 1))


@pytest.fixture
def host_keyed_canary_fleet(tmp_path):
    """Two host-keyed canary nodes (shop.test and api.test, each with its blue and green) and their inventory."""
    nodes, apps = [], []
    for index in range(2):
        workdir = tmp_path / ("node%d" % (index + 1))
        workdir.mkdir()
        node_apps = {}
        for backend in ("shop_blue", "shop_green", "api_blue", "api_green", "static_blue"):
            node_apps[backend] = App(name=backend, color=backend, port=free_port(), workdir=str(workdir)).start()
            apps.append(node_apps[backend])
        nodes.append(HostKeyedCanaryNode(workdir=str(workdir), apps=node_apps, frontend_port=free_port(),
                                         stats_port=free_port(), inter="300ms").start())
    for node in nodes:
        node.wait_all_up()
    inventory = tmp_path / "inventory.ini"
    lines = ["[haproxy]"] + [
        "node%d ansible_connection=local ansible_python_interpreter=%s release_socket=%s release_map=%s "
        "release_smoke_resolve=127.0.0.1:%d" % (index + 1, sys.executable, node.socket, node.map_path, node.frontend_port)
        for index, node in enumerate(nodes)]
    lines += ["", "[haproxy:vars]", "release_health_wait=10", "release_smoke_requests=2", "release_max_spread=5"]
    inventory.write_text("\n".join(lines) + "\n")
    yield nodes, str(inventory)
    for node in nodes:
        node.stop()
    for app in apps:
        app.stop()


class MapWatcher(threading.Thread):
    """Reads every node's live map over and over while a run goes on (bounded): (node index, {key: value})."""

    def __init__(self, nodes, max_seconds=180):
        super().__init__(daemon=True)
        self.nodes, self.max_seconds, self.seen = nodes, max_seconds, []
        self.stopped = threading.Event()

    def run(self):
        deadline = time.time() + self.max_seconds
        while not self.stopped.is_set() and time.time() < deadline:
            for index, node in enumerate(self.nodes):
                try:
                    self.seen.append((index, node.values()))
                except OSError:
                    pass
            self.stopped.wait(0.1)

    def stop(self):
        self.stopped.set()
        self.join(timeout=10)
        return self.seen


def test_several_services_take_the_same_canary_steps_together(host_keyed_canary_fleet, run_playbook):
    nodes, inventory = host_keyed_canary_fleet
    assert [node.values() for node in nodes] == [BLUE, BLUE]
    watcher = MapWatcher(nodes)
    watcher.start()

    # No users: the shares are not what is proven here, so too few requests may pass.
    rc, report = run_playbook(CUTOVER, dict(release_services=services(), release_strategy="canary",
                                            release_canary_steps=[10, 50], release_canary_step_seconds=2,
                                            release_insufficient_traffic="pass"), inventory=inventory)

    seen = watcher.stop()
    assert rc == 0, final_message(report)
    # At each step, on each node, both hosts carried their canary share at once (one commit per node).
    for weight in ("10", "50"):
        for index in range(len(nodes)):
            together = [values for node, values in seen if node == index and all(
                (values.get(host + ".canary"), values.get(host + ".weight")) == (GREEN[host], weight)
                for host in ("shop.test", "api.test"))]
            assert together, "node%d: both hosts at %s%% at once" % (index + 1, weight)
    # Never one host's share without the other's: the keys moved in the same commits.
    assert not [values for _node, values in seen
                if values.get("shop.test.weight") != values.get("api.test.weight")], "the hosts stepped apart"
    assert not [values for _node, values in seen if "static.test.weight" in values], "static.test is in no release"
    # Promoted: both hosts on green, their shares 0 (or absent), the disk holds the live keys only.
    for node in nodes:
        live = node.values()
        assert dict((host, live[host]) for host in GREEN) == GREEN
        assert [live.get(host + ".weight") for host in ("shop.test", "api.test")] in (["0", "0"], [None, None]), live
        assert node.disk_values() == GREEN
        assert [node.answer(host) for host in ("shop.test", "api.test")] == ["version=shop_green", "version=api_green"]
    for host, node in summary(report).items():
        steps = node["canary_steps"]
        assert [sorted(step) for step in steps] == [["api.test", "shop.test"]] * 2, (host, steps)
        assert [(step["shop.test"]["weight"], step["api.test"]["weight"]) for step in steps] == [(10, 10), (50, 50)]
        assert all(window["verdict"] in ("passed", "insufficient") for step in steps for window in step.values())
    assert not [node.map_path + ".lock" for node in nodes if os.path.exists(node.map_path + ".lock")]


class ReloadDuringStep(threading.Thread):
    """Reloads `node`'s HAProxy (the master CLI's reload: the new worker loads the map file) as soon
    as its live map holds the share `weight`: during that step's analysis window."""

    def __init__(self, node, weight, max_seconds=120):
        super().__init__(daemon=True)
        self.node, self.weight, self.max_seconds = node, str(weight), max_seconds
        self.reloaded_at = self.error = None

    def run(self):
        try:
            wait_for(lambda: self.node.map_value("active.weight") == self.weight, timeout=self.max_seconds,
                     interval=0.05, what="the %s%% step on this node" % self.weight)
            self.node.reload()
            self.reloaded_at = time.time()
        except (AssertionError, OSError) as exc:
            self.error = exc


def test_a_reload_during_a_step_ends_the_canary_there_and_the_run_names_it(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2, canary=True)
    reloader = ReloadDuringStep(fleet.nodes[0], 10)
    reloader.start()

    # No users: too few requests pass, so the reload is the only finding.
    rc, report = run_playbook(CUTOVER, dict(CANARY, release_canary_steps=[10, 50], release_canary_step_seconds=3,
                                            release_insufficient_traffic="pass"), inventory=fleet.inventory)

    reloader.join(timeout=10)
    message = final_message(report)
    # A run that never reached the step leaves the reloader waiting: its message says why.
    assert reloader.reloaded_at and reloader.error is None, (reloader.error, message)
    assert rc != 0
    assert "node1: CANARY: at 10%: the canary share is gone: active.weight is absent at runtime, expected 10; " \
        "did HAProxy reload?" in message, message
    assert "refusing" not in message, "the end of a canary whose share is gone is no compare-and-set refusal"
    nodes = summary(report)
    # node1's step was ended by the reload, and its end (no share left there) was not refused;
    # node2's step passed, then ended with the fleet's.
    assert [(step["weight"], step["verdict"]) for step in nodes["node1"]["canary_steps"]] == [(10, "share gone"), (0, "ended")]
    assert [step["weight"] for step in nodes["node2"]["canary_steps"]] == [10, 0]
    assert nodes["node2"]["canary_steps"][-1]["verdict"] == "ended"
    assert reloader.reloaded_at < nodes["node1"]["canary_steps"][0]["ended"]
    # Every node on the stable version: no share left (absent after the reload, 0 after the end),
    # the live key and the disk never moved.
    assert [node.map_value("active.weight") for node in fleet.nodes] == [None, "0"]
    assert fleet.map_values() == ["backend_blue"] * 2 and fleet.disk_values() == ["backend_blue"] * 2
    assert all("weight" not in node.disk_text() for node in fleet.nodes)
    assert lock_files(fleet) == []
