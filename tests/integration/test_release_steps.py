"""The release engine in three steps (issue 14): module runs per node on the happy path.

A fleet runs exactly three modules on each node - release_step's prepare, switch and finish.
A fleet in one batch of forks runs its armed switch as a plain module run that waits for the
instant; with more nodes than forks the switch is an async job, and the fleet adds its collection
(release_collect: one look at each node once the step should be done). A fleet of one node has no other node to wait for at a gate: its cutover is one
module run (release_step's single: the three steps in one run). Nothing else reaches a node:
every other task is the controller's (facts, gates, the report). Counted from the run's own task
results (the test_json callback), against real HAProxy on loopback.
"""

from __future__ import annotations

import os

import pytest

from release_report import final_message, ran, report_task

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
GREEN = {"release_target": "backend_green"}
# Actions that run on the controller only (no module is sent to the node).
CONTROLLER_ONLY = {"set_fact", "assert", "debug", "fail", "set_stats", "include_role", "include_tasks", "import_tasks",
                   "validate_argument_spec", "meta", "pause"}


def module_runs(report, host):
    """[(action, attempts)] of every task that ran a module on `host` (skipped ones did not);
    release_step's runs as `release_step:<step>`."""
    runs = []
    for play in report["plays"]:
        for task in play["tasks"]:
            action = task["task"]["action"].rsplit(".", 1)[-1]
            result = task["hosts"].get(host)
            # release_step's step as the module ran it (the task's argument may be a template).
            step = (result or {}).get("step") or task["task"].get("step")
            if step and action == "release_step":
                action = "%s:%s" % (action, step)
            if result is None or result.get("skipped") or action in CONTROLLER_ONLY:
                continue
            runs.append((action, int(result.get("attempts") or 1)))
    return runs


def included_roles(report, host):
    """Names of the include_role tasks that ran on `host` (skipped ones did not)."""
    return [task["task"]["name"] for play in report["plays"] for task in play["tasks"]
            if task["task"]["action"].rsplit(".", 1)[-1] == "include_role"
            and not (task["hosts"].get(host) or {"skipped": True}).get("skipped")]


def test_a_one_node_cutover_is_one_module_run(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    rc, report = run_playbook(CUTOVER, dict(GREEN, release_watch_seconds=0), inventory=fleet.inventory)
    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_green"] and fleet.disk_values() == ["backend_green"]
    assert module_runs(report, "node1") == [("release_step:single", 1)]
    # No include_role per phase: the phases are imported when the playbook is read; only the
    # optional ones (a canary, the second FINISH after a failed persist) are included, when they run.
    assert included_roles(report, "node1") == []


@pytest.mark.parametrize("forks", [2, 1])
def test_a_fleet_runs_three_steps_and_collects_only_an_async_switch(fleet_factory, run_playbook, monkeypatch, forks):
    monkeypatch.setenv("ANSIBLE_FORKS", str(forks))
    fleet = fleet_factory(nodes=2)
    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)
    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_green", "backend_green"]
    # One batch (forks 2): the switch is a plain run. Two batches (forks 1): an async job, collected.
    collected = ["release_collect"] if forks < 2 else []
    for host in ("node1", "node2"):
        runs = module_runs(report, host)
        assert [action for action, _attempts in runs] == ["release_step:prepare", "release_step:switch"] + collected + [
            "release_step:finish"], runs
        assert all(attempts == 1 for _action, attempts in runs), runs
    # The collection waits on the controller until the step should be done, then looks: once per
    # node; a second look is a node still busy then (a loaded machine), a third would be the old
    # poll-at-once-then-again.
    looks = dict((host, result["looks"]) for _name, host, result in ran(report, "release_collect"))
    assert sorted(looks) == (["node1", "node2"] if collected else []) and max(looks.values() or [0]) <= 2, looks
    # Either way the fleet switched at one instant: no node late.
    assert report_task(report)["switch"]["late"] == {} and report_task(report)["switch"]["nodes"] == 2
