"""The approval workflow of examples/awx/ run as AWX runs it, against a fleet on loopback.

AWX gives every job of a workflow the workflow's extra vars and survey answers, and the
artifacts (set_stats) of the jobs before it. Here the jobs are the playbooks with exactly those
variables, read from the example files: the approved path (cutover with release_persist=manual,
then persist.yml) and what the docs tell a user to do after a denial (rollback.yml with
release_allow_drift=true).
"""

from __future__ import annotations

import json
import os

import yaml

from lab import REPO

EXAMPLES = os.path.join(REPO, "examples", "awx")
BLUE, GREEN = ["backend_blue"] * 2, ["backend_green"] * 2


def playbook(name):
    return os.path.join(REPO, "playbooks", name)


def survey_defaults(name):
    with open(os.path.join(EXAMPLES, name)) as handle:
        survey = json.load(handle)
    return {question["variable"]: question["default"] for question in survey["spec"] if "default" in question}


def workflow_vars(target):
    """The workflow's extra vars and its survey's defaults, with the target answered."""
    with open(os.path.join(EXAMPLES, "controller.yml")) as handle:
        play = yaml.safe_load(handle)[0]
    workflow = next(task for task in play["tasks"] if "awx.awx.workflow_job_template" in task)
    answers = survey_defaults("survey-workflow.json")
    answers["release_target"] = target
    # The lab's backends get no real traffic: the watch window's gate would find too few
    # requests to judge (its own test is test_release_watch).
    answers["release_watch_seconds"] = 0
    answers.update(workflow["awx.awx.workflow_job_template"]["extra_vars"])
    return answers


def test_workflow_persists_only_after_approval_and_a_denial_can_roll_back(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2)
    variables = workflow_vars("backend_green")
    assert variables["release_persist"] == "manual"

    # The cutover node: live everywhere, the disk still on the old version while approval waits.
    rc, report = run_playbook(playbook("cutover.yml"), variables, inventory=fleet.inventory)
    assert rc == 0, json.dumps(report)[-3000:]
    assert fleet.map_values() == GREEN and fleet.disk_values() == BLUE

    # Denied: the rollback job template, launched on its own with its survey's defaults, refuses
    # the drift the manual cutover left, unless told it is expected (release_allow_drift).
    rollback = survey_defaults("survey-rollback.json")
    assert rollback["release_target"] == "" and rollback["release_allow_drift"] == "false"
    rc, report = run_playbook(playbook("rollback.yml"), rollback, inventory=fleet.inventory)
    assert rc != 0 and "drift" in json.dumps(report)
    assert fleet.map_values() == GREEN and fleet.disk_values() == BLUE
    rc, report = run_playbook(playbook("rollback.yml"), dict(rollback, release_allow_drift="true"),
                              inventory=fleet.inventory)
    assert rc == 0, json.dumps(report)[-3000:]
    assert fleet.map_values() == BLUE and fleet.disk_values() == BLUE

    # Approved: persist.yml gets the workflow's variables and the cutover's release_target.
    rc, report = run_playbook(playbook("cutover.yml"), variables, inventory=fleet.inventory)
    assert rc == 0, json.dumps(report)[-3000:]
    rc, report = run_playbook(playbook("persist.yml"), variables, inventory=fleet.inventory)
    assert rc == 0, json.dumps(report)[-3000:]
    assert fleet.map_values() == GREEN and fleet.disk_values() == GREEN
