# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for release_switch: SWITCH, SMOKE, WATCH and WATCH VERIFY in one module run.

The map is a fake HAProxy at the level of the bytes sent (fake_map_haproxy). The smoke test and
the watch window are http_smoke's and haproxy_backend_traffic's, tested with them: here they are
recorders, so each test shows what the step asks of them, in which order, and what it makes of
their verdicts.
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

from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke, traffic  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import release_switch  # noqa: E402

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

MAP = "/etc/haproxy/maps/bluegreen.map"
SERVICE = dict(key="active", smoke_url="http://release.test/release", smoke_resolve="127.0.0.1:80")


@pytest.fixture
def haproxy(monkeypatch):
    fake = FakeHAProxy({MAP: [("active", "backend_blue")]})
    monkeypatch.setattr(release_switch, "RuntimeAPIClient", fake.client)
    return fake


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


def run(**args):
    params = dict(dict(map=MAP, targets={"active": "backend_green"}, expected={"active": "backend_blue"},
                       services=[SERVICE], socket="/nonexistent/admin.sock", requests=10), **args)
    return run_main(release_switch.main, params)


def test_switches_reads_back_then_smokes_the_new_version(haproxy, http):
    outcome = run()
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
    outcome = run(lock=dict(path=str(lock), owner="run-1"))
    assert not outcome.failed, outcome.result["msg"]
    assert json.loads(lock.read_text())["phase"] == "switching"


def test_a_lock_taken_over_by_another_run_refuses_the_switch(haproxy, http, tmp_path):
    lock = tmp_path / "bluegreen.map.lock"
    lock.write_text(json.dumps(dict(owner="someone-else", acquired_epoch=1.0)))
    outcome = run(lock=dict(path=str(lock), owner="run-1"))
    assert outcome.failed and outcome.result["stage"] == "SWITCH" and "nothing was changed" in outcome.result["msg"]
    assert outcome.result["switched"] is False and haproxy.writes == [] and http.smoke_calls == []


def test_a_value_moved_by_a_hand_is_refused_and_nothing_is_smoked(haproxy, http):
    outcome = run(expected={"active": "backend_canary"})
    assert outcome.failed and outcome.result["stage"] == "SWITCH"
    assert outcome.result["switched"] is False and haproxy.values(MAP)["active"] == "backend_blue"
    assert http.smoke_calls == []


def test_a_failing_smoke_test_fails_the_step_and_says_the_node_moved(haproxy, http):
    http.smoke_passes = False
    outcome = run(watch_seconds=30)
    assert outcome.failed and outcome.result["stage"] == "SMOKE"
    assert outcome.result["msg"] == "3 of 10 requests failed: 3 x status 503"
    # The node did switch: the last step must roll it back. No window after a failed smoke test.
    assert outcome.result["switched"] is True and haproxy.values(MAP)["active"] == "backend_green"
    assert [call.get("duration", 0) for call in http.watch_calls] == [0]


def test_the_watch_window_judges_real_traffic_from_the_baseline_without_the_engines_own_requests(haproxy, http):
    outcome = run(watch_seconds=30, watch_interval=2, max_error_rate=0.5, min_requests=40)
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
    outcome = run(watch_seconds=30, insufficient_traffic=insufficient)
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
    outcome = run(watch_seconds=30, map_file=str(map_file))
    assert outcome.failed and outcome.result["stage"] == "WATCH VERIFY"
    assert "active is backend_blue at runtime, expected backend_green" in outcome.result["msg"]
    assert "did HAProxy reload?" in outcome.result["msg"]


def test_a_window_that_failed_because_of_a_reload_names_both(haproxy, http):
    def reload():
        haproxy.maps[MAP].entries = [("active", "backend_blue")]

    http.during_watch = reload
    http.watch = dict(passed=False, verdict="failed", msg="smoke requests during the window failed")
    outcome = run(watch_seconds=30)
    assert outcome.failed and outcome.result["stage"] == "SMOKE"
    assert outcome.result["failures"] == ["SMOKE: smoke requests during the window failed",
                                          "WATCH VERIFY: active is backend_blue at runtime, expected backend_green"]


def test_several_keys_switch_together_in_one_commit(haproxy, http):
    haproxy.maps[MAP].entries = [("shop", "shop_blue"), ("api", "api_blue")]
    services = [dict(SERVICE, key="shop"), dict(SERVICE, key="api")]
    outcome = run(targets={"shop": "shop_green", "api": "api_green"}, expected={"shop": "shop_blue", "api": "api_blue"},
                  services=services, bulk=True)
    assert not outcome.failed, outcome.result["msg"]
    assert haproxy.values(MAP) == {"shop": "shop_green", "api": "api_green"}
    assert "commit map" in haproxy.writes and "set map" not in haproxy.writes
    assert [call["regex"] for call in http.smoke_calls] == ["version=shop_green", "version=api_green"]


@pytest.mark.parametrize("args, message", [
    (dict(targets={"active": "backend_green", "other": "x"}), "must name exactly the services' keys"),
    (dict(requests=0), "requests must be at least 1"),
])
def test_bad_options_fail_before_anything_is_asked(haproxy, http, args, message):
    outcome = run(**args)
    assert outcome.failed and outcome.result["stage"] == "INIT" and message in outcome.result["msg"]
    assert haproxy.log == []
