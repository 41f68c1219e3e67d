# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""haproxy_backend_preflight against a real HAProxy and real releases on loopback.

Servers the lab's config does not have (a TLS server, one that records the Host header and
SNI, one that never answers) are added at runtime with `add server` (dynamic servers), so
HAProxy itself reports their address, port and `srv_use_ssl`, as it would for configured ones.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab import APP, ansible_bin, ansible_env, free_port, wait_for

PUBLIC_HOST = "release.test"
URL = "http://%s/release" % PUBLIC_HOST
BODY = "^version=green$"


# ---------------------------------------------------------------- helpers

def assert_clean_failure(result):
    assert result.get("failed") is True, result
    assert result.get("exception", "(traceback unavailable)") == "(traceback unavailable)", result["exception"]
    assert "module_stderr" not in result, result.get("module_stderr")
    assert "Traceback" not in json.dumps(result)


def add_server(env, name, port, ssl_server=False):
    """A dynamic server in backend_green, enabled (dynamic servers start in maintenance)."""
    options = " ssl verify none" if ssl_server else ""
    reply = env.runtime("add server backend_green/%s 127.0.0.1:%d%s" % (name, port, options))
    assert reply.startswith("New server registered."), reply
    assert env.runtime("enable server backend_green/%s" % name) == "\n"


def preflight_args(env, **extra):
    args = {"socket": env.socket, "backend": "backend_green", "url": URL, "body_regex": BODY}
    args.update(extra)
    return args


def by_name(result):
    return {entry["name"]: entry for entry in result["servers"]}


class RecordingHandler(BaseHTTPRequestHandler):
    """Answers `version=green` and records the Host header (the server records the SNI)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.server.hosts.append(self.headers.get("Host"))
        payload = b"version=green\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, fmt, *args):
        pass


class RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls_context=None):
        super().__init__(("127.0.0.1", 0), RecordingHandler)
        self.hosts = []
        self.snis = []
        if tls_context is not None:
            tls_context.sni_callback = lambda sslsock, name, ctx: self.snis.append(name)
            self.socket = tls_context.wrap_socket(self.socket, server_side=True)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def port(self):
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass

    def stop(self):
        self.shutdown()
        self.server_close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for PUBLIC_HOST: (cert_path, key_path)."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.fail("the openssl CLI is not installed; the TLS preflight tests need it")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = str(directory / "cert.pem"), str(directory / "key.pem")
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", cert, "-subj", "/CN=%s" % PUBLIC_HOST,
         "-addext", "subjectAltName=DNS:%s" % PUBLIC_HOST],
        check=True, capture_output=True,
    )
    return cert, key


@pytest.fixture
def recording_server():
    server = RecordingServer()
    yield server
    server.stop()


@pytest.fixture
def tls_recording_server(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = RecordingServer(tls_context=context)
    yield server
    server.stop()


@pytest.fixture
def tls_app(certificate):
    """The real release app, green, serving HTTPS."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, APP, "--color", "green", "--bind", "127.0.0.1", "--port", str(port),
         "--tls-cert", certificate[0], "--tls-key", certificate[1]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def listening():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False

    wait_for(listening, what="the TLS app on port %d" % port)
    yield port
    process.terminate()
    process.wait(timeout=5)


# ---------------------------------------------------------------- the verdict

def test_all_servers_right_passes(run_module, haproxy_env):
    result = run_module("haproxy_backend_preflight", preflight_args(haproxy_env))
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is False
    assert (result["passed_count"], result["failed_count"]) == (2, 0)
    assert result["failed_servers"] == [] and result["skipped_servers"] == []
    assert result["servers"] == [
        {"name": name, "address": "127.0.0.1", "port": haproxy_env.apps[name].port, "ssl": False,
         "status": 200, "passed": True, "reason": None, "skipped": False}
        for name in ("green1", "green2")
    ]
    assert result["msg"] == "backend 'backend_green': all 2 servers answered %s as expected" % URL


def test_wrong_server_is_named_with_why(run_module, haproxy_factory):
    env = haproxy_factory(colors={"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "blue"})
    env.wait_all_up()
    result = run_module("haproxy_backend_preflight", preflight_args(env))
    assert_clean_failure(result)
    assert result["failed_servers"] == ["green2"]
    assert (result["passed_count"], result["failed_count"]) == (1, 1)
    green2 = by_name(result)["green2"]
    assert green2["status"] == 200 and green2["passed"] is False
    assert green2["reason"] == "body did not match '^version=green$' (got 'version=blue')"
    assert ("green2 127.0.0.1:%d: body did not match '^version=green$' (got 'version=blue')"
            % env.apps["green2"].port) in result["msg"]
    assert "green1" not in result["msg"]

    # Check mode runs the same requests (it only reads) and reaches the same verdict.
    checked = run_module("haproxy_backend_preflight", preflight_args(env), check=True)
    assert_clean_failure(checked)
    assert checked["failed_servers"] == ["green2"]


def test_status_code_and_down_server(run_module, haproxy_env):
    haproxy_env.apps["green1"].stop()  # refused, whatever its health checks say yet
    result = run_module("haproxy_backend_preflight", preflight_args(haproxy_env, status_code=[204]))
    assert_clean_failure(result)
    servers = by_name(result)
    assert servers["green1"]["reason"] == "connection refused"
    assert servers["green1"]["status"] is None
    assert servers["green2"]["reason"] == "status 200 (expected 204)"
    assert result["failed_servers"] == ["green1", "green2"]


def test_skip_servers_leaves_a_wrong_server_out(run_module, haproxy_factory):
    env = haproxy_factory(colors={"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "blue"})
    env.wait_all_up()
    result = run_module("haproxy_backend_preflight", preflight_args(env, skip_servers=["green2"]))
    assert result.get("failed") is not True, result.get("msg")
    assert result["skipped_servers"] == ["green2"]
    assert by_name(result)["green2"] == {
        "name": "green2", "address": "127.0.0.1", "port": env.apps["green2"].port, "ssl": False,
        "status": None, "passed": None, "reason": "listed in skip_servers", "skipped": True}
    assert result["msg"].endswith("all 1 servers answered %s as expected; skipped: green2 (skip_servers)" % URL)

    typo = run_module("haproxy_backend_preflight", preflight_args(env, skip_servers=["gren2"]))
    assert_clean_failure(typo)
    assert typo["msg"] == ("skip_servers names gren2 that backend 'backend_green' does not have; "
                           "its servers: green1, green2")


def test_servers_in_maintenance_are_skipped_and_listed(run_module, haproxy_factory):
    env = haproxy_factory(colors={"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "blue"})
    env.wait_all_up()
    assert env.runtime("disable server backend_green/green2") == "\n"
    result = run_module("haproxy_backend_preflight", preflight_args(env))
    assert result.get("failed") is not True, result.get("msg")
    assert result["skipped_servers"] == ["green2"]
    green2 = by_name(result)["green2"]
    assert green2["skipped"] is True and green2["passed"] is None
    assert green2["reason"].startswith("in maintenance (MAINT)")
    assert result["msg"].endswith("skipped: green2 (MAINT)")

    # Every server skipped: nothing is proven, so the gate does not pass.
    assert env.runtime("disable server backend_green/green1") == "\n"
    none_checked = run_module("haproxy_backend_preflight", preflight_args(env))
    assert_clean_failure(none_checked)
    assert none_checked["msg"] == ("backend 'backend_green': no server was checked, so nothing is proven; "
                                   "skipped: green1 (MAINT), green2 (MAINT)")


def test_host_header_is_the_public_host(run_module, haproxy_env, recording_server):
    add_server(haproxy_env, "recorder", recording_server.port)
    result = run_module("haproxy_backend_preflight", preflight_args(
        haproxy_env, url="http://%s:8080/release?probe=1" % PUBLIC_HOST))
    assert result.get("failed") is not True, result.get("msg")
    assert result["passed_count"] == 3
    assert recording_server.hosts == ["%s:8080" % PUBLIC_HOST]


# ---------------------------------------------------------------- TLS servers (srv_use_ssl)

def test_tls_server_gets_https_with_sni_and_host(run_module, haproxy_env, tls_recording_server, tls_app):
    add_server(haproxy_env, "green_tls", tls_app, ssl_server=True)
    add_server(haproxy_env, "recorder_tls", tls_recording_server.port, ssl_server=True)
    result = run_module("haproxy_backend_preflight", preflight_args(haproxy_env))
    assert result.get("failed") is not True, result.get("msg")
    servers = by_name(result)
    assert [name for name in servers if servers[name]["ssl"]] == ["green_tls", "recorder_tls"]
    assert servers["green_tls"]["port"] == tls_app
    assert result["passed_count"] == 4
    assert tls_recording_server.snis == [PUBLIC_HOST]
    assert tls_recording_server.hosts == [PUBLIC_HOST]

    # validate_certs: the self-signed certificate is not trusted by the system store.
    strict = run_module("haproxy_backend_preflight", preflight_args(
        haproxy_env, validate_certs=True, skip_servers=["green1", "green2", "recorder_tls"]))
    assert_clean_failure(strict)
    assert by_name(strict)["green_tls"]["reason"].startswith("TLS certificate verification failed")


# ---------------------------------------------------------------- time and errors

def test_request_timeout_bounds_a_silent_server(run_module, haproxy_env):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (in the backlog) and never answers
    try:
        add_server(haproxy_env, "silent", silent.getsockname()[1])
        # A module that waited forever would fail run_module's own timeout; "timed out" below
        # is the proof that request_timeout ended the request (no bound on a busy machine's time).
        result = run_module("haproxy_backend_preflight", preflight_args(
            haproxy_env, request_timeout=1, skip_servers=["green1", "green2"]))
    finally:
        silent.close()
    assert_clean_failure(result)
    assert by_name(result)["silent"]["reason"] == "timed out"
    assert result["failed_servers"] == ["silent"]


def test_unknown_backend_is_a_clear_error(run_module, haproxy_env):
    result = run_module("haproxy_backend_preflight", preflight_args(haproxy_env, backend="backend_gren"))
    assert_clean_failure(result)
    assert result["msg"] == ("backend 'backend_gren' does not exist in HAProxy; "
                             "backends: backend_blue, backend_green")


@pytest.mark.parametrize("args, message", [
    ({"url": "release.test/release"}, "url 'release.test/release' has no scheme"),
    ({"body_regex": "version=("}, "body_regex 'version=(' is not a valid regular expression"),
    ({"status_code": [99]}, "status_code: 99 is not an HTTP status code"),
    ({"request_timeout": 0}, "request_timeout must be more than 0 seconds"),
    ({"max_body_bytes": -1}, "max_body_bytes must be 0 or more"),
    ({"socket": "/nonexistent/admin.sock"}, "HAProxy Runtime API socket /nonexistent/admin.sock"),
])
def test_bad_input_fails_before_anything_is_sent(run_module, haproxy_env, args, message):
    result = run_module("haproxy_backend_preflight", preflight_args(haproxy_env, **args))
    assert_clean_failure(result)
    assert message in result["msg"], result["msg"]
    assert "servers" not in result


def test_ansible_doc_renders():
    completed = subprocess.run(
        [ansible_bin("ansible-doc"), "-t", "module", "--json", "bluegreen.haproxy.haproxy_backend_preflight"],
        env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    doc = json.loads(completed.stdout)["bluegreen.haproxy.haproxy_backend_preflight"]["doc"]
    assert set(doc["options"]) == {
        "socket", "timeout", "backend", "url", "headers", "status_code", "body_regex", "request_timeout",
        "validate_certs", "max_body_bytes", "skip_servers"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
