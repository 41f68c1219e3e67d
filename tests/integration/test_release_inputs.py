"""The release engine's inputs and fleet-instant checks (issue 13), against real HAProxy on loopback.

- A misspelled `release_*` input is refused before anything is read, naming the closest input.
- A run on part of the `release_hosts` group (`--limit`) is refused unless release_allow_partial,
  and then the report says so first.
- No node runs PRECHECK when any node failed LOCK (the LOCK gate).
- A node whose clock is off (tests/integration/connection_plugins/skewed_local.py makes the
  node's `date` answer 1 s ahead) is refused, naming the offset and the measurement's error.
- A node that switched long after the others (connection_plugins/slow_local.py starts its
  armed switch step late) fails the run and every node rolls back, or with release_spread_action=warn the
  run succeeds with the warning in the report's summary.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

from lab import REPO, ansible_bin, ansible_env
from release_report import artifacts, final_message, lock_files, nothing_switched, prechecked, ran

CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
GREEN = {"release_target": "backend_green"}


def cutover(fleet, tmp_path, extra_vars, *options):
    """Run cutover.yml on the fleet with extra vars and ansible-playbook options (e.g. --limit)."""
    vars_file = tmp_path / "extra_vars.json"
    vars_file.write_text(json.dumps(extra_vars))
    command = [ansible_bin("ansible-playbook"), "-i", fleet.inventory, CUTOVER, "-e", "@%s" % vars_file] + list(options)
    completed = subprocess.run(command, env=ansible_env(), capture_output=True, text=True, cwd=REPO, timeout=600,
                               check=False)
    try:
        return completed.returncode, json.loads(completed.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook printed no JSON (rc=%s):\n%s\n%s"
                             % (completed.returncode, completed.stdout, completed.stderr))


def set_host_vars(inventory, host, replacement):
    """Replace `ansible_connection=local` of `host` in the inventory with `replacement`."""
    with open(inventory) as handle:
        lines = handle.read().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(host + " "):
            assert "ansible_connection=local" in line
            lines[index] = line.replace("ansible_connection=local", replacement)
    with open(inventory, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def summary(report):
    for _name, _host, result in ran(report, "set_fact"):
        facts = result.get("ansible_facts") or {}
        if "_release_summary" in facts:
            return facts["_release_summary"]
    raise AssertionError("no fleet summary in the run")


def debug_messages(report):
    return [result.get("msg") for _name, _host, result in ran(report, "debug")]


def assert_nothing_moved(fleet, report, disks):
    assert nothing_switched(report) == [], "no node may even attempt a switch"
    assert fleet.map_values() == ["backend_blue"] * len(fleet.nodes)
    assert [node.disk_text() for node in fleet.nodes] == disks
    assert lock_files(fleet) == []


# --- 1. a misspelled input is refused, naming the input it was meant to be ------------------

def test_a_misspelled_input_is_refused_with_the_closest_name_and_nothing_moves(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=2)
    disks = [node.disk_text() for node in fleet.nodes]

    rc, report = cutover(fleet, tmp_path, dict(GREEN, release_watch_secnds=30, release_max_eror_rate=0))

    message = final_message(report)
    assert rc != 0
    assert "release_watch_secnds (did you mean `release_watch_seconds`?)" in message, message
    assert "release_max_eror_rate (did you mean `release_max_error_rate`?)" in message, message
    assert ran(report, "release_step") == [], "nothing may even be read"
    assert_nothing_moved(fleet, report, disks)


def test_a_misspelled_input_in_one_nodes_inventory_is_refused_naming_that_node(fleet_factory, tmp_path):
    """The guard runs once for the fleet, and still sees what only one node's inventory sets."""
    fleet = fleet_factory(nodes=2)
    disks = [node.disk_text() for node in fleet.nodes]
    set_host_vars(fleet.inventory, "node2", "ansible_connection=local release_watch_secnds=30")

    rc, report = cutover(fleet, tmp_path, GREEN)

    message = final_message(report)
    assert rc != 0
    assert "node2: refusing to run: unknown release input release_watch_secnds (did you mean `release_watch_seconds`?)" \
        in message, message
    assert "node1:" not in message, message
    assert ran(report, "release_step") == [], "nothing may even be read"
    assert_nothing_moved(fleet, report, disks)


def test_an_input_no_haproxy_command_can_carry_is_refused_at_init_without_being_echoed(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=1)
    disks = [node.disk_text() for node in fleet.nodes]

    rc, report = cutover(fleet, tmp_path, {"release_target": "backend_" + "g" * 100000})

    message = final_message(report)
    assert rc != 0
    assert "node1: INIT: invalid release inputs: release_target is 100008 bytes, more than the 12000" in message, message
    assert len(message) < 600 and "g" * 100 not in message
    # The play's name shows at most the start of the value.
    names = [play["play"]["name"] for play in report["plays"]]
    assert all(len(name) < 200 for name in names), [name[:300] for name in names]
    assert ran(report, "release_step") == [], "nothing may even be read"
    assert_nothing_moved(fleet, report, disks)


# --- 2. a run on part of the fleet --------------------------------------------------------

def test_a_limited_run_is_refused_unless_partial_runs_are_allowed(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=2)
    disks = [node.disk_text() for node in fleet.nodes]
    report_file = tmp_path / "report.json"

    rc, report = cutover(fleet, tmp_path, GREEN, "--limit", "node1")

    message = final_message(report)
    assert rc != 0
    assert "part of the fleet" in message and "node2" in message and "release_allow_partial=true" in message, message
    assert ran(report, "release_step") == []
    assert_nothing_moved(fleet, report, disks)

    rc, report = cutover(fleet, tmp_path, dict(GREEN, release_allow_partial=True, release_report_file=str(report_file)),
                         "--limit", "node1")

    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_green", "backend_blue"]
    assert fleet.nodes[1].disk_text() == disks[1], "the node left out is not touched"
    messages = debug_messages(report)
    # The report's first message says the run was partial, and which host it left out.
    assert isinstance(messages[0], str) and messages[0].startswith("PARTIAL RUN") and "node2" in messages[0], messages
    assert artifacts(report)["release_partial"] == {"allowed": True, "hosts_missing": ["node2"]}
    written = json.loads(report_file.read_text())
    assert written["partial"] == {"allowed": True, "hosts_missing": ["node2"]}
    assert written["outcome"] == "succeeded"


def test_a_node_unreachable_at_the_start_is_refused_unless_partial_runs_are_allowed(fleet_factory, tmp_path):
    """Unreachable when the run starts (tests/integration/connection_plugins/flaky_local.py with its
    marker already there): the same as a --limit that left the node out."""
    fleet = fleet_factory(nodes=2)
    disks = [node.disk_text() for node in fleet.nodes]
    marker = tmp_path / "node2-unreachable"
    marker.write_text("")
    set_host_vars(fleet.inventory, "node2", "ansible_connection=flaky_local flaky_local_marker=%s" % marker)
    report_file = tmp_path / "report.json"

    rc, report = cutover(fleet, tmp_path, GREEN)

    message = final_message(report)
    assert rc != 0
    assert "node2: left the play" in message, message
    assert_nothing_moved(fleet, report, disks)

    rc, report = cutover(fleet, tmp_path, dict(GREEN, release_allow_partial=True, release_report_file=str(report_file)))

    # ansible-playbook's own exit code for "some host was unreachable"; the release succeeded.
    assert rc == 4, final_message(report)
    assert fleet.map_values() == ["backend_green", "backend_blue"]
    assert fleet.nodes[1].disk_text() == disks[1], "the unreachable node is not touched"
    messages = debug_messages(report)
    assert isinstance(messages[0], str) and messages[0].startswith("PARTIAL RUN") and "unreachable" in messages[0] \
        and messages[0].endswith(": node2"), messages
    written = json.loads(report_file.read_text())
    assert written["partial"] == {"allowed": True, "hosts_missing": ["node2"]}
    assert (written["outcome"], sorted(written["nodes"])) == ("succeeded", ["node1"]), written


# --- 3. no switch anywhere unless every node is locked ---------------------------------------

def test_no_node_switches_when_a_node_failed_lock(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=2)
    disks = [node.disk_text() for node in fleet.nodes]
    held = fleet.nodes[1].map_path + ".lock"
    record = {"owner": "awx-job-7", "acquired": "2026-11-27T01:00:00Z", "acquired_epoch": time.time() - 90}
    with open(held, "w") as handle:
        json.dump(record, handle)

    rc, report = cutover(fleet, tmp_path, GREEN)

    message = final_message(report)
    assert rc != 0
    assert "node2: LOCK" in message and "held by awx-job-7" in message, message
    # PREPARE takes the lock before its precheck: node2, refused the lock, checks nothing.
    assert [host for host, _key, _result in prechecked(report, "health")] == ["node1"]
    assert nothing_switched(report) == []
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert [node.disk_text() for node in fleet.nodes] == disks
    assert lock_files(fleet) == [held], "node1's lock is released, node2's (another run's) is kept"


# --- 4. the clock check is bounded by its own error -----------------------------------------

def test_a_node_one_second_ahead_is_refused_at_half_a_second_naming_offset_and_error(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=2)
    disks = [node.disk_text() for node in fleet.nodes]
    set_host_vars(fleet.inventory, "node2", "ansible_connection=skewed_local skewed_local_clock_skew=1.0")

    rc, report = cutover(fleet, tmp_path, dict(GREEN, release_clock_tolerance=0.5))

    message = final_message(report)
    assert rc != 0
    # The offset it names is the injected second, within the error it names (a busy machine widens both).
    measured = re.search(r"node2: LOCK: the clock of node2 is ([0-9.]+)s ahead of the controller's, "
                         r"measured to within ([0-9.]+)s", message)
    assert measured, message
    assert abs(float(measured.group(1)) - 1.0) <= float(measured.group(2)), message
    assert "release_clock_tolerance 0.5s" in message, message
    assert "node1: LOCK" not in message, "node1's clock agrees"
    assert_nothing_moved(fleet, report, disks)


# --- 5. the fleet switches at one instant, or the run says it did not ------------------------

def test_a_node_that_switched_late_fails_the_run_and_every_node_rolls_back(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=2)
    set_host_vars(fleet.inventory, "node2",
                  "ansible_connection=slow_local slow_local_module=release_step slow_local_async_only=true "
                  "slow_local_seconds=8")

    # node2 starts 8 s late; a 3 s lead arms node1 in time even on a busy machine (a 1 s lead let
    # node1 be late too, and the spread between two late nodes fell under the bound). At forks 1
    # the fleet is two batches, so the switch is the async launch slow_local delays.
    rc, report = cutover(fleet, tmp_path, dict(GREEN, release_switch_lead=3, release_max_spread=1.0), "--forks", "1")

    message = final_message(report)
    assert rc != 0
    assert "node2: SWITCH: the fleet did not switch at one instant" in message, message
    assert "every node was rolled back to backend_blue" in message, message
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert fleet.disk_values() == ["backend_blue", "backend_blue"]
    assert {node["outcome"] for node in summary(report).values()} == {"rolled back"}
    assert "node2 switched" in artifacts(report)["release_switch"]["warning"]
    assert lock_files(fleet) == []


def test_with_spread_action_warn_a_late_node_is_a_warning_in_the_summary(fleet_factory, tmp_path):
    fleet = fleet_factory(nodes=2)
    set_host_vars(fleet.inventory, "node2",
                  "ansible_connection=slow_local slow_local_module=release_step slow_local_async_only=true "
                  "slow_local_seconds=8")

    # Its own release_max_spread: the lab fleets' 5 s (conftest) is not this test's subject. Forks 1:
    # the switch is the async launch slow_local delays (as above).
    rc, report = cutover(fleet, tmp_path, dict(GREEN, release_switch_lead=3, release_max_spread=1.0,
                                               release_spread_action="warn"), "--forks", "1")

    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_green", "backend_green"]
    switch = artifacts(report)["release_switch"]
    assert switch["spread_ms"] > 1000 and list(switch["late"]) == ["node2"]
    assert "node2 switched" in switch["warning"] and "release_spread_action=warn" in switch["warning"]
    (shown,) = [m for m in debug_messages(report) if isinstance(m, dict) and "switch" in m]
    assert shown["switch"]["warning"] == switch["warning"], "the warning is in the summary the run prints"
    assert artifacts(report)["release_outcome"] == "succeeded"
