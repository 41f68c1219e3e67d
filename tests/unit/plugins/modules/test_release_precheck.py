# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for release_precheck and module_utils/precheck.py.

HAProxy's replies are real captures from HAProxy 2.6 (tests/unit/fixtures/haproxy-2.6/: `show
backend`, `show stat backend_green 4 -1`, `show servers state backend_green`); the HTTP side is
a fake `send_request` that answers per server port (the preflight) or as the listener (the
current path) and records what was asked.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils import precheck as precheck_utils
from ansible_collections.bluegreen.haproxy.plugins.module_utils import runtime_api, smoke
from ansible_collections.bluegreen.haproxy.plugins.modules import release_precheck

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "fixtures", "haproxy-2.6")
URL = "http://release.test/release"
# Ports of backend_green's servers in the captures (fixtures README).
GREEN1 = 19406
GREEN2 = 19407


def fixture(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8", newline="") as handle:
        return handle.read()


@pytest.fixture
def haproxy(monkeypatch):
    """The Runtime API: captured replies by command line; records every line sent."""
    replies = {
        "show cli level": fixture("show_cli_level_admin.txt"),
        "show backend": fixture(os.path.join("health", "show_backend.txt")),
        "show stat backend_green 4 -1": fixture(os.path.join("health", "all_up.csv")),
        "show servers state backend_green": fixture("show_servers_state_backend.txt"),
    }
    sent = []

    def raw(self, line):
        sent.append(line)
        return replies[line]

    monkeypatch.setattr(runtime_api.RuntimeAPIClient, "raw", raw)
    return replies, sent


class FakeHTTP(object):
    """send_request stand-in: a green server answers by its port, the listener (no server port) as blue."""

    def __init__(self, servers=None, listener="version=blue\n"):
        self.servers = servers or {}
        self.listener = listener
        self.calls = []

    def __call__(self, url, connect_address=None, **options):
        port = connect_address[1] if connect_address else None
        self.calls.append(dict(url=url, port=port, use_proxy=options["use_proxy"]))
        text = self.servers.get(port, "version=green\n") if port in (GREEN1, GREEN2) else self.listener
        return smoke.request_result(0.01, status=200, text=text, status_codes=options["status_codes"],
                                    body_regex=options["body_regex"])


@pytest.fixture
def http(monkeypatch):
    fake = FakeHTTP()
    monkeypatch.setattr(precheck_utils, "send_request", fake)
    return fake


def service(**overrides):
    return dict(dict(key="active", backend="backend_green", url=URL, body_regex="version=green",
                     current_body_regex="version=blue"), **overrides)


def run(services, check=False, **args):
    return run_main(release_precheck.main, dict(socket="/nonexistent/admin.sock", services=services,
                                                poll_interval=0.01, **args), check=check)


def test_every_stage_passes_in_one_run(haproxy, http):
    _replies, sent = haproxy
    outcome = run([service()], requests=3)
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert result["changed"] is False and result["failed_stage"] is None
    checked = result["services"][0]
    assert (checked["key"], checked["backend"]) == ("active", "backend_green")
    assert (checked["health"]["healthy_count"], checked["health"]["total"]) == (2, 2)
    assert (checked["preflight"]["passed_count"], checked["preflight"]["failed_servers"]) == (2, [])
    assert (checked["current"]["passed_count"], checked["current"]["failed_count"]) == (3, 0)
    # The socket's level, health, then the preflight asks where the servers are; then HTTP: each
    # server, then the listener 3 times.
    assert sent == ["show cli level", "show backend", "show stat backend_green 4 -1", "show backend", "show servers state backend_green"]
    assert [call["port"] for call in http.calls] == [GREEN1, GREEN2, None, None, None]
    assert [call["use_proxy"] for call in http.calls] == [False, False, True, True, True]
    assert result["msg"] == ("precheck passed for active -> backend_green: target healthy, preflight passed, "
                             "the current path answers")


def test_check_mode_runs_the_same_reads(haproxy, http):
    outcome = run([service()], check=True)
    assert not outcome.failed and outcome.result["services"][0]["preflight"]["passed_count"] == 2


def test_an_unhealthy_target_stops_before_any_request(haproxy, http):
    replies, _sent = haproxy
    replies["show stat backend_green 4 -1"] = fixture(os.path.join("health", "green1_down_l7sts.csv"))
    outcome = run([service()])
    assert outcome.failed and outcome.result["failed_stage"] == "health"
    assert "backend_green" in outcome.result["msg"] and "green1" in outcome.result["msg"], outcome.result["msg"]
    assert outcome.result["services"][0]["preflight"] is None and outcome.result["services"][0]["current"] is None
    assert http.calls == []


def test_force_reports_health_and_still_proves_the_rest(haproxy, http):
    replies, _sent = haproxy
    replies["show stat backend_green 4 -1"] = fixture(os.path.join("health", "green1_down_l7sts.csv"))
    outcome = run([service()], force=True, health_wait=30)
    assert not outcome.failed, outcome.result["msg"]
    checked = outcome.result["services"][0]
    # force does not wait: one look at the health (with health_wait=30 it would look again).
    assert checked["health"]["healthy"] is False and checked["health"]["attempts"] == 1
    assert checked["preflight"]["passed_count"] == 2 and checked["current"]["passed_count"] == 1


def test_an_unknown_target_fails_even_with_force(haproxy, http):
    outcome = run([service(backend="backend_gren")], force=True)
    assert outcome.failed and outcome.result["failed_stage"] == "health"
    assert outcome.result["msg"].startswith("backend 'backend_gren' does not exist in HAProxy; backends: ")
    assert http.calls == []


def test_a_wrong_server_fails_the_preflight_and_the_current_path_is_not_asked(haproxy, http):
    http.servers[GREEN2] = "version=blue\n"
    outcome = run([service()])
    assert outcome.failed and outcome.result["failed_stage"] == "preflight"
    assert outcome.result["msg"] == (
        "backend 'backend_green': 1 of 2 servers failed the preflight of %s: green2 127.0.0.1:%d: "
        "body did not match 'version=green' (got 'version=blue')" % (URL, GREEN2))
    assert outcome.result["services"][0]["current"] is None
    assert [call["port"] for call in http.calls] == [GREEN1, GREEN2]


def test_a_current_path_that_does_not_answer_fails(haproxy, http):
    http.listener = "maintenance page"
    outcome = run([service()], requests=2)
    assert outcome.failed and outcome.result["failed_stage"] == "current"
    assert outcome.result["msg"] == "2 of 2 requests to %s failed: 2 x body did not match 'version=blue'" % URL


def test_several_services_name_the_failed_one_and_stop_the_stage(haproxy, http):
    http.servers[GREEN2] = "version=blue\n"
    services = [service(key="shop.test", preflight=False), service(key="api.test")]
    outcome = run(services)
    assert outcome.failed and outcome.result["failed_stage"] == "preflight"
    assert outcome.result["msg"].startswith("api.test: backend 'backend_green': 1 of 2 servers failed"), \
        outcome.result["msg"]
    shop, api = outcome.result["services"]
    assert shop["preflight"] is None and api["preflight"]["failed_servers"] == ["green2"]
    assert shop["current"] is None and api["current"] is None  # no service reaches the next stage


def test_stages_a_service_does_not_need_do_not_run(haproxy, http):
    outcome = run([service(preflight=False, current=False)])
    assert not outcome.failed
    checked = outcome.result["services"][0]
    assert checked["health"]["healthy"] is True and checked["preflight"] is None and checked["current"] is None
    assert http.calls == [] and outcome.result["msg"] == "precheck passed for active -> backend_green: target healthy"


@pytest.mark.parametrize("services, args, message", [
    ([], {}, "services must list at least one service to check"),
    ([service(), service()], {}, "service 'active': is listed twice"),
    ([service(url="ftp://release.test/")], {}, "service 'active': "),
    ([service(body_regex="version=(green")], {}, "service 'active': "),
    ([service(backend=" ")], {}, "service 'active': backend must name the target backend"),
    ([service(min_healthy="150%")], {}, "service 'active': "),
    ([service()], {"requests": 0}, "requests must be at least 1, got 0"),
    ([service()], {"request_timeout": 0}, "request_timeout"),
])
def test_bad_input_is_one_error_and_nothing_is_asked(haproxy, http, services, args, message):
    _replies, sent = haproxy
    outcome = run(services, **args)
    assert outcome.failed and outcome.result["msg"].startswith(message), outcome.result["msg"]
    assert sent == [] and http.calls == []


@pytest.mark.parametrize("level", ["user", "operator"])
def test_a_socket_below_admin_is_refused_before_anything_else(haproxy, http, level):
    """HAProxy 2.6 lets a `level user` socket change maps; the release still refuses it, saying how to fix it."""
    replies, sent = haproxy
    replies["show cli level"] = fixture("show_cli_level_%s.txt" % level)
    outcome = run([service()])
    assert outcome.failed and outcome.result["failed_stage"] == "socket"
    message = outcome.result["msg"]
    assert "is at level %s" % level in message and "stats socket /nonexistent/admin.sock ... level admin" in message
    assert sent == ["show cli level"] and http.calls == []
    assert outcome.result["services"][0]["health"] is None


def test_an_haproxy_that_cannot_say_its_level_is_not_refused(haproxy, http):
    """Before 2.0 `show cli level` is an unknown command: no refusal on that alone."""
    replies, _sent = haproxy
    replies["show cli level"] = fixture("unknown_command.txt")
    outcome = run([service()])
    assert not outcome.failed, outcome.result["msg"]


def test_the_precheck_options_come_from_the_shared_helper_unchanged(monkeypatch):
    """The options release_step's step prepare shares (the precheck doc fragment), with the types and
    defaults playbooks were written against."""
    assert precheck_utils.precheck_argument_spec() == dict(
        health_wait=dict(type="float", default=0),
        poll_interval=dict(type="float", default=1.0),
        allow_no_check=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        requests=dict(type="int", default=1),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=True),
        preflight_validate_certs=dict(type="bool", default=False),
        skip_servers=dict(type="list", elements="str", default=[]),
    )
    spec = argument_spec_of(release_precheck, monkeypatch)
    shared = precheck_utils.precheck_argument_spec()
    assert dict((name, spec[name]) for name in shared) == shared
    assert set(spec) == set(shared) | {"socket", "timeout", "services"}
