"""Truthful reports and recovery (issue 7, items 5 and 6), against real HAProxy on loopback.

- A node that drops off the network after the switch: the test-only connection plugin
  tests/integration/connection_plugins/flaky_local.py makes every task on it unreachable once
  a marker file exists; the test creates the marker as soon as the node's map says green.
- A controller that dies after the switch: ansible-playbook and everything it started is
  SIGKILLed as soon as every node's map says green; then status.yml and rollback.yml recover.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading

from lab import LoadGenerator, ansible_bin, ansible_env, wait_for
from release_report import artifacts, final_message, lock_files

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")
STATUS = os.path.join(REPO, "playbooks", "status.yml")

GREEN = {"release_target": "backend_green"}


def make_unreachable_on_cue(inventory, host, marker):
    """Give `host` the flaky_local connection, unreachable from the first task after `marker` exists."""
    with open(inventory) as handle:
        lines = handle.read().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(host + " "):
            assert "ansible_connection=local" in line
            lines[index] = line.replace("ansible_connection=local",
                                        "ansible_connection=flaky_local flaky_local_marker=%s" % marker)
    with open(inventory, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def test_a_node_lost_after_the_switch_is_reported_split_with_its_lock_kept(fleet_factory, run_playbook, tmp_path):
    fleet = fleet_factory(nodes=2)
    lost = fleet.nodes[1]
    marker = str(tmp_path / "node2.unreachable")
    make_unreachable_on_cue(fleet.inventory, "node2", marker)
    seen_green = threading.Event()

    def drop_node2_once_switched():
        try:
            wait_for(lambda: lost.map_value() == "backend_green", timeout=180, interval=0.05,
                     what="node2's map to say backend_green")
        except AssertionError:
            return
        open(marker, "w").close()
        seen_green.set()

    dropper = threading.Thread(target=drop_node2_once_switched, daemon=True)
    dropper.start()
    load = LoadGenerator(fleet.nodes)
    load.start()
    try:
        rc, report = run_playbook(CUTOVER, dict(GREEN, release_watch_seconds=5), inventory=fleet.inventory)
    finally:
        load.stop()
        dropper.join(timeout=5)

    assert seen_green.is_set(), "node2 never switched: %s" % final_message(report)
    message = final_message(report)
    assert rc != 0
    assert "node2" in message, message
    # Whether its switch's result came back before it dropped is a race; either way the report is
    # honest: never "rolled back", the lock kept, the value it was last seen with or "no result".
    assert re.search(r"node2: not rolled back: (last seen live value backend_green|its switch to backend_green was "
                     r"armed and no result came back)", message), message
    assert "its lock is kept" in message, message
    assert "every node was rolled back" not in message, message
    assert artifacts(report)["release_outcome"] == "split"
    # node1 went back and says so everywhere; node2 is still live on green, locked.
    assert fleet.nodes[0].map_value() == "backend_blue"
    assert fleet.disk_values()[0] == "backend_blue"
    assert lost.map_value() == "backend_green"
    assert lock_files(fleet) == [lost.map_path + ".lock"]
    assert load.errors == [], load.errors[:5]


def start_playbook(playbook, inventory, extra_vars, vars_file):
    """ansible-playbook in its own session, so the test can kill it with everything it started."""
    with open(vars_file, "w") as handle:
        json.dump(extra_vars, handle)
    command = [ansible_bin("ansible-playbook"), "-i", inventory, "-c", "local", playbook, "-e", "@%s" % vars_file]
    return subprocess.Popen(command, env=ansible_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def test_a_controller_killed_after_the_switch_is_explained_and_recovered(fleet_factory, run_playbook, tmp_path):
    fleet = fleet_factory(nodes=2)
    run = start_playbook(CUTOVER, fleet.inventory, dict(GREEN, release_watch_seconds=120),
                         str(tmp_path / "cutover_vars.json"))
    try:
        wait_for(lambda: run.poll() is not None or fleet.map_values() == ["backend_green", "backend_green"],
                 timeout=180, interval=0.05, what="every node's map to say backend_green")
        assert run.poll() is None, "the cutover ended before the test could kill it (rc=%s)" % run.returncode
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
    assert fleet.map_values() == ["backend_green", "backend_green"]
    assert fleet.disk_values() == ["backend_blue", "backend_blue"], "killed before PERSIST: the fleet drifts"
    assert len(lock_files(fleet)) == 2, "the dead run's locks are still held"

    rc, report = run_playbook(STATUS, {}, inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    status = artifacts(report)["release_status"]
    for host in ("node1", "node2"):
        node = status[host]
        assert node["drift"] is True, node
        lock = node["lock"]
        assert lock["held"] is True, node
        holder = lock["holder"]
        assert holder["owner"], holder
        assert holder["previous"] == "backend_blue" and holder["target"] == "backend_green", holder
        # The phase reached: the run died after it began switching.
        assert holder["phase"] and holder["phase"] != "precheck", holder
        assert holder.get("controller_pid") == run.pid, "the lock names the run, not a module process: %s" % holder
        assert "pid" not in holder, holder
        reason = node["drift_reason"] or ""
        assert reason.startswith("explained by the release lock"), node
        assert holder["owner"] in reason and "rollback.yml -e release_lock_force=true" in reason, reason

    rc, report = run_playbook(ROLLBACK, {"release_lock_force": True}, inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert fleet.disk_values() == ["backend_blue", "backend_blue"]
    assert fleet.answers() == ["version=blue", "version=blue"]
    assert lock_files(fleet) == []
