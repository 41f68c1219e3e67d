"""The release playbooks against a fleet of real HAProxy processes on loopback.

Each node is a local inventory host with its own HAProxy and its own blue and
green releases, so a test can break green behind one node only.
"""

from __future__ import annotations

import json
import os
import threading
import time

import ansible_runner
import pytest

from lab import REPO, LoadGenerator, ansible_bin, runtime_command

CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")
STATUS = os.path.join(REPO, "playbooks", "status.yml")
PERSIST = os.path.join(REPO, "playbooks", "persist.yml")

GREEN = {"release_target": "backend_green"}
WRONG_GREEN = {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "blue"}


def task_results(report, name_part):
    """{host: result} of the tasks whose name contains name_part (the last one wins)."""
    found = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            if name_part in task["task"]["name"]:
                # A task looped over the services (one here): the service's own result.
                found.update((host, result["results"][-1] if result.get("results") else result)
                             for host, result in task["hosts"].items())
    return found


def failure_message(report):
    results = task_results(report, "Fail the run with the reason")
    messages = [result["msg"] for result in results.values() if result.get("failed")]
    return messages[0] if messages else ""


def summary(report):
    return next(iter(task_results(report, "REPORT | collect the fleet summary").values()))["ansible_facts"]["_release_summary"]


def lock_files(fleet):
    return [path for path in (node.map_path + ".lock" for node in fleet.nodes) if os.path.exists(path)]


def test_cutover_switches_every_node_persists_and_survives_reload(fleet_factory, run_playbook, tmp_path):
    fleet = fleet_factory(nodes=2)
    report_file = tmp_path / "report.json"

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_report_file=str(report_file)), inventory=fleet.inventory)

    assert rc == 0, failure_message(report)
    assert fleet.map_values() == ["backend_green", "backend_green"]
    assert fleet.disk_values() == ["backend_green", "backend_green"]
    assert fleet.answers() == ["version=green", "version=green"]
    nodes = summary(report)
    assert {node["outcome"] for node in nodes.values()} == {"switched"}
    assert nodes["node1"]["smoke"]["SMOKE"] == {"passed": 6, "failed": 0}
    assert nodes["node2"]["target_health"] == {"healthy": 2, "total": 2}
    timings = nodes["node1"]["timings"]
    assert 0 < timings["prepare"] < timings["switch"] < timings["finish"] <= timings["finished"]
    assert nodes["node1"]["switched_at"] and nodes["node2"]["switched_at"]
    written = json.loads(report_file.read_text())
    assert written["target"] == "backend_green"
    assert written["nodes"]["node2"]["live_disk"] == "backend_green"
    assert lock_files(fleet) == []

    for node in fleet.nodes:
        node.reload()
    assert fleet.map_values() == ["backend_green", "backend_green"]
    assert fleet.answers() == ["version=green", "version=green"]

    rc, again = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)
    assert rc == 0, failure_message(again)
    assert {node["outcome"] for node in summary(again).values()} == {"unchanged"}
    assert fleet.answers() == ["version=green", "version=green"]


def test_green_broken_behind_one_node_rolls_back_every_node(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2, node_colors={1: WRONG_GREEN})

    # Without the preflight (which would refuse it before the switch), the smoke test catches it.
    rc, report = run_playbook(CUTOVER, dict(GREEN, release_preflight=False), inventory=fleet.inventory)

    assert rc != 0
    message = failure_message(report)
    assert "every node was rolled back to backend_blue" in message
    assert "node2: SMOKE" in message and "did not match 'version=green'" in message
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert fleet.disk_values() == ["backend_blue", "backend_blue"]
    assert fleet.answers() == ["version=blue", "version=blue"]
    nodes = summary(report)
    assert {node["outcome"] for node in nodes.values()} == {"rolled back"}
    assert nodes["node1"]["smoke"]["ROLLBACK SMOKE"]["failed"] == 0
    assert lock_files(fleet) == []


@pytest.mark.parametrize("breakage,status", [
    ("stop", "DOWN"),
    ("set server backend_green/green2 state maint", "MAINT"),
    ("set server backend_green/green2 state drain", "DRAIN"),
])
def test_unhealthy_green_on_one_node_refuses_cutover_everywhere(fleet_factory, run_playbook, breakage, status):
    fleet = fleet_factory(nodes=2)
    broken = fleet.nodes[1]
    disks_before = [node.disk_text() for node in fleet.nodes]
    if breakage == "stop":
        broken.apps["green2"].stop()
    else:
        broken.runtime(breakage)
    broken.wait_status("backend_green", "green2", status)

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_health_wait=1), inventory=fleet.inventory)

    assert rc != 0
    message = failure_message(report)
    assert "nothing was switched" in message
    assert "node2: PRECHECK" in message and "green2 (%s" % status in message
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert [node.disk_text() for node in fleet.nodes] == disks_before
    attempted = {host: result for host, result in task_results(report, "SWITCH AND PROVE | compare-and-set at the instant").items()
                 if not result.get("skipped")}
    assert attempted == {}, "no node may even attempt the switch"
    assert summary(report)["node1"]["outcome"] == "refused"
    assert lock_files(fleet) == []


def test_a_held_lock_refuses_the_run_and_force_takes_it_over(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    lock = fleet.nodes[0].map_path + ".lock"
    with open(lock, "w") as handle:
        json.dump({"owner": "awx-job-7", "acquired": "2026-11-27T01:00:00Z", "acquired_epoch": time.time() - 90}, handle)

    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)

    assert rc != 0
    message = failure_message(report)
    assert "held by awx-job-7" in message and "release_lock_force=true" in message
    assert fleet.map_values() == ["backend_blue"]
    assert os.path.exists(lock), "another run's lock is never removed without force"

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_lock_force=True), inventory=fleet.inventory)
    assert rc == 0, failure_message(report)
    assert fleet.map_values() == ["backend_green"]
    assert not os.path.exists(lock)


def test_drift_is_reported_and_refused_before_anything_moves(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    node = fleet.nodes[0]
    node.runtime("set map %s active backend_green" % node.map_path)

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_expected_current="backend_blue"), inventory=fleet.inventory)

    assert rc != 0
    assert "drift: active is backend_green at runtime but backend_blue on disk" in failure_message(report)
    assert node.map_value() == "backend_green"
    assert "active backend_blue" in node.disk_text()


def test_manual_persistence_shows_drift_until_persist_playbook(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2)

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_persist="manual"), inventory=fleet.inventory)
    assert rc == 0, failure_message(report)
    assert fleet.map_values() == ["backend_green", "backend_green"]
    assert fleet.disk_values() == ["backend_blue", "backend_blue"]

    rc, report = run_playbook(STATUS, {}, inventory=fleet.inventory)
    assert rc == 0
    status = next(iter(task_results(report, "STATUS | summarize").values()))["ansible_facts"]["_release_status"]
    assert status["runtime"] == "backend_green" and status["disk"] == "backend_blue" and status["drift"] is True
    assert status["backends"]["backend_green"]["healthy"] is True

    rc, report = run_playbook(STATUS, {"release_status_fail_on_drift": True}, inventory=fleet.inventory)
    assert rc != 0
    assert "a reload would move traffic" in task_results(report, "Fail on drift")["node1"]["msg"]

    # release_target names what must be live: another live value is refused, nothing written.
    rc, report = run_playbook(PERSIST, {"release_target": "backend_blue"}, inventory=fleet.inventory)
    assert rc != 0
    assert "refusing to persist: active is backend_green here but release_target is backend_blue" \
        in failure_message(report)
    assert fleet.disk_values() == ["backend_blue", "backend_blue"]
    assert lock_files(fleet) == []

    rc, report = run_playbook(PERSIST, {}, inventory=fleet.inventory)
    assert rc == 0, failure_message(report)
    assert fleet.disk_values() == ["backend_green", "backend_green"]
    assert fleet.map_values() == ["backend_green", "backend_green"]
    assert {node["outcome"] for node in summary(report).values()} == {"persisted"}
    assert lock_files(fleet) == []

    # Nothing left to write: no lock taken, nothing changed.
    rc, report = run_playbook(PERSIST, {}, inventory=fleet.inventory)
    assert rc == 0, failure_message(report)
    assert {node["outcome"] for node in summary(report).values()} == {"unchanged"}


def test_rollback_refuses_an_unhealthy_target_unless_forced(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    fleet.make_live("backend_green")  # where a finished cutover leaves it
    node = fleet.nodes[0]
    node.runtime("set server backend_blue/blue1 state maint")

    rc, report = run_playbook(ROLLBACK, {"release_health_wait": 0}, inventory=fleet.inventory)
    assert rc != 0
    assert "blue1 (MAINT" in failure_message(report)
    assert fleet.map_values() == ["backend_green"]

    rc, report = run_playbook(ROLLBACK, {"release_force": True}, inventory=fleet.inventory)
    assert rc == 0, failure_message(report)
    assert fleet.map_values() == ["backend_blue"]
    assert fleet.disk_values() == ["backend_blue"]


def test_reload_during_the_watch_window_is_detected_and_ends_consistent(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2)
    reloaded = fleet.nodes[0]
    reloads = []

    def green_answered():
        # Responses of node1's backend_green (health checks are not counted): only the run's
        # SMOKE sends any, and it starts after the switch and its read-back are done.
        lines = [line for line in reloaded.runtime("show stat backend_green 2 -1").splitlines() if line.strip()]
        row = dict(zip(lines[0][2:].split(","), lines[1].split(",")))
        return int(row["hrsp_2xx"] or 0) > 0

    def reload_once_smoke_started():
        deadline = time.monotonic() + 240
        while not green_answered():
            if time.monotonic() > deadline:
                reloads.append("no request reached green on node1 within 240s")
                return
            time.sleep(0.05)
        reloaded.reload()
        reloads.append("reloaded")

    reloader = threading.Thread(target=reload_once_smoke_started, daemon=True)
    reloader.start()
    # The window is much longer than a reload, so the reload (after the first SMOKE request)
    # always lands before WATCH VERIFY reads the map at the window's end.
    rc, report = run_playbook(CUTOVER, dict(GREEN, release_watch_seconds=10, release_watch_interval=0.5),
                              inventory=fleet.inventory)
    reloader.join(timeout=60)

    assert reloads == ["reloaded"], reloads
    assert rc != 0
    message = failure_message(report)
    # Whether a smoke request also lands after the reload depends on timing: not asserted.
    assert "node1: WATCH VERIFY: active is backend_blue at runtime, expected backend_green" in message, message
    assert "did HAProxy reload?" in message
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert fleet.disk_values() == ["backend_blue", "backend_blue"]
    assert {node["outcome"] for node in summary(report).values()} == {"rolled back"}


def test_live_traffic_sees_no_failed_request_during_cutover_and_rollback(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2)
    load = LoadGenerator(fleet.nodes)
    load.start()
    try:
        rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)
        assert rc == 0, failure_message(report)
        assert fleet.answers() == ["version=green", "version=green"]
        # The rollback playbook chooses the other backend by itself, and persists it.
        rc, report = run_playbook(ROLLBACK, {}, inventory=fleet.inventory)
        assert rc == 0, failure_message(report)
        assert fleet.map_values() == ["backend_blue", "backend_blue"]
        assert fleet.disk_values() == ["backend_blue", "backend_blue"]
        assert fleet.answers() == ["version=blue", "version=blue"]
    finally:
        load.stop()

    assert load.errors == []
    assert set(load.answers) == {"200 version=blue", "200 version=green"}, load.answers
    assert sum(load.answers.values()) > 200


def test_check_mode_runs_the_gates_and_switches_nothing(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory, check=True)
    assert rc == 0, failure_message(report)
    assert task_results(report, "PREPARE | read live and disk")["node1"]["precheck"]["services"][0]["health"]["healthy"] is True
    assert fleet.map_values() == ["backend_blue"]
    assert lock_files(fleet) == []


def test_cutover_through_ansible_runner_publishes_artifacts(fleet_factory, tmp_path, monkeypatch):
    # ansible-runner starts ansible-playbook from PATH, as AWX's execution environments do.
    monkeypatch.setenv("PATH", os.path.dirname(ansible_bin("ansible-playbook")) + os.pathsep + os.environ["PATH"])
    fleet = fleet_factory(nodes=2)
    private = tmp_path / "runner"
    (private / "inventory").mkdir(parents=True)
    (private / "inventory" / "hosts").write_text(open(fleet.inventory).read())
    env = {"ANSIBLE_COLLECTIONS_PATH": os.path.join(REPO, ".collections"),
           "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false"}

    run = ansible_runner.run(private_data_dir=str(private), playbook=CUTOVER, extravars=dict(GREEN),
                             envvars=env, quiet=True)

    assert run.status == "successful", run.stdout.read()
    stats_event = [event for event in run.events if event["event"] == "playbook_on_stats"][-1]
    artifacts = stats_event["event_data"]["artifact_data"]
    assert artifacts["release_target"] == "backend_green"
    assert artifacts["release_outcome"] == "succeeded"
    assert artifacts["release_summary"]["node2"]["live_runtime"] == "backend_green"
    assert fleet.map_values() == ["backend_green", "backend_green"]
    assert runtime_command(fleet.nodes[0].socket, "show info").startswith("Name: HAProxy")
