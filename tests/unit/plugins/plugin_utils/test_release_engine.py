# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the release engine (plugins/plugin_utils/release_engine.py)."""

from __future__ import annotations

import os
import re
import sys

import pytest

_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils import release_engine as release  # noqa: E402

KEY = "active"


def good_inputs(**changes):
    inputs = dict(action="cutover", target="backend_green", backends=["backend_blue", "backend_green"],
                  persist="on_success", smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:8080",
                  smoke_status_codes=[200], smoke_headers={}, smoke_bodies={}, smoke_requests=10, smoke_timeout=5,
                  watch_seconds=0, watch_interval=1, health_wait=30, max_error_rate=1.0, min_requests=20,
                  clock_tolerance=0.5, switch_lead=0, preflight_skip_servers=[])
    inputs.update(changes)
    return inputs


# ---------------------------------------------------------------- refused names

def test_refused_names_are_internal_and_old_internal_names_only():
    names = ["release_target", "release_failures", "_release_failures", "_release_anything", "release_smoke_url",
             "release_fleet_failed", "release_switched"]
    assert release.refused_names(names) == ["_release_anything", "_release_failures", "release_failures",
                                            "release_fleet_failed", "release_switched"]


def test_no_documented_input_is_refused():
    spec = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, "roles", "release", "defaults", "main.yml")
    with open(spec) as handle:
        names = [line.split(":")[0] for line in handle if line.startswith("release_")]
    assert names and release.refused_names(names) == []


def test_published_artifacts_are_neither_refused_nor_unknown():
    """An AWX workflow hands a job's set_stats artifacts to the next job as extra vars: a rollback
    job after a cutover job gets release_summary, release_switch... and must still run."""
    tasks = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, "roles", "release", "tasks")
    published = set()
    for name in os.listdir(tasks):
        with open(os.path.join(tasks, name)) as handle:
            text = handle.read()
        for block in text.split("ansible.builtin.set_stats:")[1:]:
            published.update(re.findall(r"(?m)^ {6}(release_[a-z_]+):", block.split("per_host:")[0]))
    assert {"release_summary", "release_switch", "release_outcome", "release_status"} <= published
    assert release.refused_names(published) == []
    assert release.unknown_names(published, {"main": {"options": {"release_target": {}}}}) == []


# ---------------------------------------------------------------- inputs

def test_good_inputs_have_no_errors():
    assert release.input_errors(good_inputs()) == []
    # A canary's steps as a list of numbers, or of digit strings (an AWX survey's multiselect).
    for steps in ([5, 25, 50], ["5", "25", "50"]):
        canary = good_inputs(strategy="canary", canary_steps=steps, canary_step_seconds=60)
        assert release.input_errors(canary) == []


@pytest.mark.parametrize("changes, expected", [
    (dict(smoke_url="htp://release.test/release"), "release_smoke_url"),
    (dict(smoke_url="release.test/release"), "release_smoke_url"),
    (dict(smoke_resolve="127.0.0.1:80800"), "release_smoke_resolve"),
    (dict(smoke_status_codes=[200, 999]), "release_smoke_status_codes"),
    (dict(smoke_status_codes="200"), "release_smoke_status_codes"),
    (dict(smoke_bodies={"backend_blue": "version=(blue"}), "release_smoke_bodies[backend_blue]"),
    (dict(smoke_bodies={"backend_other": "("}), "release_smoke_bodies[backend_other]"),
    (dict(smoke_bodies="version=green"), "release_smoke_bodies must be a dict"),
    (dict(smoke_headers={"bad name": "x"}), "release_smoke_headers"),
    (dict(persist="always"), "release_persist"),
    (dict(smoke_requests=0), "release_smoke_requests"),
    (dict(smoke_requests="ten"), "release_smoke_requests"),
    (dict(watch_seconds=-1), "release_watch_seconds"),
    (dict(watch_interval=0), "release_watch_interval"),
    (dict(max_error_rate=101), "release_max_error_rate"),
    (dict(min_requests=0), "release_min_requests"),
    (dict(clock_tolerance=0), "release_clock_tolerance"),
    (dict(target=""), "release_target is empty"),
    (dict(target="backend green"), "is not a backend name"),
    (dict(backends=[]), "release_backends"),
    (dict(preflight_skip_servers="green2"), "release_preflight_skip_servers"),
    (dict(drain_timeout=-1), "release_drain_timeout"),
    (dict(test_listener="127.0.0.1:99999"), "release_test_listener"),
    (dict(strategy="rolling"), "release_strategy must be bluegreen or canary"),
    (dict(strategy="canary", canary_steps=[5, 25], canary_step_seconds=0), "release_canary_step_seconds"),
    (dict(strategy="canary", canary_steps=[25, 5], canary_step_seconds=60), "release_canary_steps must rise"),
    (dict(strategy="canary", canary_steps=[5, 100], canary_step_seconds=60), "release_canary_steps must rise"),
    (dict(strategy="canary", canary_steps="5,25", canary_step_seconds=60), "release_canary_steps must be a list"),
    (dict(strategy="canary", canary_steps=["25", "5"], canary_step_seconds=60), "release_canary_steps must rise"),
    (dict(strategy="canary", canary_steps=[5], canary_step_seconds=60, action="rollback"),
     "release_strategy canary is for a cutover"),
    (dict(strategy="canary", canary_steps=[5], canary_step_seconds=60, canary_smoke_header="X User"),
     "release_canary_smoke_header"),
    (dict(strategy="canary", canary_steps=[5], canary_step_seconds=60, smoke_url="tcp://db.release.test:5432"),
     "release_strategy is canary but release_smoke_url is smoke-tested over tcp://"),
])
def test_each_bad_input_is_named(changes, expected):
    errors = release.input_errors(good_inputs(**changes))
    assert len(errors) == 1 and expected in errors[0], errors


@pytest.mark.parametrize("changes, named", [
    (dict(target="b" * 100000), "release_target is 100000 bytes"),
    (dict(smoke_headers={"X-Big": "v" * 20000}), "release_smoke_headers.X-Big is 20000 bytes"),
    (dict(given_services=[{"key": "k" * 13000, "target": "backend_green"}]), "release_services[0].key is 13000 bytes"),
])
def test_an_input_no_haproxy_command_can_carry_is_refused_without_being_quoted(changes, named):
    inputs = good_inputs(**changes)
    inputs.pop("services", None)
    errors = release.input_errors(inputs)
    assert len(errors) == 1 and errors[0].startswith(named), errors
    assert "more than the 12000" in errors[0] and len(errors[0]) < 300, errors


def test_an_input_at_the_budget_passes_the_size_check():
    assert release.input_errors(good_inputs(smoke_headers={"X-Big": "v" * 12000})) == []


def test_rollback_may_leave_the_target_to_the_engine():
    assert release.input_errors(good_inputs(action="rollback", target="")) == []


def test_an_empty_resolve_is_allowed():
    assert release.input_errors(good_inputs(smoke_resolve="")) == []


def test_a_long_bad_value_is_quoted_short():
    errors = release.input_errors(good_inputs(persist="x" * 1000))
    assert len(errors[0]) < 200


# ---------------------------------------------------------------- body regex

@pytest.mark.parametrize("backend, bodies, expected", [
    ("backend_green", {}, "version=green"),
    ("backend_green", {"backend_green": "v=2\\.0"}, "v=2\\.0"),
    ("backend_green", {"backend_green": ""}, "version=green"),
    ("blue.v2", None, "version=blue\\.v2"),
])
def test_body_regex(backend, bodies, expected):
    assert release.body_regex(backend, bodies) == expected


# ---------------------------------------------------------------- fleet verdicts

def test_fleet_reasons_name_every_failure_and_every_node_that_left():
    hostvars = {"node1": {"_release_failures": []},
                "node2": {"_release_failures": ["PRECHECK: green2 (MAINT)", "LOCK: held"]},
                "node3": {"_release_failures": []}}
    reasons = release.fleet_reasons(hostvars, ["node1", "node2", "node3"], ["node1", "node2"])
    assert reasons == ["node2: PRECHECK: green2 (MAINT)", "node2: LOCK: held", "node3: " + release.LEFT_THE_PLAY]


def test_fleet_reasons_are_empty_when_every_node_passed():
    assert release.fleet_reasons({"a": {"_release_failures": []}, "b": {}}, ["a", "b"], ["a", "b"]) == []


def node_vars(live="backend_blue", disk="backend_blue", target="backend_green", held=False, failures=()):
    return {"_release_live": live, "_release_disk": disk, "_release_target": target,
            "_release_lock_seen": {"held": held}, "_release_failures": list(failures)}


def test_already_live_only_when_every_node_runs_the_target_at_runtime_and_on_disk():
    live = node_vars(live="backend_green", disk="backend_green")
    assert release.already_live({"a": live, "b": live}, ["a", "b"], ["a", "b"]) is True
    assert release.already_live({"a": live, "b": node_vars()}, ["a", "b"], ["a", "b"]) is False
    assert release.already_live({"a": live, "b": dict(live, _release_disk="backend_blue")}, ["a", "b"], ["a", "b"]) is False
    assert release.already_live({"a": live, "b": dict(live, _release_lock_seen={"held": True})}, ["a", "b"], ["a", "b"]) is False
    assert release.already_live({"a": live, "b": live}, ["a", "b"], ["a"]) is False
    assert release.already_live({"a": dict(live, _release_failures=["READ: x"])}, ["a"], ["a"]) is False


# ---------------------------------------------------------------- outcomes

@pytest.mark.parametrize("node, outcome", [
    (dict(switched=True), "switched"),
    (dict(), "unchanged"),
    (dict(fleet_failed=True), "refused"),
    (dict(fleet_failed=True, switched=True), "not rolled back"),
    (dict(fleet_failed=True, switched=True, rolled_back=True), "rolled back"),
    (dict(failures=["SMOKE: x"], switched=True, rolled_back=True), "rolled back"),
    (dict(failures=["PRECHECK: x"]), "failed"),
    (dict(checked=True), "checked"),
    (dict(left=True, switched=True), "not rolled back"),
    (dict(left=True), "left the play"),
])
def test_node_outcome(node, outcome):
    assert release.node_outcome(node) == outcome


def switched_node(host_failures=(), rolled_back=False, persisted=True):
    node = {
        "_release_read": {"entries": {KEY: "backend_blue"}, "disk_entries": {KEY: "backend_blue"}},
        "_release_switch": {"changed": True, "runtime_entries": {KEY: "backend_green"}, "switched_at": 100.05,
                            "late_by": 0.0, "waited": 0.42, "finished": 1},
        "_release_switch_job": {"ansible_job_id": "1", "started": 1, "finished": 0},
        "_release_switched": True, "_release_rolled_back": rolled_back, "_release_failures": list(host_failures),
        "_release_target": "backend_green", "_release_live": "backend_blue", "_release_lock_taken": True,
        "_release_fleet_failed": bool(host_failures) or rolled_back,
        "_release_timings": {"precheck": 101.0, "switch": 102.5}, "_release_run": {"started": 100.0},
    }
    if persisted:
        node["_release_persist"] = {"changed": True, "value": "backend_green", "disk_value": "backend_green"}
    if rolled_back:
        node["_release_rollback"] = {"changed": True, "value": "backend_blue", "disk_value": "backend_blue",
                                     "runtime_entries": {KEY: "backend_blue"}}
    return node


def test_node_summary_comes_from_persist_and_the_switch():
    summary = release.node_summary({"n1": switched_node()}, "n1", KEY, finished=103.0)
    assert summary["outcome"] == "switched"
    assert (summary["live_runtime"], summary["live_disk"], summary["drift"]) == ("backend_green", "backend_green", False)
    assert summary["switched_at"] == 100.05
    assert (summary["late_by"], summary["waited"]) == (0.0, 0.42)
    assert summary["timings"] == {"precheck": 1.0, "switch": 2.5, "finished": 3.0}
    assert summary["failures"] == []


def test_node_summary_and_the_fleet_say_what_the_old_version_still_holds():
    drained = switched_node()
    drained["_release_drain"] = {KEY: {"backend": "backend_blue", "sessions_left": 0, "shut_down": 2, "waited": 30.0,
                                       "servers": {"blue1": 0}, "attempts": 61}}
    holding = switched_node()
    holding["_release_drain"] = {KEY: {"backend": "backend_blue", "sessions_left": 1, "shut_down": 0, "waited": 30.0}}
    unread = switched_node()
    unread["_release_drain"] = {KEY: {"backend": "backend_blue", "error": "Permission denied"}}
    hostvars = {"n1": drained, "n2": holding, "n3": unread, "n4": switched_node()}
    summary = dict((host, release.node_summary(hostvars, host, KEY)) for host in hostvars)
    assert summary["n1"]["drain"] == {"backend": "backend_blue", "sessions_left": 0, "shut_down": 2, "waited": 30.0}
    assert summary["n4"]["drain"] is None  # no drain asked (release_drain_timeout 0)
    assert release.drain_summary(summary) == (
        "the previous version still holds sessions: n2: backend_blue holds 1 session; "
        "n3: backend_blue not read (Permission denied)")
    assert release.drain_summary({"n1": summary["n1"], "n4": summary["n4"]}) == \
        "the previous version holds no session on any node (2 closed by release_drain_shutdown)"
    assert release.drain_summary({"n4": summary["n4"]}) is None


def test_node_summary_lists_every_canary_step_in_order():
    node = switched_node()
    windows = [{KEY: {"weight": weight, "backend": "backend_green", "requests": 40, "errors": 0, "error_rate": 0.0,
                      "verdict": "passed", "started": 1.0, "ended": 5.0}} for weight in (5, 25)]
    node["_release_canary_steps"] = windows
    summary = release.node_summary({"n1": node}, "n1", KEY)
    assert [(step["weight"], step["verdict"]) for step in summary["canary_steps"]] == [(5, "passed"), (25, "passed")]
    assert release.node_summary({"n1": switched_node()}, "n1", KEY)["canary_steps"] == []


def test_node_summary_with_manual_persistence_shows_the_drift_without_failing():
    summary = release.node_summary({"n1": switched_node(persisted=False)}, "n1", KEY, persist="manual")
    assert (summary["live_runtime"], summary["live_disk"], summary["drift"]) == ("backend_green", "backend_blue", True)
    assert summary["failures"] == []


def test_node_summary_flags_a_broken_invariant():
    node = switched_node()
    node["_release_persist"] = {"skipped": True}
    summary = release.node_summary({"n1": node}, "n1", KEY, persist="on_success")
    assert summary["failures"] and summary["failures"][0].startswith("INVARIANT")


def test_a_node_lost_after_its_switch_is_reported_not_rolled_back_with_its_lock():
    hostvars = {"node1": {"_release_node": {"outcome": "rolled back", "live_runtime": "backend_blue", "failures": []}},
                "node2": switched_node(persisted=False)}
    summary = release.fleet_summary(hostvars, ["node1", "node2"], ["node1"], KEY)
    assert summary["node2"]["outcome"] == "not rolled back"
    assert summary["node2"]["note"] == "not rolled back: last seen live value backend_green; its lock is kept"
    assert release.run_outcome(summary) == "split"
    message = release.run_message(summary, "cutover", "backend_green", "backend_blue")
    assert "the fleet is split" in message
    assert "node2: not rolled back: last seen live value backend_green; its lock is kept" in message
    assert "every node was rolled back" not in message


def test_a_node_lost_while_its_armed_switch_ran_is_not_claimed_either_way():
    node = switched_node(persisted=False)
    node["_release_switch"] = {"unreachable": True, "msg": "lost"}
    summary = release.fleet_summary({"n2": node}, ["n2"], [], KEY)
    assert summary["n2"]["outcome"] == "not rolled back"
    assert "was armed and no result came back" in summary["n2"]["note"]


def test_a_node_lost_before_the_switch_left_the_play():
    node = {"_release_read": {"entries": {KEY: "backend_blue"}}, "_release_lock_taken": False}
    summary = release.fleet_summary({"n2": node}, ["n2"], [], KEY)
    assert summary["n2"]["outcome"] == "left the play"
    assert "last seen live value backend_blue" in summary["n2"]["note"]


@pytest.mark.parametrize("outcomes, lives, expected", [
    (["switched", "switched"], ["g", "g"], "succeeded"),
    (["switched", "unchanged"], ["g", "g"], "succeeded"),
    (["unchanged", "unchanged"], ["b", "b"], "unchanged"),
    (["checked"], ["b"], "checked"),
    (["rolled back", "rolled back"], ["b", "b"], "failed"),
    (["refused", "failed"], ["b", "b"], "failed"),
    (["rolled back", "failed"], ["b", "g"], "split"),
])
def test_run_outcome(outcomes, lives, expected):
    summary = dict(("n%d" % i, dict(outcome=o, live_runtime=live, failures=["x"] if o in ("failed", "rolled back") else []))
                   for i, (o, live) in enumerate(zip(outcomes, lives)))
    assert release.run_outcome(summary) == expected


def test_run_message_claims_a_full_rollback_only_when_every_node_rolled_back():
    summary = {"n1": dict(outcome="rolled back", live_runtime="b", failures=[], switched=True),
               "n2": dict(outcome="rolled back", live_runtime="b", failures=["SMOKE: bad"], switched=True)}
    message = release.run_message(summary, "cutover", "g", "b")
    assert message == "cutover to g failed; every node was rolled back to b: n2: SMOKE: bad"
    summary["n1"]["outcome"] = "failed"
    summary["n1"]["failures"] = ["ROLLBACK: socket gone"]
    message = release.run_message(summary, "cutover", "g", "b")
    assert "every node was rolled back" not in message and "n1 failed" in message


def test_run_message_says_nothing_was_switched_for_a_refusal():
    summary = {"n1": dict(outcome="refused", live_runtime="b", failures=[]),
               "n2": dict(outcome="failed", live_runtime="b", failures=["PRECHECK: green2 (MAINT)"])}
    assert release.run_message(summary, "cutover", "g", "b") == \
        "cutover to g failed, nothing was switched: n2: PRECHECK: green2 (MAINT)"


# ---------------------------------------------------------------- timing

def test_switch_spread():
    summary = {"a": {"switched_at": 10.00}, "b": {"switched_at": 10.042}, "c": {"switched_at": None}}
    assert release.switch_spread(summary) == dict(nodes=2, first=10.0, last=10.042, spread_ms=42.0)
    assert release.switch_spread({})["spread_ms"] is None


@pytest.mark.parametrize("hosts, forks, cores, module_seconds, expected", [
    # Nothing measured (no lock): a module run is assumed to cost 0.3 s.
    (2, 5, 2, 0, 1.4),
    # forks <= cores: 0.5 + batches x one run x 2 (arming) + one run (the last armed modules start).
    (2, 2, 2, 1.0, 3.5), (4, 2, 2, 1.0, 5.5), (10, 2, 2, 1.0, 11.5),
    # forks > cores: every node at once beyond the cores adds 1/8 per core: 5 on 2 cores 1.1875x.
    (10, 5, 2, 2.0, 12.0), (20, 5, 2, 1.0, 11.0), (10, 10, 2, 2.0, 8.5), (20, 20, 2, 4.0, 21.5),
    # Only the nodes there run at once: 3 nodes at forks 10 on 1 core is 3 at once.
    (3, 10, 1, 1.0, 4.0),
    # forks 0 or empty means Ansible's default, 5.
    (10, 0, 2, 2.0, 12.0), (10, None, 2, 2.0, 12.0),
])
def test_switch_lead_from_one_batch_with_headroom_above_the_cores(hosts, forks, cores, module_seconds, expected):
    assert release.switch_lead(hosts, forks, 0, module_seconds, cores=cores) == expected


def test_switch_lead_from_the_lock_phase_is_one_batch_of_it_per_batch():
    """The PREPARE phase already holds every batch: it is divided by the batches, not multiplied."""
    # 10 nodes at forks 5 prepared in 8 s: 4 s a batch; the first armed in 4 s, the second in
    # 4 x 1.8 (armed while the first starts its modules), + one module start (3 s), + 0.5 s.
    assert release.switch_lead(10, 5, 0, 3.0, cores=2, phase_seconds=8.0) == 14.7
    # One batch: the phase is the batch (3.7 s); measured at 10 forks on 2 cores, no headroom on
    # top, and no module start after it: the batch's plain runs start within it.
    assert release.switch_lead(10, 10, 0, 3.0, cores=2, phase_seconds=3.7) == 4.2
    assert release.switch_lead(10, 10, 0, 3.0, cores=64, phase_seconds=3.7) == 4.2
    # The later batches cost more than the first: 20 s of phase arm in 20 s as one batch, in
    # 5 x (1 + 3 x 1.8) = 32 s as four, and then their async modules start.
    assert release.switch_lead(20, 20, 0, 0, cores=64, phase_seconds=20.0) == 20.0 + release.LEAD_MARGIN
    for forks, arming in ((10, 10.0 * (1 + release.LATER_BATCH_ARM_COST)),
                          (5, 5.0 * (1 + 3 * release.LATER_BATCH_ARM_COST))):
        lead = release.switch_lead(20, forks, 0, 0, cores=64, phase_seconds=20.0)
        assert lead - release.LEAD_MARGIN - release.MIN_MODULE_SECONDS == pytest.approx(arming, abs=0.06)


def test_switch_lead_of_one_batch_is_its_prepare_phase():
    """A fleet in one batch of forks runs its step as a plain module run that waits for the
    instant: measured, 10 nodes at forks 10 were every one ready 2.6 s after the instant was
    chosen, against a PREPARE phase of 3.35 s (module runs of 2.9-3.4 s side by side on 2 cores)."""
    runs = [dict(started=100.0 + index * 0.03, seconds=3.35 - index * 0.03, work=0.05) for index in range(10)]
    lead = release.switch_lead(10, 10, 0, runs=runs)
    assert lead == pytest.approx(release.LEAD_MARGIN + 3.3, abs=0.06)
    # Ready 2.6 s after the choice: every node waits about 1.2 s, none is late.
    assert 2.6 < lead < 2.6 + 2.0
    # Two batches keep the async step's model: arming both, then one module start.
    assert release.switch_lead(10, 5, 0, runs=runs) > lead + 3.3


def test_switch_lead_leaves_one_module_start_after_the_last_arming():
    """What the lead holds beyond the arming is one module run (the last batch's modules start)
    and the margin: measured, 10 nodes at forks 5 waited 2.6-2.9 s with two runs."""
    runs = [dict(started=100.0 + index * 0.1, seconds=1.5, work=0.0) for index in range(10)]
    module_seconds, phase_seconds = release.arming_phase(runs, 2)
    assert (module_seconds, phase_seconds) == (1.5, pytest.approx(2.4))
    lead = release.switch_lead(10, 5, 0, runs=runs)
    assert lead == pytest.approx(release.LEAD_MARGIN + 1.2 * (1 + release.LATER_BATCH_ARM_COST) + 1.5, abs=0.06)


def test_switch_lead_grows_with_the_batches_not_their_square():
    lead = dict((hosts, release.switch_lead(hosts, 5, 0, 2.0, cores=2) - release.LEAD_MARGIN - 2.0)
                for hosts in (5, 10, 20))
    # (the lead is rounded to 0.1 s)
    assert lead[10] == pytest.approx(2 * lead[5], abs=0.2) and lead[20] == pytest.approx(4 * lead[5], abs=0.4)


def test_switch_lead_has_headroom_only_when_forks_exceed_the_cores():
    assert release.switch_lead(10, 10, 0, 1.0, cores=16) == release.switch_lead(10, 10, 0, 1.0, cores=10) == 3.5
    assert release.switch_lead(10, 10, 0, 1.0, cores=1) > release.switch_lead(10, 10, 0, 1.0, cores=2) \
        > release.switch_lead(10, 10, 0, 1.0, cores=8) > 3.5


def test_switch_lead_reads_the_controllers_cores_by_default(monkeypatch):
    monkeypatch.setattr(release.os, "cpu_count", lambda: 2)
    assert release.switch_lead(10, 10, 0, 1.0) == release.switch_lead(10, 10, 0, 1.0, cores=2) == 4.5
    monkeypatch.setattr(release.os, "cpu_count", lambda: None)  # unknown: one core
    assert release.switch_lead(10, 10, 0, 1.0) == release.switch_lead(10, 10, 0, 1.0, cores=1)


def test_switch_lead_configured_wins():
    assert release.switch_lead(20, 5, 7.5, 3.0, cores=2, phase_seconds=30) == 7.5
    assert release.switch_lead(20, 5, "0.25", 3.0, cores=2) == 0.25
    assert release.switch_lead(20, 5, 0, 3.0, cores=2) == release.switch_lead(20, 5, "", 3.0, cores=2)


# -- issue 13: the clock bounded by its own error, the spread, partial fleets, unknown inputs --------

@pytest.mark.parametrize("clock, refused", [
    ({"offset": 0.1, "error": 0.01}, False),
    ({"offset": -0.45, "error": 0.05}, False),
    # Within the tolerance as measured, but not once the measurement's error is added.
    ({"offset": 0.45, "error": 0.06}, True),
    ({"offset": -1.0, "error": 0.004}, True),
    ({"offset": 0.0, "error": 0.6}, True),
    ({"offset": None, "error": None, "problem": "date: not found"}, True),
    ({}, True),
])
def test_clock_is_refused_when_offset_plus_error_exceeds_the_tolerance(clock, refused):
    assert bool(release.clock_offset(clock, 0.5)) is refused


def test_clock_refusal_names_the_offset_and_the_error():
    message = release.clock_offset({"offset": 1.0021, "error": 0.0042}, 0.5)
    assert "1.002s ahead of" in message and "0.004s" in message and "1.006s" in message and "0.5" in message
    assert "behind" in release.clock_offset({"offset": -3.0, "error": 0.01}, 0.5)
    assert "date: not found" in release.clock_offset({"offset": None, "error": None, "problem": "date: not found"}, 0.5)
    assert "NTP" in message and "precisely" not in message


def test_a_clock_that_reads_within_the_tolerance_but_was_measured_too_slowly_is_not_blamed_on_ntp():
    # The CI finding: a loopback node on the controller's own clock, read 0.174 s off within 0.401 s.
    message = release.clock_offset({"offset": 0.174, "error": 0.401, "readings": 12}, 0.5)
    assert message.startswith("could not be measured precisely enough: it reads 0.174s ahead of the controller's")
    assert "best of 12 readings is only good to within 0.401s" in message and "0.575s off" in message
    assert "NTP" not in message and "raise release_clock_tolerance" in message
    # Off by more than the tolerance as read: its time is wrong, whatever the error.
    assert "NTP" in release.clock_offset({"offset": -0.7, "error": 0.3}, 0.5)


def test_late_nodes_are_those_beyond_the_max_spread_after_the_first():
    times = {"a": 100.0, "b": 100.4, "c": 107.5, "d": None}
    assert release.late_nodes(times, 1.0) == {"c": 7.5}
    assert release.late_nodes(times, 10) == {}
    assert release.late_nodes({"a": 100.0}, 0.1) == {}


def test_spread_failures_fail_only_the_late_node():
    hostvars = {"a": {"_release_switch": {"switched_at": 100.0}}, "b": {"_release_switch": {"switched_at": 100.2}},
                "c": {"_release_switch": {"switched_at": 107.5}}, "d": {"_release_switch": {}}}
    hosts = ["a", "b", "c", "d"]
    (failure,) = release.spread_failures(hostvars, "c", hosts, 1.0)
    assert "7.500s after a" in failure and "release_max_spread 1.0s" in failure
    assert release.spread_failures(hostvars, "a", hosts, 1.0) == []
    assert release.spread_failures(hostvars, "d", hosts, 1.0) == []
    assert release.spread_failures(hostvars, "c", hosts, 8) == []


def test_switch_spread_warns_in_words_when_above_the_max():
    summary = {"a": {"switched_at": 100.0}, "b": {"switched_at": 107.5}}
    warned = release.switch_spread(summary, 1.0, "warn")
    assert warned["late"] == {"b": 7.5} and warned["max_spread_ms"] == 1000.0
    assert "b switched 7.500s after the first node" in warned["warning"] and "warn" in warned["warning"]
    assert "rollback" in release.switch_spread(summary, 1.0, "rollback")["warning"]
    assert release.switch_spread(summary, 10.0, "warn")["warning"] is None
    assert "warning" not in release.switch_spread(summary)


def test_spread_inputs_are_checked():
    assert release.input_errors(good_inputs(max_spread=1.0, spread_action="warn")) == []
    assert "release_max_spread" in " ".join(release.input_errors(good_inputs(max_spread=0, spread_action="warn")))
    assert "release_spread_action" in " ".join(release.input_errors(good_inputs(max_spread=1, spread_action="fail")))


def test_partial_fleet_is_refused_unless_allowed():
    full = release.partial_fleet(["a", "b", "c"], ["a", "b", "c"], False)
    assert full["partial"] is False and full["message"] == "" and full["summary"] == ""
    limited = release.partial_fleet(["a", "b", "c"], ["a"], False)
    assert limited["hosts_missing"] == ["b", "c"] and "release_allow_partial=true" in limited["message"]
    assert "2 of the 3 hosts" in limited["message"]
    allowed = release.partial_fleet(["a", "b", "c"], ["a"], True)
    assert allowed["message"] == "" and allowed["summary"].startswith("PARTIAL RUN") and "b, c" in allowed["summary"]


def _argument_specs():
    import yaml
    path = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, "roles", "release", "meta", "argument_specs.yml")
    with open(path) as handle:
        return yaml.safe_load(handle)


def test_unknown_inputs_are_named_with_the_closest_known_name():
    names = ["release_watch_secnds", "release_max_eror_rate", "release_target", "_release_failures",
             "release_failures", "release_zzz_qqq"]
    unknown = release.unknown_names(names, _argument_specs())
    assert unknown == [dict(name="release_max_eror_rate", suggestion="release_max_error_rate"),
                       dict(name="release_watch_secnds", suggestion="release_watch_seconds"),
                       dict(name="release_zzz_qqq", suggestion=None)]
    message = release.unknown_names_message(unknown)
    assert "release_watch_secnds (did you mean `release_watch_seconds`?)" in message
    assert "release_max_eror_rate (did you mean `release_max_error_rate`?)" in message
    assert "Nothing was read or changed" in message
    assert release.unknown_names_message([]) == ""


def test_every_documented_and_playbook_name_is_known():
    """Every default, every name the README's inputs table and the playbooks use, and the published artifacts."""
    root = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4)
    names = set()
    with open(os.path.join(root, "roles", "release", "defaults", "main.yml")) as handle:
        names.update(line.split(":")[0] for line in handle if line.startswith("release_"))
    for folder in ("playbooks", os.path.join("roles", "release", "tasks")):
        for name in os.listdir(os.path.join(root, folder)):
            if name.endswith(".yml"):
                with open(os.path.join(root, folder, name)) as handle:
                    # Variables read as `release_x` (not filters: `| bluegreen.haproxy.release_x`).
                    code = "\n".join(line for line in handle if not line.lstrip().startswith("#"))
                    names.update(re.findall(r"(?<![._\w])(release_[a-z_]+)(?![a-z_(])", code))
    with open(os.path.join(root, "README.md")) as handle:
        names.update(re.findall(r"^\| `(release_[a-z_]+)`", handle.read(), re.M))
    names.update(["release_outcome", "release_fleet", "release_partial"])
    assert "release_hosts" in names and "release_max_spread" in names
    assert release.unknown_names(sorted(names), _argument_specs()) == []


def test_controller_names_this_process_when_not_in_a_worker():
    facts = release.controller()
    assert facts["controller"] and facts["controller_pid"] == os.getpid()


# ---------------------------------------------------------------- status

def test_a_held_lock_explains_the_drift_it_left():
    info = {"entries": {KEY: "backend_green"}, "disk_entries": {KEY: "backend_blue"}, "drift_keys": [KEY]}
    lock = {"held": True, "age": 30.0, "holder": {"owner": "job-7", "controller": "ctl", "controller_pid": 42,
                                                  "phase": "switching", "key": KEY, "previous": "backend_blue",
                                                  "target": "backend_green"}}
    status = release.node_status(info, KEY, lock, [{"item": "backend_blue", "healthy": True, "total": 2}])
    assert status["drift"] is True and status["lock"]["held"] is True
    assert "explained by the release lock" in status["drift_reason"]
    assert "release_lock_force=true" in status["drift_reason"]
    assert status["backends"]["backend_blue"]["healthy"] is True


def test_drift_without_a_lock_is_not_explained():
    info = {"entries": {KEY: "backend_green"}, "disk_entries": {KEY: "backend_blue"}}
    status = release.node_status(info, KEY, {"held": False, "holder": None}, [])
    assert status["drift"] is True and status["drift_reason"].startswith("not explained")
    assert release.node_status({"entries": {KEY: "b"}, "disk_entries": {KEY: "b"}}, KEY, {}, [])["drift"] is False


def test_status_shows_a_running_canary_and_not_a_finished_one():
    running = {"entries": {KEY: "backend_blue", KEY + ".canary": "backend_green", KEY + ".weight": "25"},
               "disk_entries": {KEY: "backend_blue"}, "drift_keys": [KEY + ".canary", KEY + ".weight"]}
    status = release.node_status(running, KEY, {}, [])
    assert status["canary"] == {"backend": "backend_green", "weight": 25}
    # The canary's keys are runtime only by design: not the key's drift.
    assert status["drift"] is False and status["drift_keys"] == []
    ended = dict(running, entries=dict(running["entries"], **{KEY + ".weight": "0"}))
    assert release.node_status(ended, KEY, {}, [])["canary"] is None


def test_fleet_status_flags_nodes_that_disagree():
    statuses = {"a": {"runtime": "backend_green", "disk": "backend_blue"},
                "b": {"runtime": "backend_blue", "disk": "backend_blue"}}
    fleet = release.fleet_status(statuses, ["a", "b"], ["a", "b"])
    assert fleet["consistent"] is False and "split" in fleet["message"]
    assert fleet["runtime"] == {"backend_blue": ["b"], "backend_green": ["a"]}
    same = release.fleet_status({"a": {"runtime": "x"}, "b": {"runtime": "x"}}, ["a", "b"], ["a", "b"])
    assert same["consistent"] is True


# ---------------------------------------------------------------- the report says what was read back

HAND = "backend_hand"


def read_by_hand_node():
    """A node whose key a hand moved between READ and SWITCH: the compare-and-set refused (haproxy_map
    returns the values live at the refusal, `refused`), nothing switched there."""
    node = switched_node(host_failures=["SWITCH: refusing to change active: its live value is 'backend_hand'"],
                         persisted=False)
    node["_release_switch"] = {"failed": True, "msg": "refusing to change active", "map": "/m", "changed": False,
                               "refused": True, "runtime_changed": False, "runtime_entries": {KEY: HAND},
                               "previous": {KEY: HAND}, "switched_at": None, "late_by": 0.0}
    node["_release_switched"] = False
    return node


def test_a_refused_switch_reports_the_value_live_at_the_refusal_not_reads():
    summary = release.node_summary({"n2": read_by_hand_node()}, "n2", KEY)
    assert (summary["live_runtime"], summary["live_known"], summary["live_unknown_reason"]) == (HAND, True, None)
    assert (summary["live_disk"], summary["drift"], summary["outcome"]) == ("backend_blue", True, "failed")
    assert summary["previous"] == "backend_blue"  # what READ saw, as the switch's compare-and-set source


def test_a_fleet_where_a_hand_kept_one_node_is_split_and_says_who_runs_what():
    n1 = release.node_summary({"n1": switched_node(host_failures=[], rolled_back=True, persisted=False)}, "n1", KEY)
    n2 = release.node_summary({"n2": read_by_hand_node()}, "n2", KEY)
    summary = {"n1": n1, "n2": n2}
    assert n1["live_runtime"] == "backend_blue" and n1["outcome"] == "rolled back"
    assert release.run_outcome(summary) == "split"
    assert release.split_keys(summary) == {None: {"backend_blue": ["n1"], HAND: ["n2"]}}
    message = release.run_message(summary, "cutover", "backend_green", "backend_blue")
    assert "the fleet is split: n1 rolled back (live backend_blue), n2 failed (live backend_hand)" in message
    assert "every node was rolled back" not in message


def test_a_node_that_cannot_be_read_is_unknown_and_no_second_value():
    unread = {"_release_read": {"failed": True, "msg": "cannot connect to /run/haproxy/missing.sock"},
              "_release_failures": ["READ: cannot connect to /run/haproxy/missing.sock"],
              "_release_fleet_failed": True, "_release_run": {"started": 0}}
    n2 = release.node_summary({"n2": unread}, "n2", KEY)
    assert n2["live_runtime"] is None and n2["live_known"] is False and n2["drift"] is None
    assert n2["live_unknown_reason"] == "READ: cannot connect to /run/haproxy/missing.sock"
    n1 = release.node_summary({"n1": {"_release_read": read_result({KEY: "backend_blue"}), "_release_failures": [],
                                      "_release_fleet_failed": True}}, "n1", KEY)
    assert n1["live_known"] is True and n1["outcome"] == "refused"
    summary = {"n1": n1, "n2": n2}
    assert release.split_keys(summary) == {}
    assert release.run_outcome(summary) == "failed"
    assert release.run_message(summary, "cutover", "g", "b") == (
        "cutover to g failed, nothing was switched; live value unknown on n2: "
        "n2: READ: cannot connect to /run/haproxy/missing.sock")


def test_a_read_that_failed_on_its_lock_still_reports_the_map_it_read():
    node = {"_release_read": dict(read_result({KEY: "backend_blue"}), failed=True,
                                  msg="cannot read release lock /m.lock: [Errno 21] Is a directory"),
            "_release_failures": ["READ: cannot read release lock /m.lock: [Errno 21] Is a directory"],
            "_release_fleet_failed": True}
    summary = release.node_summary({"n2": node}, "n2", KEY)
    assert (summary["live_runtime"], summary["live_known"], summary["drift"]) == ("backend_blue", True, False)


@pytest.mark.parametrize("switch, known, live", [
    # The reply to the switch was lost and the read-back failed too: never READ's value.
    ({"failed": True, "msg": "reply lost", "map": "/m", "changed": True, "runtime_unknown": True,
      "runtime_entries": None, "runtime_changed": None}, False, None),
    # No module result came back at all (the async job was lost): it may have switched.
    ({"failed": True, "msg": "async task did not complete within the requested time"}, False, None),
    # The module failed before it changed anything (its plan): READ's value still stands.
    ({"failed": True, "msg": "cannot connect to /s", "map": "/m", "changed": False}, True, "backend_blue"),
])
def test_a_switch_that_read_nothing_back_leaves_the_value_unknown_only_if_it_may_have_moved(switch, known, live):
    node = {"_release_read": read_result({KEY: "backend_blue"}), "_release_switch": switch,
            "_release_failures": ["SWITCH: " + switch["msg"]]}
    summary = release.node_summary({"n1": node}, "n1", KEY)
    assert (summary["live_known"], summary["live_runtime"]) == (known, live)
    if not known:
        assert summary["live_unknown_reason"] == "SWITCH: " + switch["msg"]
        # A later read (the rollback's read-back) knows again.
        node["_release_rollback"] = {"changed": True, "runtime_entries": {KEY: "backend_blue"},
                                     "disk_value": "backend_blue", "key": KEY}
        again = release.node_summary({"n1": node}, "n1", KEY)
        assert (again["live_known"], again["live_runtime"]) == (True, "backend_blue")


def test_a_watch_verify_read_is_newer_than_the_switch():
    node = switched_node(persisted=False)
    node["_release_watch_verify"] = read_result({KEY: "backend_blue"})  # a reload put the file's value back
    summary = release.node_summary({"n1": node}, "n1", KEY, persist="manual")
    assert summary["live_runtime"] == "backend_blue"


def test_split_counts_only_keys_read_back_on_two_nodes():
    known = dict(live_runtime={"shop.test": "shop_green", "api.test": "api_blue"}, live_known=True,
                 live_unknown_reason={"shop.test": None, "api.test": None})
    partly = dict(live_runtime={"shop.test": None, "api.test": "api_blue"}, live_known=False,
                  live_unknown_reason={"shop.test": "SWITCH: lost", "api.test": None})
    assert release.split_keys({"a": known, "b": partly}) == {}
    partly["live_runtime"]["api.test"] = "api_green"
    assert release.split_keys({"a": known, "b": partly}) == {"api.test": {"api_blue": ["a"], "api_green": ["b"]}}
    # An absent key is a value read back, not an unknown one.
    absent = dict(known, live_runtime={"shop.test": "shop_green", "api.test": None})
    assert release.split_keys({"a": known, "c": absent}) == {"api.test": {"api_blue": ["a"], "absent": ["c"]}}


def test_status_of_a_node_that_cannot_be_read_is_unknown_with_the_reason():
    failed = {"failed": True, "msg": "cannot connect to /run/haproxy/missing.sock: No such file or directory"}
    status = release.node_status(failed, KEY, {}, [])
    assert (status["runtime"], status["runtime_known"], status["drift"]) == (None, False, None)
    assert status["unknown_reason"] == failed["msg"] and status["lock"]["error"] == failed["msg"]
    # The map was read, the lock was not: the value stands.
    lock_failed = dict(failed, msg="cannot read release lock /m.lock", entries={KEY: "b"}, disk_entries={KEY: "b"})
    assert release.node_status(lock_failed, KEY, {}, [])["runtime_known"] is True
    statuses = {"a": release.node_status({"entries": {KEY: "b"}, "disk_entries": {KEY: "b"}}, KEY, {}, []),
                "c": release.node_status({"entries": {}, "disk_entries": {}}, KEY, {}, []), "b": status}
    assert statuses["c"]["runtime_known"] is True and statuses["c"]["runtime"] is None  # absent, read back
    fleet = release.fleet_status({"a": statuses["a"], "b": status}, ["a", "b"], ["a", "b"])
    assert fleet["runtime"] == {"b": ["a"]} and fleet["unknown"] == {"b": failed["msg"]}
    assert fleet["consistent"] is False
    assert "split" not in fleet["message"] and "live value unknown on b (cannot connect" in fleet["message"]
    assert release.fleet_status(statuses, ["a", "b", "c"], ["a", "b", "c"])["message"].startswith("the fleet is split")


def test_every_engine_step_is_an_engine_function_of_its_own_name():
    for name, function in release.STEPS.items():
        assert function is getattr(release, name)
    assert release.STEPS["input_failures"] is release.input_failures


def test_every_engine_step_is_called_by_the_role_or_a_playbook():
    """The filter's steps are the engine's interface to YAML: a step nothing calls is dead code."""
    import glob
    root = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4)
    text = ""
    for path in glob.glob(os.path.join(root, "roles", "*", "tasks", "*.yml")) + glob.glob(os.path.join(root, "playbooks", "*.yml")):
        with open(path) as handle:
            text += handle.read()
    called = set(re.findall(r"_release\(\s*'(\w+)'", text))
    assert sorted(set(release.STEPS) - called) == []


# -- several services in one release ----------------------------------------------------------

DEFAULTS = dict(map_key="active", target="backend_green", expected_current="", backends=["backend_blue", "backend_green"],
                smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:80", smoke_headers={},
                smoke_status_codes=[200], smoke_bodies={}, min_healthy="")
SHOP = dict(key="shop.test", target="shop_green", backends=["shop_blue", "shop_green"], smoke_url="http://shop.test/")
API = dict(key="api.test", target="api_green", backends=["api_blue", "api_green"], smoke_url="http://api.test/")


def test_services_without_release_services_is_the_single_key():
    (only,) = release.services([], DEFAULTS)
    assert only["key"] == "active" and only["target"] == "backend_green" and only["smoke_resolve"] == "127.0.0.1:80"


def test_services_inherit_smoke_options_but_not_the_single_key_target():
    shop, api = release.services([SHOP, dict(key="api.test", smoke_url="http://api.test/")], DEFAULTS)
    assert shop["target"] == "shop_green" and shop["smoke_resolve"] == "127.0.0.1:80"
    assert shop["smoke_status_codes"] == [200] and shop["backends"] == ["shop_blue", "shop_green"]
    assert api["target"] == "" and api["expected_current"] == ""
    assert api["backends"] == ["backend_blue", "backend_green"]


@pytest.mark.parametrize("given, expected", [
    ("shop.test", "release_services must be a list"),
    (["shop.test"], "release_services[0] must be a dict"),
    ([dict(SHOP, colour="x")], "release_services[0] has unknown fields colour"),
    ([dict(SHOP, key="shop test")], "release_services[0].key must be a map key"),
    ([SHOP, dict(SHOP)], "release_services: the key shop.test is listed twice"),
    ([dict(SHOP, target="")], "release_services[shop.test].target is empty"),
    ([dict(SHOP, smoke_url="ftp://shop.test/")], "release_services[shop.test].smoke_url"),
    ([dict(SHOP, smoke_bodies={"shop_green": "("})], "release_services[shop.test].smoke_bodies[shop_green]"),
])
def test_input_errors_name_the_service_and_field(given, expected):
    inputs = dict(good_inputs(), given_services=given, services=release.services(given, DEFAULTS))
    errors = release.input_errors(inputs)
    assert any(expected in error for error in errors), errors


def test_input_errors_accept_good_services():
    given = [SHOP, API]
    assert release.input_errors(dict(good_inputs(), given_services=given,
                                     services=release.services(given, DEFAULTS))) == []


def read_result(runtime, disk=None):
    return {"entries": runtime, "disk_entries": runtime if disk is None else disk}


def test_read_plan_for_a_cutover_and_a_rollback():
    services = release.services([SHOP, dict(API, target="")], DEFAULTS)
    lives = {"shop.test": "shop_blue", "api.test": "api_green"}
    plan = release.read_plan(read_result(lives), {}, services, {"action": "rollback", "owner": "me"})
    assert plan["lives"] == lives and plan["disks"] == lives
    # An explicit target wins; rollback picks the other backend of a service without one.
    assert plan["targets"] == {"shop.test": "shop_green", "api.test": "api_blue"}
    assert plan["currents"] == lives and plan["recovery"] == {}


def test_read_plan_for_persist_targets_the_live_values_and_accepts_drift():
    services = release.services([dict(SHOP, target=""), dict(API, target="api_green")], DEFAULTS)
    lives = {"shop.test": "shop_green", "api.test": "api_green"}
    disks = {"shop.test": "shop_blue", "api.test": "api_blue"}
    plan = release.read_plan(read_result(lives, disks), {}, services, {"action": "persist", "owner": "me"})
    # Persist writes what is live; release_target (api's target) only names what must be live.
    assert plan["targets"] == lives and plan["currents"] == lives and plan["persist"] is True
    assert release.precheck_errors(plan, [lives], "maps/host.map") == []
    # The drift a cutover refuses is what persist is for; a live value other than the target is refused.
    cutover = release.read_plan(read_result(lives, disks), {}, release.services([SHOP, API], DEFAULTS),
                                {"action": "cutover", "owner": "me"})
    assert "drift" in release.precheck_errors(cutover, [lives], "maps/host.map")[0]
    elsewhere = dict(lives, **{"api.test": "api_blue"})
    refused = release.read_plan(read_result(elsewhere, disks), {}, services, {"action": "persist", "owner": "me"})
    assert release.precheck_errors(refused, [elsewhere], "maps/host.map") == [
        "refusing to persist: api.test is api_blue here but release_target is api_green; nothing was written"]


def test_read_plan_recovers_every_key_from_a_dead_multi_service_run():
    services = release.services([dict(SHOP, target=""), dict(API, target="")], DEFAULTS)
    holder = {"owner": "dead-run", "details": {"entries": release.lock_entries(
        {"shop.test": "shop_blue", "api.test": "api_blue"}, {"shop.test": "shop_green", "api.test": "api_green"})}}
    lives = {"shop.test": "shop_green", "api.test": "api_green"}
    disks = {"shop.test": "shop_blue", "api.test": "api_blue"}
    run = {"action": "rollback", "owner": "me"}
    plan = release.read_plan(read_result(lives, disks), {"held": True, "holder": holder}, services, run, lock_force=True)
    assert plan["targets"] == disks and plan["recovery_previous"] == disks
    # The dead run explains the drift: PRECHECK lets the recovery through.
    assert release.precheck_errors(plan, [lives], "/m") == []
    # Without force the record is not used, and the drift stops the run.
    plan = release.read_plan(read_result(lives, disks), {"held": True, "holder": holder}, services, run)
    assert any(error.startswith("drift: shop.test") for error in release.precheck_errors(plan, [lives], "/m"))


def test_precheck_services_prove_each_target_and_its_current_path():
    shop = dict(SHOP, smoke_resolve="127.0.0.1:8080", smoke_headers={"X-Probe": "1"}, smoke_status_codes=[200, 204],
                smoke_bodies={"shop_blue": "old shop"}, min_healthy="50%")
    targets = {"shop.test": "shop_green", "api.test": "api_green"}
    currents = {"shop.test": "shop_blue", "api.test": "api_green"}
    checked = release.precheck_services([shop, API], targets, currents, lives=currents)
    assert checked[0] == dict(key="shop.test", backend="shop_green", url="http://shop.test/", resolve="127.0.0.1:8080", send=None,
                              headers={"X-Probe": "1"}, status_code=[200, 204], body_regex="version=shop_green",
                              current_body_regex="old shop", min_healthy="50%", preflight=True, current=True)
    # api.test already runs its target: its health is still checked, nothing else.
    assert (checked[1]["backend"], checked[1]["preflight"], checked[1]["current"]) == ("api_green", False, False)
    assert (checked[1]["resolve"], checked[1]["min_healthy"], checked[1]["status_code"]) == (None, None, [200])
    off = release.precheck_services([shop], targets, currents, currents, preflight=False, smoke_current=False)
    assert (off[0]["preflight"], off[0]["current"]) == (False, False)


def test_precheck_errors_per_key():
    services = release.services([SHOP, API], DEFAULTS)
    plan = release.read_plan(read_result({"shop.test": "shop_blue", "api.test": "api_blue"},
                                         {"shop.test": "shop_blue", "api.test": "api_green"}), {}, services,
                             {"action": "cutover", "owner": "me"})
    errors = release.precheck_errors(plan, [plan["lives"], dict(plan["lives"], **{"shop.test": "shop_green"})], "/m")
    assert errors == [
        "nodes disagree on the live backend of shop.test (shop_blue, shop_green); set release_expected_current",
        "drift: api.test is api_blue at runtime but api_green on disk, so a reload would move traffic; persist or "
        "fix it first (status.yml shows it, persist.yml writes the live value) or set release_allow_drift",
    ]


def test_readback_and_watch_errors():
    targets = {"shop.test": "shop_green", "api.test": "api_green"}
    assert release.readback_errors(targets, {"runtime_entries": dict(targets)}) == []
    assert release.readback_errors(targets, {"runtime_entries": {"shop.test": "shop_green"}}) == [
        "VERIFY: api.test is absent at runtime after the switch, expected api_green"]
    assert release.readback_errors({"active": "backend_blue"}, {"key": "active", "value": "backend_blue"}) == []
    info = {"entries": {"shop.test": "shop_blue", "api.test": "api_green"}, "disk_entries": {"shop.test": "shop_blue"}}
    assert release.watch_errors(targets, info) == [
        "shop.test is shop_blue at runtime, expected shop_green (the disk says shop_blue too: did HAProxy reload?)"]


def test_failure_message_names_the_failed_services_of_a_loop():
    loop = {"failed": True, "msg": "One or more items failed", "results": [
        {"item": SHOP, "failed": False}, {"item": API, "failed": True, "msg": "3 of 4 requests failed"}]}
    assert release.failure_message(loop) == "api.test: 3 of 4 requests failed"
    single = {"failed": True, "msg": "One or more items failed", "results": [{"item": SHOP, "failed": True, "msg": "x"}]}
    assert release.failure_message(single) == "x"
    pair = {"results": [{"item": [API, {}], "failed": True, "msg": "error rate"}, {"item": [SHOP, {}]}]}
    assert release.failure_message(pair) == "api.test: error rate"
    assert release.failure_message({"failed": True, "msg": "plain"}) == "plain"


def test_node_summary_of_several_services_is_keyed_by_service():
    keys = ["shop.test", "api.test"]
    green = {"shop.test": "shop_green", "api.test": "api_green"}
    blue = {"shop.test": "shop_blue", "api.test": "api_blue"}
    node = {
        "_release_read": read_result(blue), "_release_switched": True, "_release_failures": [],
        "_release_switch": {"changed": True, "runtime_entries": green, "switched_at": 5.0},
        "_release_persist": {"changed": True, "runtime_entries": green, "disk_entries": green},
        "_release_plan": {"targets": green, "lives": blue},
        # release_precheck's result: api.test's target was already live (no preflight, no current path).
        "_release_precheck": {"services": [
            {"key": "shop.test", "health": {"healthy_count": 2, "total": 2},
             "preflight": {"passed_count": 2, "failed_servers": []}, "current": {"passed_count": 5, "failed_count": 0}},
            {"key": "api.test", "health": {"healthy_count": 1, "total": 1}, "preflight": None, "current": None}]},
        "_release_run": {"started": 0},
    }
    summary = release.node_summary({"n1": node}, "n1", keys)
    assert summary["outcome"] == "switched" and summary["failures"] == []
    assert summary["target"] == green and summary["previous"] == blue
    assert summary["live_runtime"] == green and summary["live_disk"] == green and summary["drift"] is False
    assert summary["target_health"] == {"shop.test": {"healthy": 2, "total": 2}, "api.test": {"healthy": 1, "total": 1}}
    assert summary["preflight"] == {"shop.test": {"passed": 2, "failed": []}, "api.test": None}
    assert summary["smoke"]["PRECHECK"] == {"shop.test": {"passed": 5, "failed": 0}, "api.test": None}
    assert release.run_outcome({"n1": summary, "n2": dict(summary)}) == "succeeded"
    assert release.run_outcome({"n1": summary, "n2": dict(summary, live_runtime=blue)}) == "split"
    # A key the persist did not write breaks the invariant, named by key.
    node["_release_persist"] = {"changed": True, "runtime_entries": green, "disk_entries": dict(green, **{"api.test": None})}
    failures = release.node_summary({"n1": node}, "n1", keys)["failures"]
    assert failures == ["INVARIANT: api.test: runtime says api_green but disk says None; a reload would move traffic"]


def test_report_keys_and_describe():
    assert release.report_keys([SHOP], False, "active") == "active"
    assert release.report_keys([SHOP, API, "x"], True, "active") == ["shop.test", "api.test"]
    assert release.describe({"active": "backend_green"}) == "backend_green"
    assert release.describe({"shop.test": "shop_green", "api.test": "api_green"}) == "api.test=api_green, shop.test=shop_green"


# -- the live-traffic gate of the watch window (release_watch_plan, the node summary's traffic) -------

def _looped(results):
    return {"results": [dict(result, item=dict(key=key)) for key, result in results]}


def test_watch_plan_subtracts_every_smoke_request_sent_to_the_backend_and_watches_it_once():
    services = release.services([SHOP, API, dict(SHOP, key="www.shop.test", smoke_url="http://www.shop.test/")],
                                DEFAULTS)
    targets = {"shop.test": "shop_green", "api.test": "api_green", "www.shop.test": "shop_green"}
    baselines = _looped([("shop.test", {"counters": {"hrsp_2xx": 5, "read_at": 10.2}}),
                         ("api.test", {"counters": {"hrsp_2xx": 7, "read_at": 10.3}}),
                         ("www.shop.test", {"counters": {"hrsp_2xx": 4, "read_at": 10.1}})])
    smoke = _looped([("shop.test", {"summary": {"status_counts": {"200": 10}}}),
                     ("api.test", {"summary": {"status_counts": {"200": 9, "204": 1}}}),
                     ("www.shop.test", {"summary": {"status_counts": {"200": 10}}})])
    plan = release.watch_plan(services, targets, baselines, smoke, 3, False)
    assert [(item["key"], item["backend"], item["watch"]) for item in plan] == [
        ("shop.test", "shop_green", True), ("api.test", "api_green", True), ("www.shop.test", "shop_green", False)]
    shop, api = plan[0], plan[1]
    # shop_green gets both keys' smoke requests, sent before the window and during it, and the earliest baseline.
    assert shop["own_requests"] == {"200": 20} and shop["shared_with"] == ["www.shop.test"]
    assert shop["baseline"] == {"hrsp_2xx": 4, "read_at": 10.1}
    assert [spec["url"] for spec in shop["smoke"]] == ["http://shop.test/", "http://www.shop.test/"]
    assert shop["smoke"][0] == dict(url="http://shop.test/", resolve="127.0.0.1:80", send=None, headers={}, status_code=[200],
                                    body_regex="version=shop_green", timeout=3.0, validate_certs=False)
    assert api["own_requests"] == {"200": 9, "204": 1} and len(api["smoke"]) == 1


def test_node_summary_names_insufficient_traffic_and_the_windows_smoke():
    node = switched_node()
    node["_release_traffic"] = _looped([(KEY, {
        "requests": 3, "errors": {"hrsp_5xx": 0}, "error_rate": 0.0, "judged": False, "verdict": "insufficient",
        "msg": "backend_green: insufficient traffic to judge: 3 real requests in 30s, fewer than min_requests 20",
        "smoke": {"passed_count": 30, "failed_count": 0}})])
    traffic = release.node_summary({"n1": node}, "n1", KEY)["traffic"]
    assert traffic["verdict"] == "insufficient" and traffic["smoke"] == {"passed": 30, "failed": 0}
    assert traffic["note"].startswith("backend_green: insufficient traffic to judge: 3 real requests"), traffic


def test_step_failures_name_each_stage_a_step_module_found():
    both = dict(failed=True, stage="SMOKE", msg="x", failures=["SMOKE: 3 of 10 failed", "WATCH VERIFY: active is blue"])
    assert release.step_failures(both) == ["SMOKE: 3 of 10 failed", "WATCH VERIFY: active is blue"]
    assert release.step_failures(dict(failed=True, stage="LOCK", msg="held by x")) == ["LOCK: held by x"]
    # A task that is no step module (an assert): its message as it is.
    assert release.step_failures(dict(failed=True, msg="LOCK: the clock of node2 is 1.0 s ahead")) == \
        ["LOCK: the clock of node2 is 1.0 s ahead"]


def test_the_arming_phase_leaves_out_the_nodes_own_work():
    # Two hosts in one batch: the second started 0.4 s late; each spent 2 s waiting for health.
    runs = [dict(started=100.0, seconds=2.8, work=2.0), dict(started=100.4, seconds=3.0, work=2.0)]
    assert release.arming_phase(runs, 1) == (pytest.approx(1.0), pytest.approx(1.4))
    # Two batches: the second batch started after the first one's work; that work is not arming.
    runs = [dict(started=100.0, seconds=2.8, work=2.0), dict(started=102.9, seconds=2.9, work=2.0)]
    assert release.arming_phase(runs, 2) == (pytest.approx(0.9), pytest.approx(1.8))
    assert release.arming_phase([], 1) == (0.0, 0.0)
    # The lead from them equals the lead from the numbers they stand for.
    assert release.switch_lead(2, 5, runs=runs[:1]) == release.switch_lead(2, 5, 0, 0.8, phase_seconds=0.8)


# ---------------------------------------------------------------- INIT's guard and inputs in one task each

def test_run_refusals_names_every_cause_and_nothing_for_a_clean_run():
    fleet = dict(group_hosts=["a", "b"], play_hosts=["a", "b"], allow_partial=False, strategy="linear")
    assert release.run_refusals(["release_target", "release_watch_seconds"], _argument_specs(), fleet) == []
    refusals = release.run_refusals(["_release_failures", "release_watch_secnds"], _argument_specs(),
                                    dict(fleet, play_hosts=["a"], strategy="mitogen_linear"))
    assert refusals[0] == ("refusing to run: _release_failures is the release engine's internal state, not an input; "
                           "remove it from the extra vars and the inventory. Nothing was read or changed.")
    assert "release_watch_secnds (did you mean `release_watch_seconds`?)" in refusals[1]
    assert "release_allow_partial=true" in refusals[2]
    # One node of a fleet cut by --limit: Mitogen would run it synchronously, so only the partial refusal.
    assert len(refusals) == 3
    mitogen = release.run_refusals([], _argument_specs(), dict(fleet, strategy="mitogen_linear"))
    assert len(mitogen) == 1 and "mitogen_linear on a fleet of 2 nodes" in mitogen[0]


def test_fleet_refusals_judge_every_node_in_one_pass():
    """The INIT guard runs once for the fleet: what every node has (an extra var, a play var) is
    said once, what only some nodes' inventory sets is said with each node's name."""
    fleet = dict(group_hosts=["a", "b", "c"], play_hosts=["a", "b", "c"], allow_partial=False, strategy="linear")
    clean = dict(a=dict(release_target="x"), b=dict(release_target="x"), c=dict(release_target="x"))
    assert release.fleet_refusals(clean, ["a", "b", "c"], ["release_target"], _argument_specs(), fleet, current="a") == []
    # release_max_eror_rate an extra var (in every node's hostvars), release_persit a play var (only
    # in what the guard's host sees), release_watch_secnds in b's inventory, _release_gate in c's.
    extra = dict(release_target="x", release_max_eror_rate=0)
    hostvars = dict(a=dict(extra), b=dict(extra, release_watch_secnds=3), c=dict(extra, _release_gate=1))
    refusals = release.fleet_refusals(hostvars, ["a", "b", "c"], ["release_target", "release_max_eror_rate", "release_persit"],
                                      _argument_specs(), dict(fleet, play_hosts=["a", "b"]), current="a")
    assert refusals[0].startswith("refusing to run: unknown release inputs release_max_eror_rate (did you mean "
                                  "`release_max_error_rate`?), release_persit (did you mean `release_persist`?)"), refusals
    assert refusals[1].startswith("b: refusing to run: unknown release input release_watch_secnds (did you mean "
                                  "`release_watch_seconds`?)"), refusals
    assert refusals[2].startswith("c: refusing to run: _release_gate is the release engine's internal state"), refusals
    # Then the fleet's own: a run on part of the group.
    assert "release_allow_partial=true" in refusals[3] and len(refusals) == 4
    # What only the guard's own host has in its inventory is that host's.
    refusals = release.fleet_refusals(dict(a=dict(_release_x=1), b={}), ["a", "b"], ["_release_x"], _argument_specs(), current="a")
    assert len(refusals) == 1 and refusals[0].startswith("a: refusing to run: _release_x is"), refusals
    # A node hostvars cannot show still gets what every node shares judged.
    refusals = release.fleet_refusals(dict(a={}), ["a", "gone"], ["_release_x"], _argument_specs(), current="a")
    assert refusals == [release.internal_names_message(["_release_x"])]


def test_run_refusals_without_a_fleet_checks_only_the_names():
    """status.yml: a read-only run on part of a fleet, or under Mitogen, is fine."""
    assert release.run_refusals(["release_map_key"], _argument_specs()) == []
    refusals = release.run_refusals(["_release_a", "_release_b"], _argument_specs())
    assert refusals == ["refusing to run: _release_a, _release_b are the release engine's internal state, not an input; "
                        "remove them from the extra vars and the inventory. Nothing was read or changed."]


def test_input_failures_start_the_record_with_one_init_failure():
    assert release.input_failures(dict(good_inputs(), given_services=None, map_key=KEY)) == []
    failures = release.input_failures(dict(good_inputs(smoke_requests=0, smoke_url="ftp://x"), given_services=None,
                                           map_key=KEY))
    assert len(failures) == 1 and failures[0].startswith("INIT: invalid release inputs: ")
    assert "release_smoke_requests" in failures[0] and "release_smoke_url" in failures[0]


# ---------------------------------------------------------------- PREPARE's fleet-wide refusals

def _prepared(lives, clock=None, **extra):
    result = dict(plan=dict(targets={KEY: "backend_green"}, currents=dict(lives), lives=dict(lives),
                            disks=dict(lives), expected_current_set={}), lock_taken=True)
    if clock is not None:
        result["clock"] = clock
    result.update(extra)
    return result


def test_prepared_failures_keep_earlier_ones_then_clock_then_fleet_agreement():
    good_clock = dict(offset=0.01, error=0.002)
    hostvars = {"a": {"_release_failures": [], "_release_prepared": _prepared({KEY: "backend_blue"}, good_clock)},
                "b": {"_release_failures": [], "_release_prepared": _prepared({KEY: "backend_blue"}, good_clock)}}
    assert release.prepared_failures(hostvars, "a", ["a", "b"], "bg.map") == []
    # A node that failed before keeps exactly its failures (its rescue recorded them).
    hostvars["a"]["_release_failures"] = ["PRECHECK: target has no healthy server"]
    assert release.prepared_failures(hostvars, "a", ["a", "b"], "bg.map") == ["PRECHECK: target has no healthy server"]
    # A clock off by more than the tolerance.
    hostvars["a"] = {"_release_failures": [], "_release_prepared": _prepared({KEY: "backend_blue"}, dict(offset=2.0, error=0.01))}
    failures = release.prepared_failures(hostvars, "a", ["a", "b"], "bg.map", clock_tolerance=0.5)
    assert len(failures) == 1 and failures[0].startswith("LOCK: the clock of a is 2.000s ahead of the controller's")
    assert failures[0].endswith("fix its time (NTP) or raise release_clock_tolerance "
                                "(the fleet switches at one instant of each node's clock)")
    # Nodes that disagree on the live value, and release_expected_current settling it.
    hostvars["a"] = {"_release_failures": [], "_release_prepared": _prepared({KEY: "backend_red"}, good_clock)}
    failures = release.prepared_failures(hostvars, "b", ["a", "b"], "bg.map")
    assert failures == ["PRECHECK: nodes disagree on the live backend (backend_blue, backend_red); set release_expected_current"]
    hostvars["b"]["_release_prepared"]["plan"]["expected_current_set"] = {KEY: True}
    assert release.prepared_failures(hostvars, "b", ["a", "b"], "bg.map") == []


def test_prepared_failures_of_a_skipped_or_already_live_node_are_its_own():
    hostvars = {"a": {"_release_failures": ["INIT: invalid release inputs: x"], "_release_prepared": {"skipped": True}},
                "b": {"_release_failures": [], "_release_prepared": _prepared({KEY: "backend_green"}, already_live=True)},
                "c": {"_release_failures": [], "_release_prepared": _prepared({KEY: "backend_blue"})}}
    assert release.prepared_failures(hostvars, "a", ["a", "b", "c"], "bg.map") == ["INIT: invalid release inputs: x"]
    assert release.prepared_failures(hostvars, "b", ["a", "b", "c"], "bg.map") == []


def test_fleet_summary_summarizes_every_node_in_the_play_in_one_call():
    hostvars = {"n1": switched_node(), "n2": switched_node()}
    summary = release.fleet_summary(hostvars, ["n1", "n2"], ["n1", "n2"], KEY, "on_success", False, 103.0)
    assert summary["n1"] == release.node_summary(hostvars, "n1", KEY, "on_success", False, 103.0)
    assert summary["n2"]["outcome"] == "switched"
