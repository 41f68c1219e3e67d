# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for release_step, the release engine's one module for its three steps.

step=prepare (with module_utils/release_steps.py) - READ, LOCK, PRECHECK in one run. The precheck
itself (health, preflight, current path) is release_precheck's, tested in test_release_precheck.py:
here it is a recorder, so each test shows what PREPARE asks of it and in which order against the lock.

step=switch - SWITCH, SMOKE, WATCH and WATCH VERIFY in one run. The smoke test and the watch window
are http_smoke's and haproxy_backend_traffic's, tested with them: here they are recorders, so each
test shows what the step asks of them, in which order, and what it makes of their verdicts.

step=finish - persist and unlock, or roll back and unlock, in one run, with a real map file and lock
file in a temporary directory; the old version's smoke test after a rollback is recorded.

The maps are a fake HAProxy at the level of the bytes sent (fake_map_haproxy). Last, the argument
spec: what each step requires, and an option only another step reads refused before anything is asked.

step=single - a fleet of one node: the three steps in one run, with the gates between them judged on
that node (switch only after a passed PREPARE, persist only after a passed switch, a rollback otherwise).

step=status - read-only, the key live and on disk, the lock and each backend's health in one run,
never failing for what it cannot read (the health reads are captured `show stat` replies).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import drain, health, release_steps, smoke, traffic  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import release_step  # noqa: E402

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main  # noqa: E402

MAP = "/etc/haproxy/maps/bluegreen.map"
PREPARE_SERVICE = dict(key="active", target="backend_green", backends=["backend_blue", "backend_green"],
                       smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:80")
SERVICE = dict(key="active", smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:80")
RUN = dict(owner="run-1", action="cutover", controller="ctl", controller_pid=42, started_at="2026-12-07T07:00:00Z")
GREEN = {"active": "backend_green"}
BLUE = {"active": "backend_blue"}


# step=prepare

@pytest.fixture
def haproxy(monkeypatch):
    fake = FakeHAProxy({MAP: [("active", "backend_blue")]})
    monkeypatch.setattr(release_step, "RuntimeAPIClient", fake.client)
    return fake


class Precheck(object):
    """run_precheck stand-in: records the services it was asked to prove and whether the lock was held then."""

    def __init__(self, lock_path, failed=False):
        self.lock_path, self.failed, self.calls = lock_path, failed, []

    def __call__(self, client, services, **options):
        self.calls.append(dict(services=services, lock_held=os.path.exists(self.lock_path), options=options))
        return dict(services=[dict(key=s["key"], backend=s["backend"], health=dict(healthy=not self.failed))
                              for s in services],
                    failed=self.failed, failed_stage="health" if self.failed else None,
                    msg="backend 'backend_green' is not healthy" if self.failed else "precheck passed")


@pytest.fixture
def prepared(tmp_path, monkeypatch):
    map_file = tmp_path / "bluegreen.map"
    map_file.write_text("active backend_blue\n")
    lock_path = str(tmp_path / "bluegreen.map.lock")
    precheck = Precheck(lock_path)
    monkeypatch.setattr(release_steps, "run_precheck", precheck)
    return dict(map_file=str(map_file), lock=lock_path, precheck=precheck)


def run_prepare(prepared, check=False, services=None, run_record=None, lock=True, **args):
    params = dict(dict(step="prepare", map=MAP, map_file=prepared["map_file"], services=services or [PREPARE_SERVICE], run=run_record or RUN,
                       socket="/nonexistent/admin.sock"), **args)
    if lock:
        params["lock"] = dict(path=prepared["lock"])
    return run_main(release_step.main, params, check=check)


def test_reads_locks_then_proves_in_one_run(haproxy, prepared):
    outcome = run_prepare(prepared, health_wait=30)
    result = outcome.result
    assert not outcome.failed, result["msg"]
    assert haproxy.writes == []  # PREPARE only reads the map
    assert result["entries"] == {"active": "backend_blue"} and result["disk_entries"] == {"active": "backend_blue"}
    assert result["plan"]["targets"] == {"active": "backend_green"} and result["plan"]["lives"] == {"active": "backend_blue"}
    assert result["lock_taken"] is True and result["changed"] is True and result["stage"] is None
    with open(prepared["lock"]) as handle:
        record = json.load(handle)
    assert (record["owner"], record["phase"], record["previous"], record["target"]) == \
        ("run-1", "precheck", "backend_blue", "backend_green")
    assert record["controller_pid"] == 42
    # The precheck ran once, after the lock was taken, on the target with the current path's answer.
    (call,) = prepared["precheck"].calls
    assert call["lock_held"] is True and call["options"]["health_wait"] == 30
    (checked,) = call["services"]
    assert checked["backend"] == "backend_green" and checked["preflight"] and checked["current"]
    assert checked["current_body_regex"].pattern == "version=blue"


def test_check_mode_proves_the_lock_could_be_taken_and_writes_nothing(haproxy, prepared):
    outcome = run_prepare(prepared, check=True)
    assert not outcome.failed, outcome.result["msg"]
    assert outcome.result["lock_acquired"] is True and outcome.result["lock_taken"] is False
    assert outcome.result["changed"] is False and not os.path.exists(prepared["lock"])
    assert len(prepared["precheck"].calls) == 1


def test_a_lock_held_by_another_run_refuses_before_the_precheck(haproxy, prepared):
    with open(prepared["lock"], "w") as handle:
        json.dump(dict(owner="someone-else", acquired="2026-12-07T06:00:00Z", acquired_epoch=1.0), handle)
    outcome = run_prepare(prepared)
    assert outcome.failed and outcome.result["stage"] == "LOCK"
    assert "held by someone-else" in outcome.result["msg"] and outcome.result["holder"]["owner"] == "someone-else"
    assert outcome.result["lock_taken"] is False and prepared["precheck"].calls == []


def test_drift_refuses_before_the_lock_and_changes_nothing(haproxy, prepared):
    with open(prepared["map_file"], "w") as handle:
        handle.write("active backend_green\n")
    outcome = run_prepare(prepared)
    assert outcome.failed and outcome.result["stage"] == "PRECHECK"
    assert outcome.result["msg"].startswith("drift: active is backend_blue at runtime but backend_green on disk")
    assert not os.path.exists(prepared["lock"]) and prepared["precheck"].calls == []
    # What was read is in the result: the report shows it.
    assert outcome.result["entries"] == {"active": "backend_blue"}


def test_a_node_already_on_the_target_is_neither_locked_nor_checked(haproxy, prepared):
    outcome = run_prepare(prepared, services=[dict(PREPARE_SERVICE, target="backend_blue")])
    assert not outcome.failed and outcome.result["already_live"] is True
    assert not os.path.exists(prepared["lock"]) and prepared["precheck"].calls == []
    assert outcome.result["changed"] is False


def test_a_failed_precheck_keeps_the_lock_for_the_run_to_release(haproxy, prepared):
    prepared["precheck"].failed = True
    outcome = run_prepare(prepared)
    assert outcome.failed and outcome.result["stage"] == "PRECHECK"
    assert outcome.result["msg"] == "backend 'backend_green' is not healthy"
    assert outcome.result["lock_taken"] is True and os.path.exists(prepared["lock"])


def test_an_unloaded_map_fails_the_read(haproxy, prepared):
    outcome = run_prepare(prepared, map="/etc/haproxy/maps/other.map")
    assert outcome.failed and outcome.result["stage"] == "READ" and "other.map" in outcome.result["msg"]
    assert not os.path.exists(prepared["lock"])


def test_a_rollback_after_a_dead_run_returns_to_the_previous_value_its_lock_records(haproxy, prepared):
    with open(prepared["lock"], "w") as handle:
        json.dump(dict(owner="dead-run", previous="backend_green", target="backend_blue", key="active",
                       acquired="2026-12-07T06:00:00Z", acquired_epoch=1.0), handle)
    with open(prepared["map_file"], "w") as handle:
        handle.write("active backend_green\n")
    rollback = dict(RUN, action="rollback")
    outcome = run_prepare(prepared, services=[dict(PREPARE_SERVICE, target="")], run_record=rollback, lock=False)
    # Without force the dead run's record is not used: a rollback goes to the other backend.
    assert outcome.result["plan"]["targets"] == {"active": "backend_green"} and outcome.result["plan"]["recovery"] == {}
    params = dict(step="prepare", map=MAP, map_file=prepared["map_file"], services=[dict(PREPARE_SERVICE, target="")], run=rollback,
                  socket="/nonexistent/admin.sock", lock=dict(path=prepared["lock"], force=True))
    outcome = run_main(release_step.main, params)
    assert not outcome.failed, outcome.result["msg"]
    assert outcome.result["plan"]["targets"] == {"active": "backend_green"}
    assert outcome.result["plan"]["recovery"]["owner"] == "dead-run" and outcome.result["taken_over"] is True


def test_prepare_bad_options_fail_before_anything_is_asked(haproxy, prepared):
    outcome = run_prepare(prepared, requests=0)
    assert outcome.failed and outcome.result["stage"] == "INIT" and "requests must be at least 1" in outcome.result["msg"]
    assert haproxy.log == [] and haproxy.writes == []
    assert not os.path.exists(prepared["lock"])


# step=switch

class Recorder(object):
    """Stands in for run_smoke and watch_backend: records each call and the live map at that moment."""

    def __init__(self, haproxy):
        self.haproxy, self.smoke_calls, self.watch_calls = haproxy, [], []
        self.smoke_passes, self.watch = True, dict(passed=True, verdict="passed", msg="0 of 40 real requests failed")
        self.during_watch = None

    def run_smoke(self, url, **options):
        self.smoke_calls.append(dict(url=url, regex=options["body_regex"].pattern, live=self.haproxy.values(MAP)))
        return dict(passed=self.smoke_passes, passed_count=10 if self.smoke_passes else 7,
                    failed_count=0 if self.smoke_passes else 3, requests=10,
                    summary=dict(status_counts={"200": 10} if self.smoke_passes else {"200": 7, "503": 3}),
                    msg="10 requests passed" if self.smoke_passes else "3 of 10 requests failed: 3 x status 503")

    def watch_backend(self, client, backend, **options):
        self.watch_calls.append(dict(backend=backend, **options))
        if options.get("duration", 0) == 0:
            counters = dict((name, 0) for name in traffic.REQUIRED_FIELDS)
            return dict(passed=True, counters=dict(counters, hrsp_2xx=100, read_at=1.0))
        if self.during_watch:
            self.during_watch()
        return dict(self.watch, backend=backend)


@pytest.fixture
def http(haproxy, monkeypatch):
    recorder = Recorder(haproxy)
    monkeypatch.setattr(smoke, "run_smoke", recorder.run_smoke)
    monkeypatch.setattr(traffic, "watch_backend", recorder.watch_backend)
    return recorder


def run_switch(**args):
    params = dict(dict(step="switch", map=MAP, targets={"active": "backend_green"}, expected={"active": "backend_blue"},
                       services=[SERVICE], socket="/nonexistent/admin.sock", requests=10), **args)
    return run_main(release_step.main, params)


def test_switches_reads_back_then_smokes_the_new_version(haproxy, http):
    outcome = run_switch()
    result = outcome.result
    assert not outcome.failed, result["msg"]
    assert result["switched"] is True and result["changed"] is True and result["stage"] is None
    assert result["switch"]["runtime_entries"] == {"active": "backend_green"}
    assert haproxy.writes == ["set map"]
    # The smoke test asked for the new version, after the map had moved.
    (call,) = http.smoke_calls
    assert call["regex"] == "version=green" and call["live"] == {"active": "backend_green"}
    assert result["smoke"][0]["key"] == "active" and result["smoke"][0]["passed"] is True
    # No watch window was asked: no counters read.
    assert http.watch_calls == [] and result["traffic"] is None


def test_the_phase_switching_is_in_the_lock_before_anything_moves(haproxy, http, tmp_path):
    lock = tmp_path / "bluegreen.map.lock"
    lock.write_text(json.dumps(dict(owner="run-1", phase="precheck", acquired_epoch=1.0)))
    outcome = run_switch(lock=dict(path=str(lock), owner="run-1"))
    assert not outcome.failed, outcome.result["msg"]
    assert json.loads(lock.read_text())["phase"] == "switching"


def test_a_lock_taken_over_by_another_run_refuses_the_switch(haproxy, http, tmp_path):
    lock = tmp_path / "bluegreen.map.lock"
    lock.write_text(json.dumps(dict(owner="someone-else", acquired_epoch=1.0)))
    outcome = run_switch(lock=dict(path=str(lock), owner="run-1"))
    assert outcome.failed and outcome.result["stage"] == "SWITCH" and "nothing was changed" in outcome.result["msg"]
    assert outcome.result["switched"] is False and haproxy.writes == [] and http.smoke_calls == []


def test_a_value_moved_by_a_hand_is_refused_and_nothing_is_smoked(haproxy, http):
    outcome = run_switch(expected={"active": "backend_canary"})
    assert outcome.failed and outcome.result["stage"] == "SWITCH"
    assert outcome.result["switched"] is False and haproxy.values(MAP)["active"] == "backend_blue"
    assert http.smoke_calls == []


def test_a_failing_smoke_test_fails_the_step_and_says_the_node_moved(haproxy, http):
    http.smoke_passes = False
    outcome = run_switch(watch_seconds=30)
    assert outcome.failed and outcome.result["stage"] == "SMOKE"
    assert outcome.result["msg"] == "3 of 10 requests failed: 3 x status 503"
    # The node did switch: the last step must roll it back. No window after a failed smoke test.
    assert outcome.result["switched"] is True and haproxy.values(MAP)["active"] == "backend_green"
    assert [call.get("duration", 0) for call in http.watch_calls] == [0]


def test_the_watch_window_judges_real_traffic_from_the_baseline_without_the_engines_own_requests(haproxy, http):
    outcome = run_switch(watch_seconds=30, watch_interval=2, max_error_rate=0.5, min_requests=40)
    assert not outcome.failed, outcome.result["msg"]
    baseline, window = http.watch_calls
    assert (baseline["backend"], baseline.get("duration", 0)) == ("backend_green", 0)
    assert (window["backend"], window["duration"], window["max_error_rate"], window["min_requests"]) == \
        ("backend_green", 30.0, 0.5, 40)
    # The counters from right after the switch; the 10 smoke requests answered 200 are not users'.
    assert window["baseline"]["hrsp_2xx"] == 100 and window["own"] == {"hrsp_2xx": 10}
    assert window["interval"] == 1.0 and window["smoke_interval"] == 2.0 and window["smoke"] is not None
    assert outcome.result["traffic"][0]["key"] == "active"
    assert outcome.result["watch_verify"]["entries"] == {"active": "backend_green"}


@pytest.mark.parametrize("insufficient, failed", [("fail", True), ("pass", False)])
def test_too_few_real_requests_fails_unless_the_run_accepts_it(haproxy, http, insufficient, failed):
    http.watch = dict(passed=True, verdict="insufficient", msg="backend_green: insufficient traffic to judge: 3 real requests")
    outcome = run_switch(watch_seconds=30, insufficient_traffic=insufficient)
    assert outcome.failed is failed
    if failed:
        assert outcome.result["stage"] == "SMOKE" and "release_insufficient_traffic=pass" in outcome.result["msg"]
        assert outcome.result["msg"].startswith("backend_green: insufficient traffic to judge")


def test_a_reload_during_the_window_is_caught_by_the_last_read(haproxy, http, tmp_path):
    map_file = tmp_path / "bluegreen.map"
    map_file.write_text("active backend_blue\n")

    def reload():
        haproxy.maps[MAP].entries = [("active", "backend_blue")]

    http.during_watch = reload
    outcome = run_switch(watch_seconds=30, map_file=str(map_file))
    assert outcome.failed and outcome.result["stage"] == "WATCH VERIFY"
    assert "active is backend_blue at runtime, expected backend_green" in outcome.result["msg"]
    assert "did HAProxy reload?" in outcome.result["msg"]


def test_a_window_that_failed_because_of_a_reload_names_both(haproxy, http):
    def reload():
        haproxy.maps[MAP].entries = [("active", "backend_blue")]

    http.during_watch = reload
    http.watch = dict(passed=False, verdict="failed", msg="smoke requests during the window failed")
    outcome = run_switch(watch_seconds=30)
    assert outcome.failed and outcome.result["stage"] == "SMOKE"
    assert outcome.result["failures"] == ["SMOKE: smoke requests during the window failed",
                                          "WATCH VERIFY: active is backend_blue at runtime, expected backend_green"]


def test_several_keys_switch_together_in_one_commit(haproxy, http):
    haproxy.maps[MAP].entries = [("shop", "shop_blue"), ("api", "api_blue")]
    services = [dict(SERVICE, key="shop"), dict(SERVICE, key="api")]
    outcome = run_switch(targets={"shop": "shop_green", "api": "api_green"}, expected={"shop": "shop_blue", "api": "api_blue"},
                         services=services, bulk=True)
    assert not outcome.failed, outcome.result["msg"]
    assert haproxy.values(MAP) == {"shop": "shop_green", "api": "api_green"}
    assert "commit map" in haproxy.writes and "set map" not in haproxy.writes
    assert [call["regex"] for call in http.smoke_calls] == ["version=shop_green", "version=api_green"]


@pytest.mark.parametrize("args, message", [
    (dict(targets={"active": "backend_green", "other": "x"}), "must name exactly the services' keys"),
    (dict(requests=0), "requests must be at least 1"),
])
def test_switch_bad_options_fail_before_anything_is_asked(haproxy, http, args, message):
    outcome = run_switch(**args)
    assert outcome.failed and outcome.result["stage"] == "INIT" and message in outcome.result["msg"]
    assert haproxy.log == []


# step=canary, and the switch that promotes a canary

class Windows(object):
    """Stands in for watch_backend in a canary step: a baseline without one, else each backend's window."""

    def __init__(self, haproxy, canary=None, stable=None):
        self.haproxy, self.calls = haproxy, []
        self.results = dict(backend_green=dict(dict(requests=40, errors=0, error_rate=0.0, verdict="passed",
                                                    msg="0 of 40 real requests failed"), **(canary or {})),
                            backend_blue=dict(dict(requests=400, errors=0, error_rate=0.0, verdict="passed",
                                                   msg="0 of 400 real requests failed"), **(stable or {})))

    during_window = None  # called once the canary's window runs, e.g. a reload

    def __call__(self, client, backend, baseline=None, **options):
        self.calls.append(dict(backend=backend, baseline=baseline is not None, live=self.haproxy.values(MAP), **options))
        if baseline is not None and options.get("duration") and self.during_window:
            self.during_window()
        if baseline is None:
            return dict(passed=True, counters=dict(dict((name, 0) for name in traffic.REQUIRED_FIELDS), read_at=1.0))
        return dict(self.results[backend], backend=backend)


def run_canary(weight, **args):
    params = dict(dict(step="canary", map=MAP, targets=GREEN, expected=BLUE, services=[SERVICE], bulk=True,
                       weight=weight, watch_seconds=30, min_requests=20, socket="/nonexistent/admin.sock"), **args)
    return run_main(release_step.main, params)


def test_a_canary_step_sets_the_share_in_one_commit_then_judges_both_backends(haproxy, http, monkeypatch, tmp_path):
    windows = Windows(haproxy)
    monkeypatch.setattr(traffic, "watch_backend", windows)
    lock = tmp_path / "bluegreen.map.lock"
    lock.write_text(json.dumps(dict(owner="run-1", phase="precheck", acquired_epoch=1.0)))
    outcome = run_canary(10, lock=dict(path=str(lock), owner="run-1"))
    assert not outcome.failed, outcome.result["msg"]
    # The live key never moves; the canary's two keys were added in one commit.
    assert haproxy.values(MAP) == {"active": "backend_blue", "active.canary": "backend_green", "active.weight": "10"}
    assert "commit map" in haproxy.writes and "set map" not in haproxy.writes
    assert json.loads(lock.read_text())["phase"] == "canary 10%"
    # Both backends' baselines after the change, the canary's window of 30 s, the stable one's delta.
    assert [(call["backend"], call["baseline"], call.get("duration", 0)) for call in windows.calls] == [
        ("backend_green", False, 0), ("backend_blue", False, 0), ("backend_green", True, 30.0), ("backend_blue", True, 0)]
    assert windows.calls[0]["live"]["active.weight"] == "10"
    step = outcome.result["canary_step"]["active"]
    assert (step["weight"], step["requests"], step["verdict"], step["stable"]["requests"]) == (10, 40, "passed", 400)
    assert http.smoke_calls == []  # the step is judged by real users


def test_the_next_step_compares_against_the_share_the_step_before_left(haproxy, http, monkeypatch):
    monkeypatch.setattr(traffic, "watch_backend", Windows(haproxy))
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.canary", "backend_green"), ("active.weight", "30")]
    refused = run_canary(50, weights={"active": "10"})
    assert refused.failed and refused.result["stage"] == "CANARY" and "active.weight is '30' (expected 10)" in refused.result["msg"]
    assert haproxy.writes == []
    outcome = run_canary(50, weights={"active": "30"})
    assert not outcome.failed and haproxy.values(MAP)["active.weight"] == "50"


@pytest.mark.parametrize("canary, stable, message", [
    (dict(requests=40, errors=8, error_rate=20.0, verdict="failed", msg="8 of 40 real requests failed (20.0%)"), None,
     "8 of 40 real requests failed (20.0%)"),
    (dict(requests=0, verdict="insufficient", msg="0 real requests"), None,
     "the canary does not route: backend_green got no request while backend_blue got 400 real requests"),
    (None, dict(requests=400, errors=40, error_rate=10.0, verdict="failed", msg="40 of 400 real requests failed"),
     "the stable backend failed while the canary ran: 40 of 400"),
])
def test_a_failed_step_names_why_and_leaves_its_share_for_the_end_to_take_back(
        haproxy, http, monkeypatch, canary, stable, message):
    monkeypatch.setattr(traffic, "watch_backend", Windows(haproxy, canary, stable))
    outcome = run_canary(5)
    assert outcome.failed and outcome.result["stage"] == "CANARY"
    assert outcome.result["msg"].startswith("at 5%: ") and message in outcome.result["msg"], outcome.result["msg"]
    assert outcome.result["switch"]["changed"] is True and haproxy.values(MAP)["active.weight"] == "5"


def test_too_few_canary_requests_fail_unless_the_run_accepts_it(haproxy, http, monkeypatch):
    few = dict(requests=3, verdict="insufficient", msg="3 real requests, fewer than min_requests 20")
    monkeypatch.setattr(traffic, "watch_backend", Windows(haproxy, few, dict(requests=10)))
    assert run_canary(5).failed
    outcome = run_canary(5, weights={"active": "5"}, insufficient_traffic="pass")
    assert not outcome.failed and outcome.result["canary_step"]["active"]["verdict"] == "insufficient"


# user-0 .. user-9 through `req.hdr(x-user-id),crc32(1),mod(100)` on HAProxy 2.6.12 (an
# `http-request return ... lf-string "%[req.hdr(x-user-id),crc32(1),mod(100)]"` frontend, curl).
HAPROXY_BUCKETS = [48, 58, 81, 54, 68, 68, 38, 68, 91, 39]


def test_the_canary_bucket_is_the_one_haproxy_computes():
    assert [release_steps.canary_bucket("user-%d" % user) for user in range(10)] == HAPROXY_BUCKETS
    for weight in (1, 5, 50, 99):
        assert release_steps.canary_bucket(release_steps.canary_sample(weight)) < weight


def test_a_canary_step_smokes_the_canary_with_a_bucket_in_its_share_before_the_window(haproxy, http, monkeypatch):
    windows = Windows(haproxy)
    monkeypatch.setattr(traffic, "watch_backend", windows)
    outcome = run_canary(5, canary_header="X-User-Id", requests=3)
    assert not outcome.failed, outcome.result["msg"]
    (call,) = http.smoke_calls
    assert call["regex"] == "version=green" and call["live"]["active.weight"] == "5"
    assert outcome.result["smoke"][0]["passed"] is True
    http.smoke_passes = False
    failed = run_canary(10, weights={"active": "5"}, canary_header="X-User-Id")
    assert failed.failed and "the canary through this node's listener (X-User-Id: bluegreen-canary-smoke-" in failed.result["msg"]


def test_weight_zero_ends_the_canary_and_proves_the_stable_version(haproxy, http, monkeypatch):
    windows = Windows(haproxy)
    monkeypatch.setattr(traffic, "watch_backend", windows)
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.canary", "backend_green"), ("active.weight", "25")]
    outcome = run_canary(0, weights={"active": "25"})
    assert not outcome.failed, outcome.result["msg"]
    assert haproxy.values(MAP)["active.weight"] == "0" and haproxy.values(MAP)["active"] == "backend_blue"
    assert windows.calls == [] and outcome.result["canary_step"]["active"]["verdict"] == "ended"
    (call,) = http.smoke_calls
    assert call["regex"] == "version=blue" and call["live"]["active.weight"] == "0"


def test_the_promotion_moves_the_live_key_and_ends_the_share_in_one_commit(haproxy, http):
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.canary", "backend_green"), ("active.weight", "50")]
    outcome = run_switch(canary_weight=50)
    assert not outcome.failed, outcome.result["msg"]
    assert haproxy.values(MAP) == {"active": "backend_green", "active.canary": "backend_green", "active.weight": "0"}
    assert "commit map" in haproxy.writes and "set map" not in haproxy.writes
    # Another hand changed the share since the last step: refused, nothing changed.
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.canary", "backend_green"), ("active.weight", "30")]
    refused = run_switch(canary_weight=50)
    assert refused.failed and "active.weight is '30' (expected 50)" in refused.result["msg"]
    assert haproxy.values(MAP)["active"] == "backend_blue"


def test_prepare_for_a_canary_reads_the_share_and_refuses_a_canary_already_running(haproxy, prepared):
    outcome = run_prepare(prepared, canary=True)
    assert not outcome.failed and outcome.result["plan"]["weights"] == {"active": ""}
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.weight", "20")]
    refused = run_prepare(prepared, canary=True)
    assert refused.failed and refused.result["stage"] == "PRECHECK"
    assert refused.result["msg"].startswith("a canary is already running here (active.weight is 20)")


def test_a_rollback_ends_a_canary_a_dead_run_left_instead_of_switching(haproxy, prepared):
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.canary", "backend_green"), ("active.weight", "20")]
    outcome = run_prepare(prepared, canary=True, services=[dict(PREPARE_SERVICE, target="")],
                          run_record=dict(RUN, action="rollback"))
    assert not outcome.failed, outcome.result["msg"]
    plan = outcome.result["plan"]
    # The live key stays on blue (not "the other backend"); the share is what goes back.
    assert plan["targets"] == {"active": "backend_blue"} and plan["end_canary"] is True
    assert plan["weights"] == {"active": "20"}


def test_the_end_of_a_canary_takes_back_a_share_whose_key_does_not_move(haproxy, http):
    haproxy.maps[MAP].entries = [("active", "backend_blue"), ("active.canary", "backend_green"), ("active.weight", "20")]
    outcome = run_canary(0, targets=BLUE, weights={"active": "20"})
    assert not outcome.failed, outcome.result["msg"]
    assert haproxy.values(MAP) == {"active": "backend_blue", "active.canary": "backend_green", "active.weight": "0"}


def test_a_reload_during_a_step_is_named_at_that_step_and_its_end_is_not_refused(haproxy, http, monkeypatch):
    windows = Windows(haproxy)
    monkeypatch.setattr(traffic, "watch_backend", windows)

    def reload():  # the new worker loaded the map file: no share
        haproxy.maps[MAP].entries = [("active", "backend_blue")]

    windows.during_window = reload
    outcome = run_canary(10)
    assert outcome.failed and outcome.result["stage"] == "CANARY"
    assert outcome.result["msg"].startswith("at 10%: the canary share is gone: active.weight is absent at runtime, "
                                            "expected 10; did HAProxy reload?"), outcome.result["msg"]
    assert outcome.result["canary_step"]["active"]["verdict"] == "share gone"
    assert outcome.result["canary_verify"] == {"active": "backend_blue", "active.canary": None, "active.weight": None}
    # The end that follows: nothing to take back there (no compare-and-set refusal, no write), the
    # stable version proven.
    writes = list(haproxy.writes)
    ended = run_canary(0, weights={"active": "10"})
    assert not ended.failed, ended.result["msg"]
    assert haproxy.writes == writes and ended.result["changed"] is False
    assert ended.result["canary_step"]["active"]["verdict"] == "ended"
    assert "did HAProxy reload?" in ended.result["canary_step"]["active"]["note"]
    assert [call["regex"] for call in http.smoke_calls] == ["version=blue"]


def test_a_failed_window_and_a_reload_name_the_reload_first(haproxy, http, monkeypatch):
    windows = Windows(haproxy, canary=dict(requests=0, verdict="insufficient", msg="0 real requests"))

    def reload():
        haproxy.maps[MAP].entries = [("active", "backend_blue")]

    windows.during_window = reload
    monkeypatch.setattr(traffic, "watch_backend", windows)
    outcome = run_canary(10)
    message = outcome.result["msg"]
    assert message.startswith("at 10%: the canary share is gone") and "the canary does not route" not in message


def test_a_window_cut_short_by_the_reload_still_reports_the_step_with_the_reload(haproxy, http, monkeypatch):
    windows = Windows(haproxy)

    def reload_and_lose_the_socket():
        haproxy.maps[MAP].entries = [("active", "backend_blue")]
        raise release_step.RuntimeAPIError("connection refused: /run/haproxy/admin.sock")

    windows.during_window = reload_and_lose_the_socket
    monkeypatch.setattr(traffic, "watch_backend", windows)
    outcome = run_canary(10)
    assert outcome.result["msg"].startswith("at 10%: the canary share is gone"), outcome.result["msg"]
    assert outcome.result["canary_step"]["active"]["verdict"] == "share gone"


def test_the_end_takes_back_the_shares_still_set_and_skips_the_ones_gone(haproxy, http):
    haproxy.maps[MAP].entries = [("shop", "shop_blue"), ("api", "api_blue"), ("shop.canary", "shop_green"),
                                 ("shop.weight", "25")]
    services = [dict(SERVICE, key="shop"), dict(SERVICE, key="api")]
    outcome = run_canary(0, targets={"shop": "shop_green", "api": "api_green"}, expected={"shop": "shop_blue", "api": "api_blue"},
                         services=services, weights={"shop": "25", "api": "25"})
    assert not outcome.failed, outcome.result["msg"]
    assert haproxy.values(MAP) == {"shop": "shop_blue", "api": "api_blue", "shop.canary": "shop_green", "shop.weight": "0"}
    assert sorted(outcome.result["canary_step"]) == ["api", "shop"] and "note" in outcome.result["canary_step"]["api"]
    assert "the share was already gone at runtime for api" in outcome.result["msg"]


# step=finish

@pytest.fixture
def finished(tmp_path, monkeypatch):
    """A node after its switch to green: runtime green, disk blue, this run's lock held."""
    fake = FakeHAProxy({MAP: [("active", "backend_green")]})
    monkeypatch.setattr(release_step, "RuntimeAPIClient", fake.client)
    map_file = tmp_path / "bluegreen.map"
    map_file.write_text("# the switch\nactive backend_blue\n")
    lock = tmp_path / "bluegreen.map.lock"
    lock.write_text(json.dumps(dict(owner="run-1", phase="switching", acquired_epoch=1.0)))
    smoked = []

    def run_smoke(url, **options):
        smoked.append(dict(regex=options["body_regex"].pattern, live=fake.values(MAP)))
        return dict(passed=True, passed_count=1, failed_count=0, requests=1, summary={}, msg="1 request passed")

    monkeypatch.setattr(smoke, "run_smoke", run_smoke)
    return dict(haproxy=fake, map_file=map_file, lock=lock, smoked=smoked)


def run_finish(finished, outcome, **args):
    params = dict(dict(step="finish", map=MAP, map_file=str(finished["map_file"]), outcome=outcome, targets=GREEN, previous=BLUE,
                       switched=True, services=[SERVICE], socket="/nonexistent/admin.sock",
                       lock=dict(path=str(finished["lock"]), owner="run-1")), **args)
    return run_main(release_step.main, params)


def test_persist_writes_the_live_value_and_releases_the_lock(finished):
    outcome = run_finish(finished, "persist")
    assert not outcome.failed, outcome.result["msg"]
    assert finished["map_file"].read_text() == "# the switch\nactive backend_green\n"
    assert finished["haproxy"].writes == [] and finished["haproxy"].values(MAP) == GREEN
    assert outcome.result["unlocked"] is True and not finished["lock"].exists()
    assert outcome.result["persist"]["disk_value"] == "backend_green" and outcome.result["persist"]["persisted"] is True
    assert outcome.result["changed"] is True and outcome.result["rolled_back"] is False


class HeldSessions(object):
    """backend_blue's servers as `show stat` counts their sessions; a shutdown closes a server's."""

    def __init__(self, monkeypatch, sessions):
        self.sessions, self.reads, self.closed = dict(sessions), [], []
        monkeypatch.setattr(drain, "read_sessions", self.read)
        monkeypatch.setattr(drain, "shutdown_sessions", self.shutdown)

    def read(self, client, backend):
        self.reads.append(backend)
        return dict(self.sessions) if backend == "backend_blue" else {}

    def shutdown(self, client, backend, server):
        self.closed.append("%s/%s" % (backend, server))
        self.sessions[server] = 0


@pytest.mark.parametrize("shutdown, left, closed", [(False, 1, 0), (True, 0, 1)])
def test_a_persisted_release_drains_the_backend_it_left_before_unlocking(finished, monkeypatch, shutdown, left, closed):
    held = HeldSessions(monkeypatch, {"blue1": 1, "blue2": 0})
    # The fleet's drain instant is past: one look, then the shutdown (a later batch of forks waits no more).
    outcome = run_finish(finished, "persist", drain_until=1.0, drain_shutdown=shutdown)
    assert not outcome.failed, outcome.result["msg"]
    report = outcome.result["drain"]["active"]
    assert (report["backend"], report["sessions_left"], report["shut_down"]) == ("backend_blue", left, closed)
    assert held.reads[0] == "backend_blue" and held.closed == (["backend_blue/blue1"] if shutdown else [])
    assert finished["map_file"].read_text() == "# the switch\nactive backend_green\n" and not finished["lock"].exists()


def test_no_drain_without_its_instant_nor_after_a_rollback(finished, monkeypatch):
    held = HeldSessions(monkeypatch, {"blue1": 1})
    assert run_finish(finished, "persist", lock=None).result["drain"] is None
    outcome = run_finish(finished, "rollback", drain_until=1.0, drain_shutdown=True)
    assert not outcome.failed and outcome.result["drain"] is None
    assert held.reads == [] and held.closed == []


def test_a_drain_that_cannot_read_is_reported_and_never_fails_the_release(finished, monkeypatch):
    def unreadable(client, backend):
        raise health.BackendNotFoundError(backend, ["backend_green"])

    monkeypatch.setattr(drain, "read_sessions", unreadable)
    outcome = run_finish(finished, "persist", drain_until=1.0)
    assert not outcome.failed and outcome.result["changed"] is True
    assert outcome.result["drain"]["active"]["error"].startswith("backend 'backend_blue' does not exist")
    assert any(warning.startswith("DRAIN: backend_blue: ") for warning in outcome.result["warnings"])


def test_manual_persistence_only_releases_the_lock(finished):
    outcome = run_finish(finished, "persist", persist=False)
    assert not outcome.failed and outcome.result["persist"] is None
    assert "active backend_blue" in finished["map_file"].read_text() and not finished["lock"].exists()


def test_persist_never_moves_traffic_when_the_live_value_moved(finished):
    finished["haproxy"].maps[MAP].entries = [("active", "backend_canary")]
    outcome = run_finish(finished, "persist")
    assert outcome.failed and outcome.result["stage"] == "PERSIST"
    assert finished["haproxy"].values(MAP) == {"active": "backend_canary"} and finished["haproxy"].writes == []
    assert "active backend_blue" in finished["map_file"].read_text()
    # The lock is released whatever happened: the report says what is live.
    assert outcome.result["unlocked"] is True and not finished["lock"].exists()


def test_rollback_puts_the_old_value_back_at_runtime_and_on_disk_then_smokes_it(finished):
    finished["map_file"].write_text("# the switch\nactive backend_green\n")
    outcome = run_finish(finished, "rollback")
    assert not outcome.failed, outcome.result["msg"]
    assert finished["haproxy"].values(MAP) == BLUE and finished["map_file"].read_text() == "# the switch\nactive backend_blue\n"
    assert outcome.result["rolled_back"] is True and outcome.result["rollback"]["runtime_entries"] == BLUE
    assert finished["smoked"] == [dict(regex="version=blue", live=BLUE)]
    assert outcome.result["rollback_smoke"][0]["key"] == "active" and not finished["lock"].exists()


def test_a_node_that_did_not_switch_has_nothing_to_roll_back(finished):
    finished["haproxy"].maps[MAP].entries = [("active", "backend_blue")]
    outcome = run_finish(finished, "rollback", switched=False)
    assert not outcome.failed and outcome.result["rolled_back"] is False and outcome.result["rollback"] is None
    assert finished["haproxy"].writes == [] and finished["smoked"] == [] and not finished["lock"].exists()


def test_a_rollback_whose_read_back_disagrees_fails_naming_it(finished):
    finished["haproxy"].lie_after_write = {"active": "backend_green"}
    outcome = run_finish(finished, "rollback")
    assert outcome.failed and outcome.result["stage"] == "ROLLBACK"
    assert "backend_green" in outcome.result["msg"] and outcome.result["rolled_back"] is False
    assert finished["smoked"] == []


def test_another_runs_lock_is_never_released(finished):
    finished["lock"].write_text(json.dumps(dict(owner="someone-else", acquired_epoch=1.0)))
    outcome = run_finish(finished, "release", switched=False)
    assert outcome.failed and outcome.result["stage"] == "UNLOCK" and "someone-else" in outcome.result["msg"]
    assert finished["lock"].exists()


# step=single - a fleet of one node: the three steps in one run

def run_single(prepared, check=False, **args):
    params = dict(dict(step="single", map=MAP, map_file=prepared["map_file"], services=[PREPARE_SERVICE], run=RUN,
                       socket="/nonexistent/admin.sock", lock=dict(path=prepared["lock"]), requests=10), **args)
    return run_main(release_step.main, params, check=check)


def disk(prepared):
    with open(prepared["map_file"]) as handle:
        return handle.read()


def test_a_fleet_of_one_node_prepares_switches_proves_and_persists_in_one_run(haproxy, prepared, http):
    outcome = run_single(prepared, watch_seconds=30)
    result = outcome.result
    assert not outcome.failed, result["msg"]
    # PREPARE's result, then the switch's and the finish's, each as its own step returns it.
    assert result["plan"]["targets"] == GREEN and result["lock_taken"] is True and len(prepared["precheck"].calls) == 1
    assert result["switch_step"]["switched"] is True and result["switch_step"]["stage"] is None
    assert result["switch_step"]["traffic"][0]["key"] == "active"
    assert result["finish_step"]["persist"]["persisted"] is True and result["finish_step"]["unlocked"] is True
    assert haproxy.writes == ["set map"] and haproxy.values(MAP) == GREEN and disk(prepared) == "active backend_green\n"
    assert [call["regex"] for call in http.smoke_calls] == ["version=green"] and not os.path.exists(prepared["lock"])
    assert result["changed"] is True and "failures" not in result
    # The result names its step (the role's task argument is a template), then what it did last:
    # the finish's message, not PREPARE's.
    assert result["step"] == "single"
    assert result["msg"] == result["finish_step"]["msg"] and result["msg"] != "", result["msg"]


def test_a_fleet_of_one_node_whose_new_version_fails_rolls_back_in_the_same_run(haproxy, prepared, http, monkeypatch):
    def green_fails(url, **options):
        http.smoke_passes = options["body_regex"].pattern != "version=green"
        return http.run_smoke(url, **options)

    monkeypatch.setattr(smoke, "run_smoke", green_fails)
    outcome = run_single(prepared)
    result = outcome.result
    assert outcome.failed and result["stage"] == "SMOKE"
    assert result["failures"] == ["SMOKE: 3 of 10 requests failed: 3 x status 503"] and result["msg"] == result["failures"][0]
    assert result["switch_step"]["switched"] is True and result["finish_step"]["rolled_back"] is True
    # Back to blue at runtime, blue on disk (never written green), the old version proved, the lock released.
    assert haproxy.values(MAP) == BLUE and disk(prepared) == "active backend_blue\n"
    assert [(call["regex"], call["live"]) for call in http.smoke_calls] == [("version=green", GREEN), ("version=blue", BLUE)]
    assert not os.path.exists(prepared["lock"])


def test_a_fleet_of_one_node_whose_persist_fails_goes_back_in_the_same_run(haproxy, prepared, http, monkeypatch):
    finishes = []

    def persist_fails(client, map_name, map_file, services, outcome, *args, **options):
        finishes.append(outcome)
        if outcome == "persist":
            release_steps.finish(client, map_name, map_file, services, "release", *args, **options)
            return dict(changed=False, failed=True, stage="PERSIST", msg="cannot write the map file", unlocked=True,
                        rolled_back=False)
        return release_steps.finish(client, map_name, map_file, services, outcome, *args, **options)

    monkeypatch.setattr(release_step, "finish", persist_fails)
    outcome = run_single(prepared)
    result = outcome.result
    assert outcome.failed and result["stage"] == "PERSIST" and finishes == ["persist", "rollback"]
    assert result["failures"] == ["PERSIST: cannot write the map file"]
    assert result["finish_step"]["rolled_back"] is True and haproxy.values(MAP) == BLUE
    assert disk(prepared) == "active backend_blue\n" and not os.path.exists(prepared["lock"])


def test_a_fleet_of_one_node_keeps_a_key_moved_by_hand_during_its_precheck(haproxy, prepared, http, monkeypatch):
    """The read and the switch share one run: a hand that moves the key while the precheck runs is
    still refused by the compare-and-set, and the run goes back to nothing (a fleet's version with
    the hand between two tasks: test_release_truth.py)."""
    precheck = prepared["precheck"]

    def hand_during_precheck(client, services, **options):
        haproxy.maps[MAP].entries = [("active", "backend_hand")]
        return precheck(client, services, **options)

    monkeypatch.setattr(release_steps, "run_precheck", hand_during_precheck)
    outcome = run_single(prepared)
    result = outcome.result
    assert outcome.failed and result["stage"] == "SWITCH" and "nothing was changed" in result["msg"]
    assert result["switch_step"]["switched"] is False and result["finish_step"]["rollback"] is None
    assert haproxy.writes == [] and haproxy.values(MAP) == {"active": "backend_hand"} and http.smoke_calls == []
    assert disk(prepared) == "active backend_blue\n" and not os.path.exists(prepared["lock"])


def test_a_fleet_of_one_node_in_check_mode_only_prepares(haproxy, prepared, http):
    outcome = run_single(prepared, check=True)
    assert not outcome.failed, outcome.result["msg"]
    assert "switch_step" not in outcome.result and "finish_step" not in outcome.result
    assert haproxy.writes == [] and http.smoke_calls == [] and not os.path.exists(prepared["lock"])


def test_a_fleet_of_one_node_already_live_changes_nothing(haproxy, prepared, http):
    haproxy.maps[MAP].entries = [("active", "backend_green")]
    with open(prepared["map_file"], "w") as handle:
        handle.write("active backend_green\n")
    outcome = run_single(prepared)
    assert not outcome.failed and outcome.result["already_live"] is True and "switch_step" not in outcome.result
    assert haproxy.writes == [] and prepared["precheck"].calls == [] and not os.path.exists(prepared["lock"])


def test_a_fleet_of_one_node_whose_prepare_refuses_stops_there_with_the_lock_for_the_role_to_release(
        haproxy, prepared, http):
    prepared["precheck"].failed = True
    outcome = run_single(prepared)
    assert outcome.failed and outcome.result["stage"] == "PRECHECK" and "switch_step" not in outcome.result
    # As for any fleet: the role's FINISH releases the lock PREPARE took.
    assert haproxy.writes == [] and os.path.exists(prepared["lock"])


def test_a_fleet_of_one_node_proves_the_later_steps_options_before_reading_anything(haproxy, prepared, http):
    outcome = run_single(prepared, max_error_rate=150.0)
    assert outcome.failed and outcome.result["stage"] == "INIT" and "max_error_rate" in outcome.result["msg"]
    assert haproxy.log == [] and prepared["precheck"].calls == [] and not os.path.exists(prepared["lock"])


# step=status

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures')


@pytest.fixture
def backends(monkeypatch):
    """backend_green's servers as HAProxy 2.6 showed them, all UP; any other backend does not exist."""
    with open(os.path.join(FIXTURES, 'haproxy-2.6', 'show_stat_all_up.txt')) as handle:
        reply = handle.read()
    asked = []

    def query(client, backend):
        asked.append(backend)
        if backend != 'backend_green':
            raise health.BackendNotFoundError(backend, ['backend_blue', 'backend_green'])
        return health.servers_from_stat_reply(reply, backend)

    monkeypatch.setattr(health, 'query_backend_servers', query)
    return asked


def run_status(tmp_path, check=False, **args):
    map_file = tmp_path / "bluegreen.map"
    if not map_file.exists():
        map_file.write_text("active backend_green\n")
    params = dict(dict(step="status", map=MAP, map_file=str(map_file), keys=["active"],
                       lock=dict(path=str(tmp_path / "bluegreen.map.lock")), backends=["backend_green"],
                       socket="/nonexistent/admin.sock"), **args)
    return run_main(release_step.main, params, check=check)


@pytest.mark.parametrize("check", [False, True])
def test_status_reads_the_key_the_lock_and_the_health_in_one_run(haproxy, backends, tmp_path, check):
    with open(str(tmp_path / "bluegreen.map.lock"), "w") as handle:
        json.dump(dict(owner="dead-run", previous="backend_green", target="backend_blue", key="active"), handle)
    outcome = run_status(tmp_path, check=check)
    assert not outcome.failed, outcome.result["msg"]
    result = outcome.result
    assert result["map"]["entries"] == {"active": "backend_blue"} and result["map"]["disk_entries"] == {"active": "backend_green"}
    assert result["lock"]["held"] is True and result["lock"]["holder"]["owner"] == "dead-run"
    (green,) = result["health"]
    assert green["item"] == "backend_green" and green["healthy"] is True and green["total"] > 0
    assert result["changed"] is False and haproxy.writes == [] and backends == ["backend_green"]


def test_status_reports_what_it_cannot_read_without_failing(haproxy, backends, tmp_path):
    outcome = run_status(tmp_path, map="/etc/haproxy/maps/other.map", backends=["backend_purple", "backend_green"])
    assert not outcome.failed
    assert outcome.result["map"]["failed"] is True and "other.map" in outcome.result["map"]["msg"]
    purple, green = outcome.result["health"]
    assert purple["failed"] is True and purple["healthy"] is False
    assert purple["msg"] == "backend 'backend_purple' does not exist in HAProxy; backends: backend_blue, backend_green"
    assert green["healthy"] is True


def test_status_refuses_a_key_no_haproxy_command_can_carry(haproxy, backends, tmp_path):
    outcome = run_status(tmp_path, keys=["two words"])
    assert outcome.failed and outcome.result["stage"] == "INIT" and outcome.result["msg"].startswith("invalid keys:")
    assert haproxy.log == [] and backends == []


# The argument spec: one module, four steps

@pytest.mark.parametrize("step, args, missing", [
    ("status", dict(), "keys"),
    ("prepare", dict(services=None), "run, services"),
    ("switch", dict(targets=GREEN), "expected"),
    ("switch", dict(expected=BLUE), "targets"),
    ("finish", dict(targets=GREEN, previous=BLUE), "outcome"),
    ("finish", dict(outcome="persist", targets=GREEN), "previous"),
])
def test_an_option_the_step_requires_is_named_when_missing(haproxy, step, args, missing):
    params = dict(dict(step=step, map=MAP, services=[SERVICE], socket="/nonexistent/admin.sock"), **args)
    outcome = run_main(release_step.main, dict((name, value) for name, value in params.items() if value is not None))
    assert outcome.failed
    assert outcome.result["msg"] == "step is %s but all of the following are missing: %s" % (step, missing)
    assert haproxy.log == []


@pytest.mark.parametrize("step, args, message", [
    ("prepare", dict(run=RUN, watch_seconds=30),
     "step prepare does not use watch_seconds: remove it (watch_seconds is for step canary, switch and single)"),
    ("prepare", dict(run=RUN, targets=GREEN, lock=dict(path="/tmp/lock", owner="run-1")),
     "step prepare does not use targets, lock.owner: remove them "
     "(targets is for step canary, switch and finish; lock.owner is for step canary, switch and finish)"),
    ("switch", dict(targets=GREEN, expected=BLUE, health_wait=30, outcome="persist"),
     "step switch does not use health_wait, outcome: remove them "
     "(health_wait is for step prepare and single; outcome is for step finish)"),
    ("switch", dict(targets=GREEN, expected=BLUE, lock=dict(path="/tmp/lock", owner="run-1", force=True)),
     "step switch does not use lock.force: remove it (lock.force is for step prepare and single)"),
    ("switch", dict(targets=GREEN, expected=BLUE, lock=dict(path="/tmp/lock")),
     "step switch needs lock.owner, the run that holds the lock /tmp/lock"),
    ("finish", dict(outcome="persist", targets=GREEN, previous=BLUE, expected=BLUE, switch_at=1.0),
     "step finish does not use expected, switch_at: remove them "
     "(expected is for step canary and switch; switch_at is for step canary and switch)"),
    ("finish", dict(outcome="persist", targets=GREEN, previous=BLUE, lock=dict(path="/tmp/lock")),
     "step finish needs lock.owner, the run that holds the lock /tmp/lock"),
])
def test_an_option_only_another_step_reads_is_refused_before_anything_is_asked(haproxy, step, args, message):
    outcome = run_main(release_step.main, dict(step=step, map=MAP, services=[SERVICE], socket="/nonexistent/admin.sock",
                                               **args))
    assert outcome.failed and outcome.result["stage"] == "INIT" and outcome.result["changed"] is False
    assert outcome.result["msg"] == message
    assert haproxy.log == [] and not os.path.exists("/tmp/lock")
    if step == "switch":
        assert outcome.result["switched"] is False  # the role reads it from every switch result


def test_another_steps_option_at_its_default_is_not_refused(haproxy, http):
    """A playbook that spells out a default (bulk: false, persist: true) passes it to any step."""
    outcome = run_switch(persist=True, allow_drift=False, run=None)
    assert not outcome.failed, outcome.result["msg"]
    assert outcome.result["switched"] is True


@pytest.mark.parametrize("step, args", [
    ("switch", dict(targets=GREEN, expected=BLUE)),
    ("finish", dict(outcome="rollback", targets=GREEN, previous=BLUE, switched=True)),
])
def test_switch_and_finish_are_skipped_in_check_mode(haproxy, step, args):
    outcome = run_main(release_step.main, dict(step=step, map=MAP, services=[SERVICE], socket="/nonexistent/admin.sock",
                                               **args), check=True)
    assert not outcome.failed and outcome.result["skipped"] is True and outcome.result["changed"] is False
    assert "does not run in check mode" in outcome.result["msg"]
    assert haproxy.log == []


def test_the_precheck_gate_and_lock_options_are_the_shared_helpers(monkeypatch):
    """Step prepare's precheck options are release_precheck's (the precheck doc fragment), the watch
    window's gate haproxy_backend_traffic's (traffic_gate), the lock's suboptions release_lock's, the
    lock's owner optional here (step prepare takes it from run.owner)."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import lock_argument_spec
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import precheck_argument_spec

    from ansible_collections.bluegreen.haproxy.plugins.module_utils.traffic import traffic_gate_argument_spec

    spec = argument_spec_of(release_step, monkeypatch)
    shared = dict(precheck_argument_spec(), **traffic_gate_argument_spec())
    assert dict((name, spec[name]) for name in shared) == shared
    assert spec["lock"] == dict(type="dict", options=lock_argument_spec())
    assert "required" not in spec["lock"]["options"]["owner"]
