# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the http_smoke module: options in, one send_request per request, result out.

The request itself (deadline, body cap, TLS, resolve) is tested in
tests/unit/plugins/module_utils/test_smoke.py and, against real listeners, in
tests/integration/test_http_smoke.py; here send_request is a fake that records its arguments.
"""

from __future__ import annotations


import pytest


from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke
from ansible_collections.bluegreen.haproxy.plugins.modules import http_smoke

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main

URL = "http://release.example.test/release"


class FakeSend(object):
    """Answers each request with the next body of `bodies` (None = connection refused)."""

    def __init__(self, bodies, status=200):
        self.bodies = list(bodies)
        self.status = status
        self.calls = []

    def __call__(self, url, **options):
        self.calls.append(dict(options, url=url))
        body = self.bodies[(len(self.calls) - 1) % len(self.bodies)]
        if body is None:
            return smoke.request_result(0.01, error="connection refused")
        return smoke.request_result(0.01, status=self.status, text=body, status_codes=options["status_codes"],
                                    body_regex=options["body_regex"], body_truncated=len(body) > 50)


@pytest.fixture
def run(monkeypatch):
    """main() with args and a fake send_request: (failed, result, calls)."""

    monkeypatch.setattr(http_smoke.time, "sleep", lambda seconds: None)

    def runner(args, bodies=("version=green\n",), status=200, check=False):
        send = FakeSend(bodies, status)
        monkeypatch.setattr(http_smoke, "send_request", send)
        full = dict(args, _ansible_check_mode=check)
        caught = run_main(http_smoke.main, full)
        return caught.failed, caught.result, send.calls

    return runner


def test_defaults_reach_send_request(run):
    failed, result, calls = run({"url": URL})
    assert failed is False, result
    assert len(calls) == 1
    call = calls[0]
    assert call["url"] == URL
    assert (call["method"], call["timeout"], call["max_body_bytes"]) == ("GET", 5.0, 1048576)
    assert (call["validate_certs"], call["follow_redirects"], call["use_proxy"]) == (True, "none", True)
    assert call["connect_address"] is None and call["data"] is None
    assert (call["url_username"], call["url_password"], call["force_basic_auth"]) == (None, None, False)
    assert (call["use_netrc"], call["http_agent"]) == (True, "ansible-httpget")
    assert result["msg"] == "1 request to %s passed" % URL


def test_url_options_reach_every_request(run, tmp_path, monkeypatch):
    contexts = []
    monkeypatch.setattr(http_smoke, "build_tls_context", lambda *args: contexts.append(args) or "context")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("certificate")
    key.write_text("key")
    failed, result, calls = run({
        "url": URL, "requests": 2, "url_username": "owner", "url_password": "s3cret", "force_basic_auth": True,
        "client_cert": str(cert), "client_key": str(key), "use_netrc": False, "http_agent": "smoke/1"})
    assert failed is False, result
    assert contexts == [(True, None, str(cert), str(key))]
    for call in calls:
        assert (call["url_username"], call["url_password"], call["force_basic_auth"]) == ("owner", "s3cret", True)
        assert (call["use_netrc"], call["http_agent"], call["tls_context"]) == (False, "smoke/1", "context")
    assert "s3cret" not in str(result)


def test_options_reach_every_request(run):
    failed, result, calls = run({
        "url": URL, "requests": 3, "timeout": 2, "max_body_bytes": 4096, "resolve": "127.0.0.1:8080",
        "method": "post", "body": "a=1", "headers": {"X-Test": 1}, "follow_redirects": "safe",
        "validate_certs": False, "body_regex": "green", "status_code": [200, 204]})
    assert failed is False, result
    assert len(calls) == 3
    for call in calls:
        assert (call["timeout"], call["max_body_bytes"]) == (2.0, 4096)
        assert call["connect_address"] == ("127.0.0.1", 8080)
        assert (call["method"], call["data"], call["headers"]) == ("POST", b"a=1", {"X-Test": "1"})
        assert call["body_regex"].pattern == "green" and call["status_codes"] == [200, 204]
    assert result["msg"] == "all 3 requests to %s (via 127.0.0.1:8080) passed" % URL


def test_results_carry_body_truncated(run):
    long_body = "version=green\n" + "x" * 100
    failed, result, calls = run({"url": URL, "requests": 2}, bodies=[long_body, "version=green\n"])
    assert [entry["body_truncated"] for entry in result["results"]] == [True, False]
    assert all(not key.startswith("_") for entry in result["results"] for key in entry)


def test_a_failed_request_fails_the_task_unless_told_otherwise(run):
    failed, result, calls = run({"url": URL, "requests": 4, "body_regex": "^version=green$"},
                                bodies=["version=green", "version=blue", None, "version=green"])
    assert failed is True
    assert (result["passed"], result["passed_count"], result["failed_count"]) == (False, 2, 2)
    assert result["msg"] == ("2 of 4 requests to %s failed: 1 x body did not match '^version=green$', "
                             "1 x connection refused" % URL)
    assert result["summary"]["error_counts"] == {"connection refused": 1}

    failed, result, calls = run({"url": URL, "requests": 2, "body_regex": "green", "fail_on_error": False},
                                bodies=["version=blue"])
    assert failed is False
    assert result["passed"] is False


def test_check_mode_sends_the_requests(run):
    failed, result, calls = run({"url": URL, "requests": 2}, check=True)
    assert failed is False
    assert len(calls) == 2
    assert result["changed"] is False


@pytest.mark.parametrize("args, message", [
    ({"timeout": 0}, "timeout must be more than 0 seconds"),
    ({"timeout": -1}, "timeout must be more than 0 seconds"),
    ({"max_body_bytes": -1}, "max_body_bytes must be 0 or more, got -1"),
    ({"requests": 0}, "requests must be at least 1"),
    ({"interval": -0.5}, "interval must not be negative"),
    ({"url": "ftp://x.test/"}, "url 'ftp://x.test/' has the unsupported scheme 'ftp'"),
    ({"resolve": "a b"}, "resolve 'a b' must be an address"),
    ({"body_regex": "("}, "body_regex '(' is not a valid regular expression"),
    ({"status_code": [0]}, "status_code: 0 is not an HTTP status code"),
    ({"ca_path": "/nonexistent/ca.pem"}, "ca_path '/nonexistent/ca.pem' is not a file"),
    ({"client_cert": "/nonexistent/c.pem"}, "client_cert '/nonexistent/c.pem' is not a file"),
    ({"http_agent": "a\r\nX-Injected: 1"}, "http_agent 'a\\r\\nX-Injected: 1' contains CR, LF or NUL"),
])
def test_bad_options_send_nothing(run, args, message):
    failed, result, calls = run(dict({"url": URL}, **args))
    assert failed is True
    assert result["msg"].startswith(message), result["msg"]
    assert calls == []
    assert result["passed"] is False and "results" not in result


def test_a_client_key_without_its_certificate_is_refused(run):
    failed, result, calls = run({"url": URL, "client_key": "/etc/pki/smoke/client.key"})
    assert failed is True and calls == []
    assert result["msg"] == "missing parameter(s) required by 'client_key': client_cert"


def test_max_body_bytes_zero_is_allowed(run):
    failed, result, calls = run({"url": URL, "max_body_bytes": 0})
    assert failed is False
    assert calls[0]["max_body_bytes"] == 0


def test_the_smoke_options_come_from_the_shared_helpers_unchanged(monkeypatch):
    """The request options (smoke doc fragment) and the repeat options (smoke.repeat) are
    module_utils/smoke.py's helpers, with the types and defaults playbooks were written against."""
    assert smoke.smoke_request_argument_spec() == dict(
        url=dict(type='str', required=True),
        headers=dict(type='dict', default={}),
        status_code=dict(type='list', elements='int', default=[200]),
        body_regex=dict(type='str'),
        max_body_bytes=dict(type='int', default=1048576),
    )
    assert smoke.smoke_repeat_argument_spec() == dict(
        requests=dict(type='int', default=1),
        interval=dict(type='float', default=0),
        timeout=dict(type='float', default=5),
        fail_on_error=dict(type='bool', default=True),
    )
    spec = argument_spec_of(http_smoke, monkeypatch)
    shared = dict(smoke.smoke_request_argument_spec(), **smoke.smoke_repeat_argument_spec())
    assert dict((name, spec[name]) for name in shared) == shared
