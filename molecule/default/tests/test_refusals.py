"""Invalid input never reaches the running HAProxy: variables the role's validation refuses,
a configuration `haproxy -c` rejects, and a reload HAProxy refuses (the play fails, the old
worker keeps serving, and the next run does not pass until the file on disk really runs)."""

from __future__ import annotations

import json
import os
import re

import pytest

from bluegreen_molecule import playbook, logs_dir, wait_for
from conftest import SCENARIO, snapshot

testinfra_hosts = ["haproxy_nodes"]

BLUE = {(200, "version=blue")}
BLUE_BACKEND = {"name": "backend_blue", "health_check_uri": "/healthz", "health_check_status": 200,
                "servers": [{"name": "blue1", "address": "blue1", "port": 8080},
                            {"name": "blue2", "address": "blue2", "port": 8080}]}
GREEN_BACKEND = {"name": "backend_green", "health_check_uri": "/healthz", "health_check_status": 200,
                 "servers": [{"name": "green1", "address": "green1", "port": 8080},
                             {"name": "green2", "address": "green2", "port": 8080}]}
FRONTENDS = [{"name": "http_in", "binds": [{"address": "*:80"},
                                           {"address": "*:443", "certificate": "/etc/haproxy/certs/bluegreen-test.pem"}]},
             {"name": "hosts_in", "binds": [{"address": "*:8080"}], "switch_key": "req.hdr(host),lower"}]


def servers(*specs):
    return [{"name": name, "address": address, "port": port} for name, address, port in specs]


INVALID = {
    "a backend with no servers": (
        {"haproxy_backends": [BLUE_BACKEND, dict(GREEN_BACKEND, servers=[])]},
        "backend 'backend_green' has no servers"),
    "two backends with the same name": (
        {"haproxy_backends": [BLUE_BACKEND, GREEN_BACKEND, BLUE_BACKEND]},
        "backend name 'backend_blue' is used by 2 backends"),
    "two servers with the same name": (
        {"haproxy_backends": [dict(BLUE_BACKEND, servers=servers(("blue1", "blue1", 8080), ("blue1", "blue2", 8080))),
                              GREEN_BACKEND]},
        "server name 'blue1' is used 2 times"),
    "a port out of range": (
        {"haproxy_backends": [dict(BLUE_BACKEND, servers=servers(("blue1", "blue1", 70000))), GREEN_BACKEND]},
        'port "70000" is not a port number (1-65535)'),
    "a port that is not a number": (
        {"haproxy_backends": [dict(BLUE_BACKEND, servers=servers(("blue1", "blue1", "http"))), GREEN_BACKEND]},
        "port"),
    "a bind with a bad port": (
        {"haproxy_frontends": [{"name": "http_in", "binds": [{"address": "*:0"}]}]},
        'bind address "*:0" must be [ADDRESS]:PORT'),
    "a switch falling back to an unknown backend": (
        {"haproxy_switch_fallback_backend": "backend_purple"},
        "haproxy_switch_fallback_backend 'backend_purple' is not one of the backends"),
    "a map entry pointing at an unknown backend": (
        {"haproxy_switch_entries": {"active": "backend_purple"}},
        "'active' points at 'backend_purple', which is not one of the backends"),
    "a hard-stop-after that is not an HAProxy time": (
        {"haproxy_hard_stop_after": "one minute"},
        "haproxy_hard_stop_after \"one minute\" must be an HAProxy time such as '60s'"),
}


@pytest.fixture(scope="module")
def before(node):
    return snapshot(node)


@pytest.fixture(scope="module")
def invalid_results(node, before):
    """Every case through the role in one play (invalid.yml): {case: {failed, task, msg}}."""
    results_file = os.path.join(logs_dir(), "invalid-results.json")
    if os.path.exists(results_file):
        os.remove(results_file)
    cases = [{"name": name, "vars": extra_vars} for name, (extra_vars, message) in sorted(INVALID.items())]
    run = playbook(os.path.join(SCENARIO, "invalid.yml"),
                   {"invalid_cases": cases, "invalid_results_file": results_file}, log_name="invalid")
    assert run.rc == 0, run
    with open(results_file) as handle:
        return json.load(handle)


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_variables_are_refused_in_validation(invalid_results, case):
    message = INVALID[case][1]
    result = invalid_results[case]
    assert result["failed"], result
    # Refused by the argument spec or the role's own checks, before any task touched the node.
    assert re.search(r"arg spec|Check the haproxy_\* variables", result["task"]), result
    assert message in result["msg"], result


def test_nothing_changed_after_the_invalid_variables(node, invalid_results, before):
    assert snapshot(node) == before


def test_a_configuration_haproxy_rejects_does_not_replace_the_running_one(node, converge, before):
    bad_server = {"name": "green1", "address": "green1", "port": 8080, "options": "no-such-keyword"}
    run = converge(log_name="rejected-config",
                   haproxy_backends=[BLUE_BACKEND, dict(GREEN_BACKEND, servers=[bad_server])])
    assert run.rc != 0, run
    assert "no-such-keyword" in run.output, run
    assert snapshot(node) == before
    assert node.answers(count=2) == BLUE


def test_a_reload_haproxy_refuses_fails_the_play_until_the_file_runs(host, node, converge, before):
    # A frontend on a port another process holds passes `haproxy -c` (which does not bind) but
    # the new worker cannot bind it: HAProxy refuses the reload (2.6: [failed: N] in show proc;
    # 3.0: Success=0).
    blocker = host.check_output(
        "nohup python3 -c 'import socket,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind((\"0.0.0.0\", 9099)); s.listen(1); time.sleep(600)' >/dev/null 2>&1 & echo $!")
    busy = FRONTENDS + [{"name": "busy_in", "binds": [{"address": "*:9099"}]}]
    try:
        wait_for(lambda: host.socket("tcp://0.0.0.0:9099").is_listening, what="port 9099 taken")
        for attempt in ("first", "second"):
            workers = node.processes()["workers"]
            run = converge(log_name="refused-reload-%s" % attempt, haproxy_frontends=busy)
            assert run.rc != 0, run
            # The first run fails in the reload handler; the second (file unchanged) in the final
            # "HAProxy runs the configuration on disk" check, which retries the reload.
            assert "Success=0" in run.output or "[failed: " in run.output, run
            processes = node.processes()
            assert processes["failed_reloads"] >= 1
            assert processes["workers"] == workers
            assert node.answers(count=2) == BLUE
    finally:
        host.run("kill %s" % blocker.strip())

    # The port is free: the same variables now run (and stay: nothing runs after this).
    run = converge(log_name="refused-reload-fixed", haproxy_frontends=busy)
    assert run.rc == 0, run
    end = snapshot(node)
    assert end["proc"]["failed_reloads"] == 0
    assert (end["map_file"], end["runtime"]) == (before["map_file"], before["runtime"])
    assert node.answers(url="http://127.0.0.1:9099/release", count=2) == BLUE
    assert node.answers() == BLUE
