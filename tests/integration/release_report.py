"""Reading the JSON report of a release playbook run (tests/integration/callback_plugins/test_json.py).

Results are found by the module a task ran (its action), not by task names, so the tests hold
while the engine's task names change; what they assert is what a user sees: the run's final
message, the job artifacts (set_stats) and the state of every HAProxy.
"""

from __future__ import annotations

import os

COLLECTION = "bluegreen.haproxy."


# A fleet of one node runs the engine's three steps in one release_step run (step single): its
# result is PREPARE's, with the switch's and the finish's under these fields.
SINGLE_STEPS = {"prepare": None, "switch": "switch_step", "finish": "finish_step"}


def _step_results(task, result, step):
    """The results of release_step's `step` this task result stands for ([] or one)."""
    invoked = ((result.get("invocation") or {}).get("module_args") or {}).get("step") or task["task"].get("step")
    if invoked == step:
        return [result]
    if invoked == "single" and step in SINGLE_STEPS:
        field = SINGLE_STEPS[step]
        if field is None:
            return [result]
        return [result[field]] if isinstance(result.get(field), dict) else []
    return []


def results(report, action, step=None):
    """[(task name, host, result)] of every task that ran `action` (short or FQCN), in order.

    `step` names one step of the release engine's module (release_step: prepare, switch, finish),
    found in a fleet of one node's single run too (SINGLE_STEPS). A task looped over the
    release's services gives one result per service (its `item` is the service), so a test reads
    a single-key run and a multi-service run the same way.
    """
    found = []
    for play in report["plays"]:
        for task in play["tasks"]:
            name = task["task"]["action"]
            if name == action or name == COLLECTION + action or name == "ansible.builtin." + action:
                for host, result in task["hosts"].items():
                    items = result.get("results") if isinstance(result.get("results"), list) else [result]
                    if step is not None:
                        items = [found_step for item in items for found_step in _step_results(task, item, step)]
                    found.extend((task["task"]["name"], host, item) for item in items)
    return found


def ran(report, action, step=None):
    """[(task name, host, result)] of `action` (and `step`, see results) that did run (not skipped)."""
    return [item for item in results(report, action, step) if not item[2].get("skipped")]


def prechecked(report, stage):
    """[(host, service key, result)] of one precheck stage (health, preflight, current) that ran.

    The release engine's PREPARE step (release_step, step prepare) returns its precheck under
    `precheck`, shaped as release_precheck returns it.
    """
    checks = [(host, result) for _name, host, result in ran(report, "release_precheck")] + \
        [(host, result.get("precheck") or {}) for _name, host, result in ran(report, "release_step", "prepare")]
    return [(host, service["key"], service[stage]) for host, result in checks
            for service in result.get("services", []) if service.get(stage)]


def final_message(report):
    """The message the run ended with: the last failed task's msg (the run's verdict)."""
    message = ""
    for play in report["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                if result.get("failed") or result.get("unreachable"):
                    message = str(result.get("msg", ""))
    return message


def artifacts(report):
    """The job artifacts the run published with set_stats (what AWX shows), merged."""
    data = {}
    for _name, _host, result in ran(report, "set_stats"):
        data.update(result.get("ansible_stats", {}).get("data", {}))
    return data


def changed(report):
    """[(task name, host)] of every result that reported a change."""
    return [(task["task"]["name"], host)
            for play in report["plays"] for task in play["tasks"]
            for host, result in task["hosts"].items() if result.get("changed")]


def lock_files(fleet):
    return [path for path in (node.map_path + ".lock" for node in fleet.nodes) if os.path.exists(path)]


def nothing_switched(report):
    """No node started its SWITCH AND PROVE step (release_step's switch, the only step that moves a live map first)."""
    return [(name, host) for name, host, _result in ran(report, "release_step", "switch")]


def switch_steps(report):
    """{host: the switch step's result} as the run collected it (a fleet's async job, or one node's run)."""
    steps = {}
    for action, step in (("release_step", "switch"), ("release_collect", None)):
        for _name, host, result in ran(report, action, step):
            if "switch" in result and "stage" in result:
                steps[host] = result
    return steps


def step_items(report, field):
    """[(host, service key, result)] of one per-service field of every node's switch step (smoke, traffic, baseline)."""
    return [(host, item.get("key"), item) for host, step in sorted(switch_steps(report).items())
            for item in step.get(field) or []]


def finish_steps(report):
    """{host: the finish step's result} (the last one of a node that finished twice)."""
    return dict((host, result) for _name, host, result in ran(report, "release_step", "finish"))


def report_task(report):
    """What the REPORT task showed (its debug message: outcome, switch, nodes), the last one shown."""
    shown = {}
    for _name, _host, result in ran(report, "debug"):
        message = result.get("msg")
        if isinstance(message, dict) and "outcome" in message and "nodes" in message:
            shown = message
    return shown
