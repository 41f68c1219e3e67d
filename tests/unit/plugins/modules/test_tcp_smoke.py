# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the tcp_smoke module: options in, one probe_once per connection, result out.

The attempt itself (sockets, escapes, deadline, read cap) is tested in
tests/unit/plugins/module_utils/test_tcp_probe.py and, through a real HAProxy, in
tests/integration/test_tcp_smoke.py; here probe_once is a fake that records what it was given.
"""

from __future__ import annotations

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils import tcp_probe
from ansible_collections.bluegreen.haproxy.plugins.modules import tcp_smoke

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main

ARGS = {"host": "127.0.0.1", "port": 9000}


class FakeProbe(object):
    """Answers each attempt with the next of `answers` (bytes received; None = connection refused)."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.specs = []

    def __call__(self, spec, attempt):
        self.specs.append(spec)
        answer = self.answers[(attempt - 1) % len(self.answers)]
        if answer is None:
            return tcp_probe.attempt_result(attempt, 0.01, spec, error="connection refused")
        matched = spec.expect is None or bool(spec.expect.search(answer.decode()))
        return tcp_probe.attempt_result(attempt, 0.01, spec, connected=True, received=answer, matched=matched,
                                        ended=None if matched else "eof")


@pytest.fixture
def run(monkeypatch):
    """main() with args and a fake probe_once: (failed, result, specs)."""

    monkeypatch.setattr(tcp_smoke.time, "sleep", lambda seconds: None)

    def runner(args, answers=(b"version=green\n",), check=False):
        probe = FakeProbe(answers)
        monkeypatch.setattr(tcp_smoke, "probe_once", probe)
        caught = run_main(tcp_smoke.main, dict(ARGS, **args), check=check)
        return caught.failed, caught.result, probe.specs

    return runner


def test_defaults(run):
    failed, result, specs = run({})
    assert failed is False, result
    assert len(specs) == 1
    spec = specs[0]
    assert (spec.host, spec.port, spec.timeout, spec.max_bytes) == ("127.0.0.1", 9000, 5.0, 65536)
    assert (spec.send, spec.expect, spec.interval) == (None, None, 0.0)
    assert result["msg"] == "1 connection to tcp://127.0.0.1:9000 passed"
    assert result["changed"] is False


def test_options_reach_every_attempt(run):
    failed, result, specs = run({"requests": 3, "timeout": 2, "max_bytes": 512, "interval": 0.1,
                                 "send": "GET /release HTTP/1.0\\r\\n\\r\\n", "expect": "version=green"})
    assert failed is False, result
    assert len(specs) == 3
    for spec in specs:
        assert (spec.timeout, spec.max_bytes, spec.interval) == (2.0, 512, 0.1)
        assert spec.send == b"GET /release HTTP/1.0\r\n\r\n"
        assert spec.expect.pattern == "version=green"
    assert result["msg"] == "all 3 connections to tcp://127.0.0.1:9000 passed"


def test_a_failed_connection_fails_the_task_unless_told_otherwise(run):
    failed, result, specs = run({"requests": 3, "send": "x", "expect": "green"},
                                answers=[b"version=green", b"version=blue\r\n", None])
    assert failed is True
    assert (result["passed"], result["passed_count"], result["failed_count"]) == (False, 1, 2)
    assert result["msg"] == ("2 of 3 connections to tcp://127.0.0.1:9000 failed: "
                             "1 x connection closed after 14 bytes without a match of 'green', "
                             "1 x connection refused; attempt 2 received 'version=blue\\r\\n'")
    assert [f["attempt"] for f in result["failures"]] == [2, 3]
    assert result["failures"][0]["expected"] == "a match of 'green'"

    failed, result, specs = run({"expect": "green", "fail_on_error": False}, answers=[b"version=blue"])
    assert failed is False
    assert result["passed"] is False


def test_check_mode_makes_the_connections(run):
    failed, result, specs = run({"requests": 2}, check=True)
    assert failed is False
    assert len(specs) == 2
    assert result["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({"port": 0}, "port must be a TCP port from 1 to 65535, got 0"),
    ({"port": 70000}, "port must be a TCP port from 1 to 65535, got 70000"),
    ({"host": "10.0.0.5:9000"}, "host '10.0.0.5:9000' is not an IPv6 address or a host name"),
    ({"expect": "("}, "expect '(' is not a valid regular expression"),
    ({"send": "\\e[0m"}, "send '\\\\e[0m' has the unknown escape '\\\\e' at character 1"),
    ({"requests": 0}, "requests must be at least 1, got 0"),
    ({"timeout": 0}, "timeout must be more than 0 seconds"),
    ({"max_bytes": 0}, "max_bytes must be at least 1, got 0"),
    ({"interval": -1}, "interval must not be negative"),
])
def test_bad_options_connect_nowhere(run, args, message):
    failed, result, specs = run(args)
    assert failed is True
    assert result["msg"].startswith(message), result["msg"]
    assert specs == []
    assert result["passed"] is False and "results" not in result


def test_host_and_port_are_required(run):
    caught = run_main(tcp_smoke.main, {"host": "127.0.0.1"})
    assert caught.failed is True
    assert caught.result["msg"] == "missing required arguments: port"


def test_the_repeat_options_are_the_smoke_helper(monkeypatch):
    """requests, interval, timeout and fail_on_error are http_smoke's (the smoke.repeat doc fragment)."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import smoke_repeat_argument_spec

    spec = argument_spec_of(tcp_smoke, monkeypatch)
    shared = smoke_repeat_argument_spec()
    assert dict((name, spec[name]) for name in shared) == shared
    assert set(spec) == set(shared) | {'host', 'port', 'send', 'expect', 'max_bytes'}
