# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for haproxy_backend_preflight and module_utils/preflight.py.

HAProxy's replies are real captures (tests/unit/fixtures/haproxy-<version>/, `show backend`
and `show servers state backend_green`, with and without a TLS server); the HTTP side is a
fake `send_request` that answers per server address and records what was asked.
"""

from __future__ import annotations

import os
import re

import pytest


from ansible_collections.bluegreen.haproxy.plugins.module_utils import preflight as preflight_utils
from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke
from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import BackendNotFoundError
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    parse_servers_state,
    server_from_state_row,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIClient
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_backend_preflight

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "fixtures")
VERSIONS = ["2.6", "3.0"]
parametrize_version = pytest.mark.parametrize("version", VERSIONS)
URL = "http://release.test/release"
# Ports of backend_green's servers in the captures (fixtures README).
GREEN1 = 19406
GREEN2 = 19407


def fixture(version, name):
    with open(os.path.join(FIXTURES, "haproxy-" + version, name), encoding="utf-8", newline="") as handle:
        return handle.read()


class FixtureClient(RuntimeAPIClient):
    """Answers `show backend` and `show servers state <backend>` with captured replies."""

    def __init__(self, version, state_file="show_servers_state_backend.txt", address="/nonexistent/admin.sock",
                 timeout=5.0):
        super(FixtureClient, self).__init__(address, timeout)  # parses the address as the real one does
        self.replies = {
            "show backend": fixture(version, "show_backend.txt"),
            "show servers state backend_green": fixture(version, state_file),
            "show servers state backend_blue": fixture(version, "show_servers_state_no_such_backend.txt"),
        }
        self.lines = []

    def raw(self, line):
        self.lines.append(line)
        return self.replies[line]


class FakeSender(object):
    """send_request stand-in: answers by (address, port); records every call."""

    def __init__(self, bodies=None, errors=None, status=200):
        self.bodies = bodies or {}
        self.errors = errors or {}
        self.status = status
        self.calls = []

    def __call__(self, url, connect_address=None, **options):
        self.calls.append(dict(options, url=url, connect_address=connect_address))
        port = connect_address[1]
        if port in self.errors:
            return smoke.request_result(0.01, error=self.errors[port])
        return smoke.request_result(0.01, status=self.status, text=self.bodies.get(port, "version=green\n"),
                                    status_codes=options["status_codes"], body_regex=options["body_regex"])


def servers(version, state_file="show_servers_state_backend.txt"):
    return [server_from_state_row(row) for row in parse_servers_state(fixture(version, state_file))]


# ---------------------------------------------------------------- module_utils: asking HAProxy

@parametrize_version
def test_query_servers_reads_show_servers_state(version):
    client = FixtureClient(version, "show_servers_state_tls.txt")
    found = preflight_utils.query_servers(client, "backend_green")
    assert [(s["name"], s["address"], s["port"], s["ssl"]) for s in found] == [
        ("green1", "127.0.0.1", GREEN1, False), ("green2", "127.0.0.1", GREEN2, False),
        ("green_tls", "127.0.0.1", GREEN2, True)]
    assert client.lines == ["show backend", "show servers state backend_green"]


@parametrize_version
def test_query_servers_unknown_backend_lists_the_existing_ones(version):
    client = FixtureClient(version)
    with pytest.raises(BackendNotFoundError) as caught:
        preflight_utils.query_servers(client, "backend_gren")
    assert str(caught.value) == "backend 'backend_gren' does not exist in HAProxy; backends: backend_blue, backend_green"
    assert client.lines == ["show backend"]  # nothing else asked


@parametrize_version
def test_query_servers_cant_find_backend_reply(version):
    # Listed by `show backend` but gone by the time of `show servers state` (a reload in between).
    client = FixtureClient(version)
    with pytest.raises(BackendNotFoundError):
        preflight_utils.query_servers(client, "backend_blue")


def test_query_servers_unexpected_reply():
    client = FixtureClient("2.6")
    client.replies["show servers state backend_green"] = "Unexpected text " + "x" * 200 + "\n\n"
    with pytest.raises(preflight_utils.PreflightError) as caught:
        preflight_utils.query_servers(client, "backend_green")
    assert "not a server list" in str(caught.value)
    assert len(str(caught.value)) < 200  # the reply is quoted short


# ---------------------------------------------------------------- module_utils: the verdict

@parametrize_version
def test_every_server_gets_the_public_url_on_its_own_address(version):
    send = FakeSender()
    result = preflight_utils.preflight(servers(version, "show_servers_state_tls.txt"), URL,
                                       status_codes=[200], body_regex=re.compile("^version=green$"), send=send)
    assert [(c["url"], c["connect_address"]) for c in send.calls] == [
        ("http://release.test/release", ("127.0.0.1", GREEN1)),
        ("http://release.test/release", ("127.0.0.1", GREEN2)),
        ("https://release.test/release", ("127.0.0.1", GREEN2)),  # srv_use_ssl: HTTPS, SNI release.test
    ]
    for call in send.calls:
        assert (call["follow_redirects"], call["use_proxy"], call["validate_certs"]) == ("none", False, False)
    assert result["failed_servers"] == [] and result["passed_count"] == 3
    assert not preflight_utils.failed(result)


@pytest.mark.parametrize("url, use_ssl, expected", [
    ("http://release.test/release", True, "https://release.test/release"),
    ("https://release.test/a?b=1", False, "http://release.test/a?b=1"),
    ("https://release.test:8443/", True, "https://release.test:8443/"),
    ("http://release.test:8080/x", False, "http://release.test:8080/x"),
])
def test_server_url_swaps_only_the_scheme(url, use_ssl, expected):
    assert preflight_utils.server_url(smoke.parse_url(url), use_ssl) == expected


@parametrize_version
def test_wrong_server_is_named_with_what_it_said(version):
    send = FakeSender(bodies={GREEN2: "version=blue\n"})
    result = preflight_utils.preflight(servers(version), URL, status_codes=[200],
                                       body_regex=re.compile("version=green"), backend="backend_green", send=send)
    assert result["failed_servers"] == ["green2"]
    assert (result["passed_count"], result["failed_count"]) == (1, 1)
    assert result["servers"][1] == {
        "name": "green2", "address": "127.0.0.1", "port": GREEN2, "ssl": False, "status": 200, "passed": False,
        "reason": "body did not match 'version=green' (got 'version=blue')", "skipped": False}
    assert preflight_utils.failed(result)
    assert preflight_utils.message("backend_green", URL, result) == (
        "backend 'backend_green': 1 of 2 servers failed the preflight of http://release.test/release: "
        "green2 127.0.0.1:%d: body did not match 'version=green' (got 'version=blue')" % GREEN2)


def test_reasons_for_status_errors_and_empty_bodies():
    send = FakeSender(bodies={GREEN2: ""}, errors={GREEN1: "connection refused"})
    result = preflight_utils.preflight(servers("2.6"), URL, status_codes=[200], body_regex=re.compile("green"),
                                       send=send)
    reasons = [s["reason"] for s in result["servers"]]
    assert reasons == ["connection refused", "body did not match 'green' (got an empty body)"]
    assert [s["status"] for s in result["servers"]] == [None, 200]

    wrong_status = preflight_utils.preflight(servers("2.6"), URL, status_codes=[204], send=FakeSender())
    assert [s["reason"] for s in wrong_status["servers"]] == ["status 200 (expected 204)"] * 2


def test_maintenance_and_skip_servers_are_skipped_and_listed():
    send = FakeSender()
    found = servers("2.6", "show_servers_state_tls_maint.txt")  # green_tls in MAINT
    result = preflight_utils.preflight(found, URL, skip_servers=["green1"], send=send)
    assert [c["connect_address"] for c in send.calls] == [("127.0.0.1", GREEN2)]
    assert result["skipped_servers"] == ["green1", "green_tls"]
    skipped = {s["name"]: s for s in result["servers"] if s["skipped"]}
    assert skipped["green1"]["reason"] == "listed in skip_servers"
    assert skipped["green_tls"]["reason"].startswith("in maintenance (MAINT)")
    assert all(s["passed"] is None and s["status"] is None for s in skipped.values())
    assert (result["passed_count"], result["failed_count"]) == (1, 0)
    assert preflight_utils.message("backend_green", URL, result).endswith(
        "all 1 servers answered %s as expected; skipped: green1 (skip_servers), green_tls (MAINT)" % URL)


def test_nothing_checked_fails():
    result = preflight_utils.preflight(servers("2.6"), URL, skip_servers=["green1", "green2"], send=FakeSender())
    assert preflight_utils.failed(result)
    assert "no server was checked" in preflight_utils.message("backend_green", URL, result)
    empty = preflight_utils.preflight([], URL, send=FakeSender())
    assert preflight_utils.failed(empty)
    assert preflight_utils.message("backend_green", URL, empty) == (
        "backend 'backend_green' has no servers: there is nothing the preflight could prove")


def test_unknown_skip_servers_name_is_refused_before_any_request():
    send = FakeSender()
    with pytest.raises(preflight_utils.PreflightOptionError) as caught:
        preflight_utils.preflight(servers("2.6"), URL, skip_servers=["gren2"], backend="backend_green", send=send)
    assert str(caught.value) == ("skip_servers names gren2 that backend 'backend_green' does not have; "
                                 "its servers: green1, green2")
    assert send.calls == []


def test_server_without_address_or_port_fails_with_the_fix():
    found = servers("2.6")
    found[0].update(address=None, fqdn="green1.internal")
    found[1].update(port=0)
    send = FakeSender()
    result = preflight_utils.preflight(found, URL, send=send)
    assert send.calls == []
    reasons = [s["reason"] for s in result["servers"]]
    assert reasons[0].startswith("no address yet (green1.internal is not resolved)")
    assert reasons[1].startswith("no port of its own")
    assert result["failed_servers"] == ["green1", "green2"]


@pytest.mark.parametrize("value, fragment", [
    ([""], "skip_servers must list server names"),
    ([None], "skip_servers must list server names"),
])
def test_validate_skip_servers(value, fragment):
    with pytest.raises(preflight_utils.PreflightOptionError, match=fragment):
        preflight_utils.validate_skip_servers(value)
    assert preflight_utils.validate_skip_servers(["a", "b", "a"]) == ["a", "b"]


# ---------------------------------------------------------------- the module


@pytest.fixture
def run(monkeypatch):
    """Run the module's main() with args; (failed, result, client, sender)."""

    def runner(args, version="2.6", state_file="show_servers_state_backend.txt", sender=None, check=False):
        clients = []

        def make_client(address, timeout):
            client = FixtureClient(version, state_file, address, timeout)
            client.made_with = (address, timeout)
            clients.append(client)
            return client

        sender = sender or FakeSender()
        monkeypatch.setattr(haproxy_backend_preflight, "RuntimeAPIClient", make_client)
        monkeypatch.setattr(preflight_utils, "send_request", sender)
        full = dict(args)
        if check:
            full["_ansible_check_mode"] = True
        caught = run_main(haproxy_backend_preflight.main, full)
        return caught.failed, caught.result, clients, sender

    return runner


@parametrize_version
def test_module_passes_with_defaults(run, version):
    failed, result, clients, sender = run({"backend": "backend_green", "url": URL, "body_regex": "^version=green$"},
                                          version=version)
    assert failed is False, result
    assert result["changed"] is False
    assert result["msg"] == "backend 'backend_green': all 2 servers answered %s as expected" % URL
    assert clients[0].made_with == ("/run/haproxy/admin.sock", 5.0)
    for call in sender.calls:
        assert (call["timeout"], call["max_body_bytes"], call["validate_certs"]) == (5.0, 1048576, False)
        assert call["status_codes"] == [200]
    assert set(result) >= {"servers", "failed_servers", "skipped_servers", "passed_count", "failed_count"}


def test_module_fails_naming_the_wrong_server_also_in_check_mode(run):
    for check in (False, True):
        failed, result, clients, sender = run(
            {"backend": "backend_green", "url": URL, "body_regex": "version=green", "socket": "ipv4@127.0.0.1:9999",
             "timeout": 2, "request_timeout": 1.5, "max_body_bytes": 4096, "validate_certs": True,
             "headers": {"X-Preflight": "1"}},
            sender=FakeSender(bodies={GREEN1: "version=blue\n"}), check=check)
        assert failed is True
        assert result["failed_servers"] == ["green1"]
        assert "green1 127.0.0.1:%d: body did not match 'version=green' (got 'version=blue')" % GREEN1 in result["msg"]
        assert clients[0].made_with == ("ipv4@127.0.0.1:9999", 2.0)
        assert [(c["timeout"], c["max_body_bytes"], c["validate_certs"], c["headers"]) for c in sender.calls] == [
            (1.5, 4096, True, {"X-Preflight": "1"})] * 2


@pytest.mark.parametrize("args, message", [
    ({"url": "release.test/x"}, "url 'release.test/x' has no scheme"),
    ({"body_regex": "("}, "body_regex '(' is not a valid regular expression"),
    ({"status_code": [700]}, "status_code: 700 is not an HTTP status code"),
    ({"request_timeout": 0}, "request_timeout must be more than 0 seconds"),
    ({"max_body_bytes": -5}, "max_body_bytes must be 0 or more"),
    ({"headers": {"X": "a\nb"}}, "headers: the value of 'X' contains CR, LF or NUL"),
    ({"backend": " "}, "backend must name a backend"),
    ({"skip_servers": ["nope"]}, "skip_servers names nope that backend 'backend_green' does not have"),
    ({"backend": "backend_nope"}, "backend 'backend_nope' does not exist in HAProxy"),
    ({"socket": "not-a-socket"}, "socket 'not-a-socket' is neither a unix socket path nor HOST:PORT"),
])
def test_module_bad_input_sends_no_request(run, args, message):
    full = {"backend": "backend_green", "url": URL}
    full.update(args)
    failed, result, clients, sender = run(full)
    assert failed is True
    assert result["msg"].startswith(message), result["msg"]
    assert sender.calls == []
    assert "servers" not in result


def test_the_request_options_are_the_smoke_helper(monkeypatch):
    """url, headers, status_code, body_regex and max_body_bytes are http_smoke's (the smoke doc
    fragment); validate_certs keeps its own default (off: the servers' certificates are internal)."""
    spec = argument_spec_of(haproxy_backend_preflight, monkeypatch)
    shared = smoke.smoke_request_argument_spec()
    assert dict((name, spec[name]) for name in shared) == shared
    assert spec['validate_certs'] == dict(type='bool', default=False)
