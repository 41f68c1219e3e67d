# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""haproxy_backend_traffic against a real HAProxy with real load through its frontend."""

from __future__ import annotations

import threading
import time

from lab import LoadGenerator, wait_for

MODULE = "haproxy_backend_traffic"


def traffic(run_module, env, **options):
    args = dict(socket=env.socket, backend="backend_green")
    args.update(options)
    return run_module(MODULE, args)


def make_green_live(env):
    assert env.runtime("set map %s active backend_green" % env.map_path) == "\n"
    assert env.get()[1].strip() == "version=green"


def test_a_share_of_500s_fails_the_gate_early_with_the_rate(haproxy_env, run_module):
    make_green_live(haproxy_env)
    # Both green servers pass their checks (UP) but answer 500 to every 5th request: 20%.
    for name in ("green1", "green2"):
        haproxy_env.apps[name].set_failing(0.2)
    load = LoadGenerator([haproxy_env])
    load.start()
    try:
        load.wait_requests(20)
        result = traffic(run_module, haproxy_env, duration=60, interval=0.5, min_requests=40)
    finally:
        load.stop()

    assert result.get("failed") is True, result
    assert (result["changed"], result["judged"], result["passed"]) == (False, True, False)
    assert result["requests"] >= 40
    # The app fails exactly every 5th request per server; reads land between requests.
    assert 12 <= result["error_rate"] <= 28, result
    assert result["errors"]["hrsp_5xx"] == result["failed_requests"] > 0
    assert (result["errors"]["econ"], result["errors"]["eresp"], result["errors"]["srv_abrt"]) == (0, 0, 0)
    # It stopped as soon as it could judge, not after the 60 s it was given.
    assert result["elapsed"] < 60, result["elapsed"]
    assert result["msg"] == "backend_green: %s%% of %d real requests failed (hrsp_5xx %d, srv_abrt 0; eresp 0, econ 0) " \
        "in %ss; the limit is 1%%" % (("%.2f" % result["error_rate"]).rstrip("0").rstrip("."), result["requests"],
                                      result["failed_requests"], ("%.1f" % result["window"]).rstrip("0").rstrip("."))
    # The users saw the same thing.
    assert load.answers.get("500 failed", 0) > 0


def test_healthy_green_under_load_passes(haproxy_env, run_module):
    make_green_live(haproxy_env)
    load = LoadGenerator([haproxy_env])
    load.start()
    try:
        load.wait_requests(10)
        result = traffic(run_module, haproxy_env, duration=3, interval=0.5)
    finally:
        load.stop()
    assert result.get("failed") is not True, result
    assert (result["changed"], result["judged"], result["passed"], result["error_rate"]) == (False, True, True, 0.0)
    assert result["requests"] >= 20
    assert result["counters"]["hrsp_2xx"] - result["baseline"]["hrsp_2xx"] == result["requests"]
    assert result["elapsed"] >= 3, "watched the whole window"
    assert load.failed == 0


def test_too_few_requests_are_not_judged_then_a_baseline_judges_them(haproxy_env, run_module):
    make_green_live(haproxy_env)
    haproxy_env.apps["green1"].set_failing(1.0)
    haproxy_env.apps["green2"].set_failing(1.0)
    baseline = traffic(run_module, haproxy_env)
    assert baseline.get("failed") is not True, baseline
    assert (baseline["requests"], baseline["judged"]) == (0, False)

    statuses = [haproxy_env.get()[0] for _request in range(5)]
    assert statuses == [500] * 5
    assert baseline["verdict"] == "baseline"
    # Too few to judge is its own outcome: it fails unless the caller accepts it.
    few = traffic(run_module, haproxy_env, baseline=baseline["counters"])
    assert few.get("failed") is True, few
    assert (few["requests"], few["failed_requests"], few["error_rate"], few["judged"], few["passed"]) == (5, 5, 100.0, False, False)
    assert few["verdict"] == "insufficient"
    assert few["msg"].startswith("backend_green: insufficient traffic to judge: 5 real requests in ")
    assert "fewer than min_requests 20 (5 failed: hrsp_5xx 5" in few["msg"]
    accepted = traffic(run_module, haproxy_env, baseline=baseline["counters"], insufficient_traffic="pass")
    assert accepted.get("failed") is not True, accepted
    assert (accepted["verdict"], accepted["passed"], accepted["requests"]) == ("insufficient", True, 5)

    # The same window with a lower bar is judged, and fails.
    judged = traffic(run_module, haproxy_env, baseline=baseline["counters"], min_requests=5)
    assert judged.get("failed") is True
    assert judged["msg"].startswith("backend_green: 100% of 5 real requests failed (hrsp_5xx 5, srv_abrt 0;")


def test_refused_connections_count_once(haproxy_env, run_module):
    make_green_live(haproxy_env)
    baseline = traffic(run_module, haproxy_env)["counters"]
    # A stopped server refuses until its checks mark it DOWN; HAProxy answers 503 (or redispatches).
    for name in ("green1", "green2"):
        haproxy_env.apps[name].stop()
    wait_for(lambda: haproxy_env.get()[0] == 503, what="503 from HAProxy")
    for _request in range(20):
        haproxy_env.get()
    result = traffic(run_module, haproxy_env, baseline=baseline, min_requests=10)
    assert result.get("failed") is True
    assert result["errors"]["econ"] > 0
    # hrsp_5xx already holds HAProxy's 503 for every refused request: econ is not added on top.
    assert result["failed_requests"] == result["errors"]["hrsp_5xx"] <= result["requests"]


def test_reload_during_the_window_does_not_go_negative(haproxy_env, run_module):
    make_green_live(haproxy_env)
    for _request in range(30):
        haproxy_env.get()
    baseline = traffic(run_module, haproxy_env)["counters"]
    assert baseline["hrsp_2xx"] >= 30
    haproxy_env.reload()
    make_green_live(haproxy_env)  # a reload restores the map file's value
    for _request in range(25):
        haproxy_env.get()
    result = traffic(run_module, haproxy_env, baseline=baseline)
    assert result.get("failed") is not True, result
    assert result["counter_resets"] == 1
    assert result["requests"] >= 25 and result["error_rate"] == 0.0


def test_unknown_backend_and_tcp_socket(haproxy_env, run_module):
    result = run_module(MODULE, dict(socket=haproxy_env.tcp_socket, backend="backend_purple"))
    assert result.get("failed") is True
    assert result["msg"] == "backend 'backend_purple' does not exist in HAProxy; backends: backend_blue, backend_green"


def test_reloads_while_watching_under_load(haproxy_env, run_module):
    # Green on disk too, so every reload's new worker routes to green as well.
    with open(haproxy_env.map_path, "w") as handle:
        handle.write("active backend_green\n")
    make_green_live(haproxy_env)
    load = LoadGenerator([haproxy_env])
    load.start()
    outcome = {}
    watcher = threading.Thread(target=lambda: outcome.setdefault(
        "result", traffic(run_module, haproxy_env, duration=8, interval=0.3, min_requests=20)), daemon=True)
    try:
        load.wait_requests(20)
        watcher.start()
        # Reload until the watch is over, so reloads fall inside it however long the module
        # takes to start on a busy machine; each new worker serves real requests before the
        # next reload, so every reload drops counters the watch has seen grow.
        deadline = time.monotonic() + 120
        while watcher.is_alive() and time.monotonic() < deadline:
            haproxy_env.reload()
            load.wait_requests(20)
        watcher.join(timeout=120)
    finally:
        load.stop()
    result = outcome["result"]
    assert result.get("failed") is not True, result
    assert (result["judged"], result["passed"], result["error_rate"]) == (True, True, 0.0)
    assert result["counter_resets"] >= 1
    assert result["requests"] >= 20
    assert load.failed == 0, load.answers


def test_its_own_smoke_requests_are_subtracted_exactly(haproxy_env, run_module):
    """No user: every response HAProxy counts in the window is one of the module's own smoke requests."""
    make_green_live(haproxy_env)
    baseline = traffic(run_module, haproxy_env)["counters"]
    for _request in range(7):  # the caller's own requests before the window
        assert haproxy_env.get()[0] == 200
    result = traffic(run_module, haproxy_env, baseline=baseline, duration=3, interval=0.2, smoke_interval=0.2,
                     min_requests=1, own_requests={"200": 7},
                     smoke=[dict(url="http://release.test/release", resolve="127.0.0.1:%d" % haproxy_env.frontend_port,
                                 body_regex="version=green", timeout=5)])
    assert result.get("failed") is True, result
    smoke = result["smoke"]
    assert smoke["passed"] and smoke["requests"] >= 3 and smoke["unanswered"] == 0, smoke
    assert (result["requests"], result["verdict"]) == (0, "insufficient"), result
    assert result["own_requests"] == {"hrsp_2xx": 7 + smoke["requests"]}
    assert result["counters"]["hrsp_2xx"] - baseline["hrsp_2xx"] == 7 + smoke["requests"]


def test_a_failing_smoke_request_ends_the_window(haproxy_env, run_module):
    make_green_live(haproxy_env)
    haproxy_env.apps["green1"].set_failing(1.0, "/release")
    haproxy_env.apps["green2"].set_failing(1.0, "/release")
    result = traffic(run_module, haproxy_env, duration=60, interval=0.2, insufficient_traffic="pass",
                     smoke=[dict(url="http://release.test/release", resolve="127.0.0.1:%d" % haproxy_env.frontend_port)])
    assert result.get("failed") is True and result["passed"] is False, result
    assert result["elapsed"] < 30, "it stopped at the first failed smoke request"
    assert result["smoke"]["failed_count"] >= 1 and result["own_requests"].get("hrsp_5xx", 0) >= 1, result
    assert result["errors"]["hrsp_5xx"] == 0, "the smoke's own 500s are not the users'"
    assert result["msg"].startswith("smoke requests during the window failed: 1 of 1 request to "
                                    "http://release.test/release (via 127.0.0.1:%d) failed: 1 x status 500"
                                    % haproxy_env.frontend_port), result["msg"]
