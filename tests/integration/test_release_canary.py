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
import threading
import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import canary_bucket
from lab import wait_for
from release_report import artifacts, final_message, lock_files, prechecked, ran

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
    # (A fleet's steps are async jobs: their results are the collected ones.)
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
