"""The report says what HAProxy holds, nothing more or less (issue 13, findings 2 and 3).

Against real HAProxy on loopback:
- A key moved by hand between READ and SWITCH: the test-only callback
  tests/integration/callback_plugins/hand_on_cue.py sends `set map` to one node's socket when the
  switch task starts. The compare-and-set refuses to overwrite it, and every report (the run's
  message, set_stats, the JSON file, the REPORT task) names the hand's value on that node: the
  fleet is split, never "failed" with the value READ saw.
- A node that cannot be read (its socket missing; a directory where its lock file should be):
  nothing moved anywhere, so the run `failed` (never `split`), and that node's live value is
  what was read, or `unknown` with the reason, never another node's value or a guess.
"""

from __future__ import annotations

import json
import os

from release_report import artifacts, final_message, nothing_switched, report_task

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
STATUS = os.path.join(REPO, "playbooks", "status.yml")

GREEN = {"release_target": "backend_green"}
HAND = "backend_hand"


def set_host_var(inventory, host, name, value):
    """Give `host` its own `name=value` in the inventory the fleet fixture wrote."""
    with open(inventory) as handle:
        lines = handle.read().splitlines()
    for index, line in enumerate(lines):
        if line.startswith(host + " "):
            words = [word for word in line.split(" ") if not word.startswith(name + "=")]
            lines[index] = " ".join(words + ["%s=%s" % (name, value)])
    with open(inventory, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def every_report(report, report_file):
    """(outcome, nodes) as each view of the run gives them: set_stats, the JSON file, the REPORT task."""
    stats = artifacts(report)
    written = json.loads(report_file.read_text())
    shown = report_task(report)
    views = {"set_stats": (stats["release_outcome"], stats["release_summary"]),
             "report file": (written["outcome"], written["nodes"]),
             "REPORT task": (shown["outcome"], shown["nodes"])}
    first = views["set_stats"]
    for name, view in views.items():
        assert view == first, "%s disagrees with set_stats: %s != %s" % (name, view, first)
    return first


def test_a_key_moved_by_hand_between_read_and_switch_is_kept_and_reported(fleet_factory, run_playbook, tmp_path,
                                                                          monkeypatch, nodes=2):
    """Both nodes are armed for one instant; the hand moves node2's key before its switch.

    A fleet of one node reads and switches in one module run (step single): the same race there
    (a hand during its precheck) is test_release_step.py's
    test_a_fleet_of_one_node_keeps_a_key_moved_by_hand_during_its_precheck.
    """
    fleet = fleet_factory(nodes=nodes)
    moved = fleet.nodes[-1]
    moved_host = "node%d" % nodes
    done = tmp_path / "hand.done"
    cue = tmp_path / "hand.json"
    cue.write_text(json.dumps({"action": "bluegreen.haproxy.release_step", "step": "switch", "socket": moved.socket,
                               "command": "set map %s active %s" % (moved.map_path, HAND), "done": str(done)}))
    monkeypatch.setenv("ANSIBLE_CALLBACKS_ENABLED", "hand_on_cue")
    monkeypatch.setenv("HAND_ON_CUE", str(cue))
    report_file = tmp_path / "report.json"

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_report_file=str(report_file)), inventory=fleet.inventory)

    assert done.exists(), "the hand never moved the key (no switch step started): %s" % final_message(report)
    hand = json.loads(done.read_text())
    assert "SWITCH AND PROVE |" in hand["task"], hand
    assert hand["reply"].strip() == "", hand
    assert rc != 0
    # The compare-and-set refused to overwrite the hand's value; node1 of two switched and went back.
    assert fleet.map_values() == ["backend_blue"] * (nodes - 1) + [HAND]
    outcome, summary = every_report(report, report_file)
    node = summary[moved_host]
    assert (node["live_runtime"], node["live_known"]) == (HAND, True), node
    assert (node["live_disk"], node["drift"], node["outcome"]) == ("backend_blue", True, "failed"), node
    message = final_message(report)
    assert "'%s'" % HAND in message and "expected backend_blue" in message, message
    assert outcome == "split", (outcome, summary)
    assert summary["node1"]["live_runtime"] == "backend_blue", summary["node1"]
    assert summary["node1"]["outcome"] == "rolled back", summary["node1"]
    assert "the fleet is split" in message, message
    assert "node1 rolled back (live backend_blue)" in message, message
    assert "node2 failed (live %s)" % HAND in message, message


def test_a_node_without_its_socket_is_unknown_and_nothing_moved(fleet_factory, run_playbook, tmp_path):
    fleet = fleet_factory(nodes=2)
    missing = str(tmp_path / "no-such.sock")
    set_host_var(fleet.inventory, "node2", "release_socket", missing)
    report_file = tmp_path / "report.json"

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_report_file=str(report_file)), inventory=fleet.inventory)

    assert rc != 0
    assert nothing_switched(report) == []
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    outcome, nodes = every_report(report, report_file)
    assert outcome == "failed", (outcome, nodes)
    node2 = nodes["node2"]
    assert node2["live_runtime"] is None and node2["live_known"] is False, node2
    assert node2["live_unknown_reason"].startswith("READ: ") and missing in node2["live_unknown_reason"], node2
    assert node2["drift"] is None, node2
    assert nodes["node1"]["live_runtime"] == "backend_blue" and nodes["node1"]["live_known"] is True, nodes["node1"]
    message = final_message(report)
    assert "split" not in message, message
    assert "nothing was switched" in message, message
    assert "live value unknown on node2" in message, message

    rc, report = run_playbook(STATUS, {}, inventory=fleet.inventory)

    assert rc != 0, "a node that cannot be read fails the status run"
    status = artifacts(report)
    node2 = status["release_status"]["node2"]
    assert node2["runtime"] is None and node2["runtime_known"] is False, node2
    assert missing in node2["unknown_reason"], node2
    assert status["release_status"]["node1"]["runtime"] == "backend_blue"
    fleet_status = status["release_fleet"]
    assert fleet_status["consistent"] is False, fleet_status
    assert fleet_status["runtime"] == {"backend_blue": ["node1"]}, fleet_status
    assert fleet_status["unknown"] == {"node2": node2["unknown_reason"]}, fleet_status
    assert "split" not in fleet_status["message"] and "node2" in fleet_status["message"], fleet_status
    assert "unknown" in final_message(report), final_message(report)


def test_a_directory_where_the_lock_should_be_fails_the_run_not_split(fleet_factory, run_playbook, tmp_path):
    fleet = fleet_factory(nodes=2)
    lock_dir = fleet.nodes[1].map_path + ".lock"
    os.mkdir(lock_dir)
    report_file = tmp_path / "report.json"

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_report_file=str(report_file)), inventory=fleet.inventory)

    assert rc != 0
    assert nothing_switched(report) == []
    assert fleet.map_values() == ["backend_blue", "backend_blue"]
    assert os.path.isdir(lock_dir)
    outcome, nodes = every_report(report, report_file)
    assert outcome == "failed", (outcome, nodes)
    node2 = nodes["node2"]
    assert any(lock_dir in failure for failure in node2["failures"]), node2
    # The map itself was read in the same module run: that value, never another node's or a guess.
    assert node2["live_runtime"] == "backend_blue" and node2["live_known"] is True, node2
    message = final_message(report)
    assert "split" not in message and "nothing was switched" in message and lock_dir in message, message
