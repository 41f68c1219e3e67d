"""The AWX examples (examples/awx/) against what they configure.

Surveys and the workflow are what a user pastes into AWX: every variable they set must be an
input of the release role (roles/release/meta/argument_specs.yml), with the type, choices and
defaults that input accepts; every playbook they name must exist; the workflow must put an
approval node before persist.yml and cut over with release_persist=manual. When the awx.awx
collection is importable (the `ansible` package), every option controller.yml passes to its
modules must be one those modules document.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import pathlib

import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "awx"
SURVEYS = sorted(EXAMPLES.glob("survey-*.json"))

# AWX survey question types and the argument spec types they can carry.
SURVEY_TYPES = {
    "text": {"str"},
    "textarea": {"str"},
    "password": {"str"},
    "integer": {"int"},
    "float": {"float"},
    "multiplechoice": {"str", "bool"},
    "multiselect": {"list"},
}
# What a job template's survey may set, per playbook: persist.yml reads only the target.
PLAYBOOK_INPUTS = {"playbooks/persist.yml": {"release_target"}}


def release_inputs():
    specs = yaml.safe_load((REPO / "roles" / "release" / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["init"]["options"]


def choices_of(question):
    choices = question.get("choices", [])
    return choices.split("\n") if isinstance(choices, str) else list(choices)


def survey_errors(survey, inputs):
    """Every way the survey disagrees with the release role's inputs, in words."""
    errors = []
    for key in ("name", "description", "spec"):
        if key not in survey:
            errors.append("no %r" % key)
    seen = set()
    for question in survey.get("spec", []):
        variable = question.get("variable")
        where = "question %r (%s)" % (question.get("question_name"), variable)
        for key in ("question_name", "variable", "type", "required"):
            if key not in question:
                errors.append("%s: no %r" % (where, key))
        if variable in seen:
            errors.append("%s: asked twice" % where)
        seen.add(variable)
        spec = inputs.get(variable)
        if spec is None:
            errors.append("%s: not an input of the release role" % where)
            continue
        kind, qtype = spec.get("type", "str"), question.get("type")
        if kind not in SURVEY_TYPES.get(qtype, set()):
            errors.append("%s: a %s question cannot carry a %s input" % (where, qtype, kind))
            continue
        if spec.get("required") and not question.get("required"):
            errors.append("%s: the input is required, the question is not" % where)
        default = question.get("default")
        if qtype in ("multiplechoice", "multiselect"):
            choices = choices_of(question)
            if len(set(choices)) != len(choices) or not all(choices):
                errors.append("%s: empty or repeated choices %r" % (where, choices))
            if kind == "bool" and set(choices) != {"true", "false"}:
                errors.append("%s: a bool input's choices are true and false, not %r" % (where, choices))
            if "choices" in spec and set(choices) != set(spec["choices"]):
                errors.append("%s: choices %r, the input accepts %r" % (where, choices, spec["choices"]))
            if variable == "release_target" and not set(choices) <= set(inputs["release_backends"]["default"]):
                errors.append("%s: %r are not all of release_backends' default pair" % (where, choices))
            # A multiselect's default is its chosen lines, one per line (as AWX stores it).
            defaults = default.split("\n") if qtype == "multiselect" and isinstance(default, str) else [default]
            if default not in (None, "") and not set(defaults) <= set(choices):
                errors.append("%s: default %r is no choice" % (where, default))
        elif qtype in ("integer", "float") and default is not None:
            number = int if qtype == "integer" else (int, float)
            if not isinstance(default, number) or isinstance(default, bool):
                errors.append("%s: default %r is not a number of its type" % (where, default))
            elif not question.get("min", default) <= default <= question.get("max", default):
                errors.append("%s: default %r outside %s..%s" % (where, default, question.get("min"), question.get("max")))
        elif default is not None and not isinstance(default, str):
            errors.append("%s: default %r is not text" % (where, default))
    return errors


def load_controller():
    plays = yaml.safe_load((EXAMPLES / "controller.yml").read_text())
    assert isinstance(plays, list) and len(plays) == 1
    return plays[0]


def task_using(play, module):
    tasks = [task for task in play["tasks"] if module in task]
    assert len(tasks) == 1, "one %s task in controller.yml" % module
    return tasks[0]


def test_examples_are_files():
    assert [path.name for path in SURVEYS] == [
        "survey-cutover.json", "survey-persist.json", "survey-rollback.json", "survey-workflow.json"]
    assert (EXAMPLES / "controller.yml").is_file()


@pytest.mark.parametrize("path", SURVEYS, ids=lambda path: path.name)
def test_survey_asks_only_for_release_inputs_as_they_are_documented(path):
    survey = json.loads(path.read_text())
    assert survey_errors(survey, release_inputs()) == []


def test_survey_check_names_what_is_wrong():
    """The check itself: a typo, a wrong type, wrong choices and a bad default are each named."""
    inputs = release_inputs()
    survey = {"name": "n", "description": "d", "spec": [
        {"question_name": "a", "variable": "release_watch_secnds", "type": "integer", "required": True},
        {"question_name": "b", "variable": "release_smoke_requests", "type": "text", "required": True},
        {"question_name": "c", "variable": "release_persist", "type": "multiplechoice",
         "choices": "on_success\nnever", "required": True},
        {"question_name": "d", "variable": "release_lock_force", "type": "multiplechoice",
         "choices": "no\nyes", "required": True},
        {"question_name": "e", "variable": "release_health_wait", "type": "integer", "min": 0, "max": 10,
         "default": 30, "required": True},
        {"question_name": "f", "variable": "release_target", "type": "multiplechoice",
         "choices": "backend_blue\nbackend_purple", "required": True},
    ]}
    errors = "\n".join(survey_errors(survey, inputs))
    for expected in ("release_watch_secnds): not an input", "a text question cannot carry a int input",
                     "choices ['on_success', 'never']", "a bool input's choices are true and false",
                     "default 30 outside 0..10", "release_backends' default pair"):
        assert expected in errors


def test_job_templates_name_existing_playbooks_and_surveys():
    play = load_controller()
    templates = play["vars"]["bluegreen_job_templates"]
    used = set()
    for template in templates:
        assert (REPO / template["playbook"]).is_file(), template
        if "survey" in template:
            survey = json.loads((EXAMPLES / template["survey"]).read_text())
            used.add(template["survey"])
            allowed = PLAYBOOK_INPUTS.get(template["playbook"])
            if allowed is not None:
                assert {question["variable"] for question in survey["spec"]} <= allowed, template
    assert {template["playbook"] for template in templates} >= {
        "playbooks/cutover.yml", "playbooks/rollback.yml", "playbooks/persist.yml"}
    workflow = task_using(play, "awx.awx.workflow_job_template")["awx.awx.workflow_job_template"]
    assert "survey-workflow.json" in workflow["survey_spec"]
    used.add("survey-workflow.json")
    assert used == {path.name for path in SURVEYS}, "every survey file is used by controller.yml"


def test_workflow_approves_before_persist_and_cuts_over_without_persisting():
    play = load_controller()
    templates = {template["name"]: template["playbook"] for template in play["vars"]["bluegreen_job_templates"]}
    workflow = task_using(play, "awx.awx.workflow_job_template")["awx.awx.workflow_job_template"]
    inputs = release_inputs()
    assert workflow["extra_vars"] == {"release_persist": "manual"}
    assert set(workflow["extra_vars"]) <= set(inputs)

    nodes = {node["identifier"]: node for node in workflow["workflow_nodes"]}
    assert len(nodes) == len(workflow["workflow_nodes"]), "identifiers are unique"
    parents = {}
    for identifier, node in nodes.items():
        for relation, children in node.get("related", {}).items():
            for child in children:
                assert child["identifier"] in nodes, (identifier, child)
                parents.setdefault(child["identifier"], []).append((identifier, relation))
        template = node["unified_job_template"]
        if template["type"] == "job_template":
            assert template["name"] in templates, template

    def playbook(identifier):
        return templates.get(nodes[identifier]["unified_job_template"]["name"])

    persist = [identifier for identifier in nodes if playbook(identifier) == "playbooks/persist.yml"]
    assert len(persist) == 1
    # persist.yml runs only on an approval's success, and that approval only on a cutover's success.
    assert len(parents[persist[0]]) == 1
    approval, relation = parents[persist[0]][0]
    assert relation == "success_nodes"
    assert nodes[approval]["unified_job_template"]["type"] == "workflow_approval"
    assert [(playbook(parent), relation) for parent, relation in parents[approval]] == [
        ("playbooks/cutover.yml", "success_nodes")]
    # No rollback node: after the cutover, release_target (the survey's and the artifacts') would
    # send rollback.yml to the new backend (controller.yml says why).
    assert "playbooks/rollback.yml" not in [playbook(identifier) for identifier in nodes]


def module_options(fqcn):
    """The documented options of an awx.awx module, or None when awx.awx is not importable."""
    try:
        spec = importlib.util.find_spec("ansible_collections.awx.awx")
    except ImportError:
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "plugins", "modules", fqcn.split(".")[-1] + ".py")
    for node in ast.parse(pathlib.Path(path).read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "DOCUMENTATION" for target in node.targets):
            documentation = yaml.safe_load(node.value.value)
            options = documentation.get("options", {})
            for fragment in documentation.get("extends_documentation_fragment", []):
                if "auth" in fragment:  # controller_host, controller_username, ...
                    options.update(dict.fromkeys(("controller_host", "controller_username")))
            return options
    raise AssertionError("no DOCUMENTATION in %s" % path)


def unknown_options(args, options, where):
    unknown = []
    for key, value in args.items():
        if key not in options:
            unknown.append("%s.%s" % (where, key))
            continue
        suboptions = (options[key] or {}).get("suboptions")
        if suboptions and isinstance(value, dict):
            unknown += unknown_options(value, suboptions, "%s.%s" % (where, key))
        elif suboptions and isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    unknown += unknown_options(item, suboptions, "%s.%s[%d]" % (where, key, index))
    return unknown


def test_controller_passes_only_documented_awx_options():
    play = load_controller()
    checked = 0
    for task in play["tasks"]:
        fqcn = next(key for key in task if key.startswith("awx.awx."))
        options = module_options(fqcn)
        if options is None:
            pytest.skip("the awx.awx collection is not importable here")
        assert unknown_options(task[fqcn], options, fqcn) == []
        checked += 1
    assert checked == 3
