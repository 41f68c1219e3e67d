# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""http_smoke against real listeners on loopback, run the way Ansible runs it.

The real release app (tests/app/bluegreen_app.py), a real HAProxy in front of it, and, where
the app cannot show what arrived (the Host header, TLS SNI), small stdlib servers started here.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from lab import ansible_bin, ansible_env, free_port

PUBLIC_HOST = "release.example.test"  # .test never resolves, so only `resolve` can reach it


# ---------------------------------------------------------------- small loopback servers

class EchoHandler(BaseHTTPRequestHandler):
    """Answers what it received, so a test can see the Host header, method, headers and body."""

    protocol_version = "HTTP/1.1"

    def _handle(self):
        self.server.seen.append({"host": self.headers.get("Host"), "path": self.path, "method": self.command})
        length = int(self.headers.get("Content-Length") or 0)
        body_in = self.rfile.read(length).decode() if length else ""
        self.server.authorizations.append(self.headers.get("Authorization"))
        if self.server.credentials is not None and self.headers.get("Authorization") != self.server.credentials:
            self._reply(401, "who are you?\n", {"WWW-Authenticate": 'Basic realm="release"'})
            return
        if self.path == "/redirect":
            self._reply(302, "moved\n", {"Location": "/release"})
            return
        if self.path.startswith("/status/"):
            self._reply(int(self.path.rsplit("/", 1)[1]), "status page\n")
            return
        lines = [
            "host=%s" % self.headers.get("Host"),
            "method=%s" % self.command,
            "path=%s" % self.path,
            "x-test=%s" % self.headers.get("X-Test"),
            "body=%s" % body_in,
            "sni=%s" % (self.server.snis[-1] if self.server.snis else None),
        ]
        self._reply(200, "\n".join(lines) + "\n")

    def _reply(self, status, body, headers=None):
        payload = body.encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _handle

    def log_message(self, fmt, *args):
        pass


class EchoServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, tls_context=None, host="127.0.0.1", credentials=None):
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__((host, 0), EchoHandler)
        self.seen = []
        self.snis = []
        self.credentials = credentials  # the Authorization header required, when set
        self.authorizations = []
        if tls_context is not None:
            tls_context.sni_callback = lambda sslsock, name, ctx: self.snis.append(name)
            self.socket = tls_context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # failed TLS handshakes are expected in some tests

    def stop(self):
        self.shutdown()
        self.server_close()


class SilentServer:
    """Accepts connections and never answers: the request must time out."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.clients = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                client = self.sock.accept()[0]
            except OSError:
                return
            self.clients.append(client)

    def stop(self):
        self.sock.close()
        for client in self.clients:
            client.close()


class RawServer:
    """Answers every request with ``answer(server, conn)`` in its own thread; counts bytes sent."""

    def __init__(self, answer):
        self.answer = answer
        self.sent = 0
        self.done = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.answer(self, conn)
        except OSError:
            pass  # the client went away: expected when it stops reading
        finally:
            conn.close()
            self.done.set()

    def send(self, conn, data):
        conn.sendall(data)
        self.sent += len(data)

    def stop(self):
        self.sock.close()


def trickling_answer(server, conn):
    """A 13-byte body, one byte a second: every read is fast, the whole answer takes 13 s."""
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n")
    for byte in b"version=green":
        server.send(conn, bytes([byte]))
        time.sleep(1)


BIG_BODY_SIZE = 50 * 1024 * 1024


def big_answer(server, conn):
    """A 50 MB body whose first line is the version."""
    server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % BIG_BODY_SIZE)
    chunk = b"version=green\n" + b"x" * (65536 - 14)
    for dummy in range(BIG_BODY_SIZE // len(chunk)):
        server.send(conn, chunk)


@pytest.fixture
def raw_server():
    servers = []

    def start(answer):
        server = RawServer(answer)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def echo_server():
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture
def echo_server_v6():
    try:
        server = EchoServer(host="::1")
    except OSError as e:
        pytest.skip("no IPv6 loopback here: %s" % e)
    yield server
    server.stop()


@pytest.fixture
def silent_server():
    server = SilentServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for PUBLIC_HOST: (cert_path, key_path)."""
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("the openssl CLI is not installed; cannot make a test certificate")
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
def tls_server(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server = EchoServer(tls_context=context)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client_certificate(tmp_path_factory):
    """A self-signed client certificate, the only one the mutual-TLS listener trusts: (cert, key)."""
    directory = tmp_path_factory.mktemp("client-tls")
    cert, key = str(directory / "client.pem"), str(directory / "client.key")
    subprocess.run([shutil.which("openssl") or "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
                    "2", "-keyout", key, "-out", cert, "-subj", "/CN=release owner"], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def mutual_tls_server(certificate, client_certificate):
    """A TLS listener for PUBLIC_HOST that refuses clients without client_certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(client_certificate[0])
    server = EchoServer(tls_context=context)
    yield server
    server.stop()


def assert_clean_failure(result):
    """A failure Ansible reports as a message, not a crash."""
    assert result.get("failed") is True, result
    # ansible-core 2.19 adds `exception: (traceback unavailable)` to every failure; a crash has a real one
    assert result.get("exception", "(traceback unavailable)") == "(traceback unavailable)", result["exception"]
    assert "module_stderr" not in result, result.get("module_stderr")
    assert not result["msg"].startswith("MODULE FAILURE"), result["msg"]
    assert "Traceback" not in json.dumps(result)


# ---------------------------------------------------------------- the real app

def test_all_requests_pass(run_module, app_factory):
    app = app_factory("blue")
    started = time.monotonic()
    result = run_module("http_smoke", {"url": app.url + "/release", "requests": 5,
                                       "body_regex": "^version=blue$"})
    run_time = time.monotonic() - started
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["passed"] is True
    assert (result["passed_count"], result["failed_count"], result["requests"]) == (5, 0, 5)
    assert len(result["results"]) == 5
    for entry in result["results"]:
        assert entry["status"] == 200
        assert entry["matched"] is True
        assert entry["error"] is None
        assert entry["body_excerpt"] is None
        # Seconds, within the module's run (milliseconds would exceed it).
        assert isinstance(entry["elapsed"], float) and 0 <= entry["elapsed"] < run_time
    assert result["summary"]["status_counts"] == {"200": 5}
    assert result["summary"]["body_counts"] == {"version=blue": 5}
    assert result["msg"] == "all 5 requests to %s/release passed" % app.url


def test_wrong_body_fails_with_excerpt(run_module, app_factory):
    app = app_factory("blue")
    result = run_module("http_smoke", {"url": app.url + "/release", "requests": 3,
                                       "body_regex": "version=green"})
    assert_clean_failure(result)
    assert result["passed"] is False
    assert (result["passed_count"], result["failed_count"]) == (0, 3)
    assert result["msg"] == ("3 of 3 requests to %s/release failed: 3 x body did not match 'version=green'"
                             % app.url)
    for entry in result["results"]:
        assert entry["status"] == 200
        assert entry["matched"] is False
        assert entry["body_excerpt"] == "version=blue\n"


def test_status_mismatch(run_module, app_factory):
    app = app_factory("blue")
    result = run_module("http_smoke", {"url": app.url + "/missing", "requests": 2})
    assert_clean_failure(result)
    assert result["msg"] == "2 of 2 requests to %s/missing failed: 2 x status 404 (expected 200)" % app.url
    assert result["summary"]["status_counts"] == {"404": 2}
    assert result["results"][0]["body_excerpt"] == "not found\n"

    expected_404 = run_module("http_smoke", {"url": app.url + "/missing", "status_code": [404, 410]})
    assert expected_404["passed"] is True, expected_404


def test_unhealthy_app_answers_503(run_module, app_factory):
    app = app_factory("green")
    app.set_unhealthy()
    result = run_module("http_smoke", {"url": app.url + "/healthz", "status_code": [200, 204]})
    assert_clean_failure(result)
    assert result["results"][0]["status"] == 503
    assert "1 x status 503 (expected 200 or 204)" in result["msg"]


def test_check_mode_sends_the_requests(run_module, app_factory):
    app = app_factory("blue")
    result = run_module("http_smoke", {"url": app.url + "/release", "requests": 2,
                                       "body_regex": "version=blue"}, check=True)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["passed"] is True
    assert result["passed_count"] == 2


# ---------------------------------------------------------------- through HAProxy

def test_one_wrong_server_behind_haproxy_is_caught(run_module, haproxy_factory):
    # backend_blue holds one blue and one green release: half of the answers are wrong
    env = haproxy_factory(colors={"blue1": "blue", "blue2": "green", "green1": "green", "green2": "green"})
    env.wait_all_up()
    result = run_module("http_smoke", {"url": env.frontend_url + "/release", "requests": 10,
                                       "body_regex": "^version=blue$"})
    assert_clean_failure(result)
    assert result["requests"] == 10
    # round robin over two servers, one new connection per request
    assert (result["passed_count"], result["failed_count"]) == (5, 5)
    assert result["summary"]["body_counts"] == {"version=blue": 5, "version=green": 5}
    assert result["msg"] == ("5 of 10 requests to %s/release failed: 5 x body did not match '^version=blue$'"
                             % env.frontend_url)
    assert sorted(e["body_excerpt"] for e in result["results"] if not e["matched"]) == ["version=green\n"] * 5


def test_healthy_pool_behind_haproxy_passes_with_public_host(run_module, haproxy_env):
    result = run_module("http_smoke", {"url": "http://%s/release" % PUBLIC_HOST,
                                       "resolve": "127.0.0.1:%d" % haproxy_env.frontend_port,
                                       "requests": 10, "body_regex": "^version=blue$"})
    assert result.get("failed") is not True, result
    assert result["passed_count"] == 10
    assert result["msg"] == "all 10 requests to http://%s/release (via 127.0.0.1:%d) passed" % (
        PUBLIC_HOST, haproxy_env.frontend_port)


def test_fail_on_error_false_lets_the_playbook_decide(run_module, haproxy_factory):
    env = haproxy_factory(colors={"blue1": "blue", "blue2": "green", "green1": "green", "green2": "green"})
    env.wait_all_up()
    result = run_module("http_smoke", {"url": env.frontend_url + "/release", "requests": 4,
                                       "body_regex": "version=blue", "fail_on_error": False})
    assert result.get("failed") is not True, result
    assert result["passed"] is False
    assert (result["passed_count"], result["failed_count"]) == (2, 2)
    assert result["msg"].startswith("2 of 4 requests")


# ---------------------------------------------------------------- network failures

def test_connection_refused_is_a_per_request_result(run_module):
    port = free_port()  # bound once and closed: nothing listens
    url = "http://127.0.0.1:%d/release" % port
    result = run_module("http_smoke", {"url": url, "requests": 3})
    assert_clean_failure(result)
    assert result["msg"] == "3 of 3 requests to %s failed: 3 x connection refused" % url
    assert [e["error"] for e in result["results"]] == ["connection refused"] * 3
    assert all(e["status"] is None and e["matched"] is False for e in result["results"])
    assert result["summary"]["error_counts"] == {"connection refused": 3}


def test_timeout_is_a_per_request_result(run_module, silent_server):
    url = "http://127.0.0.1:%d/release" % silent_server.port
    result = run_module("http_smoke", {"url": url, "requests": 2, "timeout": 0.5})
    assert_clean_failure(result)
    assert result["msg"] == "2 of 2 requests to %s failed: 2 x timed out" % url
    for entry in result["results"]:
        assert entry["error"] == "timed out"
        # Not before the timeout; the server never answers, so "timed out" is the proof that the
        # timeout ended it (a hang would fail run_module's own timeout), not a time bound.
        assert entry["elapsed"] >= 0.4, entry["elapsed"]


def test_timeout_bounds_the_whole_request(run_module, raw_server):
    # Issue 7: an answer trickling for 13 s passed with timeout 2 (the timeout bounded each read).
    server = raw_server(trickling_answer)
    url = "http://127.0.0.1:%d/release" % server.port
    result = run_module("http_smoke", {"url": url, "timeout": 2, "body_regex": "version=green"})
    assert_clean_failure(result)
    entry = result["results"][0]
    assert entry["error"] == "timed out"
    # Measured by the module around the request (ansible's own start-up, slow on a busy
    # machine, is not in it): not before the timeout, and given up long before the whole
    # answer (13 s) could have arrived, a ratio a busy machine does not break.
    assert 1.9 <= entry["elapsed"] < 13 / 2, entry["elapsed"]
    assert result["msg"] == "1 of 1 request to %s failed: 1 x timed out" % url


def test_a_50_mb_body_is_read_only_up_to_the_cap(run_module, raw_server):
    server = raw_server(big_answer)
    result = run_module("http_smoke", {"url": "http://127.0.0.1:%d/" % server.port, "timeout": 20,
                                       "body_regex": "(?m)^version=green$"})
    assert result.get("failed") is not True, result.get("msg")
    entry = result["results"][0]
    assert (entry["status"], entry["matched"], entry["body_truncated"]) == (200, True, True)
    assert server.done.wait(20)
    # The module stopped reading at 1 MiB and closed: the server could not send the rest
    # (what it did send is the cap plus the kernel's socket buffers).
    assert server.sent < BIG_BODY_SIZE // 2, server.sent


def test_body_regex_is_judged_on_what_was_read(run_module, raw_server):
    def answer(server, conn):
        body = b"a" * 5000 + b"\nversion=green\n"
        server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = raw_server(answer)
    args = {"url": "http://127.0.0.1:%d/" % server.port, "body_regex": "version=green"}
    capped = run_module("http_smoke", dict(args, max_body_bytes=1000))
    assert_clean_failure(capped)
    assert capped["results"][0]["body_truncated"] is True
    assert capped["results"][0]["reason"] == "body did not match 'version=green'"
    whole = run_module("http_smoke", args)
    assert whole["passed"] is True, whole.get("msg")
    assert whole["results"][0]["body_truncated"] is False


def test_unresolvable_host_is_a_per_request_result(run_module):
    result = run_module("http_smoke", {"url": "http://%s/release" % PUBLIC_HOST})
    assert_clean_failure(result)
    assert result["results"][0]["error"].startswith("name resolution failed")


# ---------------------------------------------------------------- resolve, headers, methods

def test_resolve_keeps_the_url_host_in_the_host_header(run_module, echo_server):
    result = run_module("http_smoke", {"url": "http://%s/release" % PUBLIC_HOST,
                                       "resolve": "127.0.0.1:%d" % echo_server.port,
                                       "body_regex": "(?m)^host=%s$" % PUBLIC_HOST})
    assert result.get("failed") is not True, result
    assert result["passed"] is True
    assert echo_server.seen == [{"host": PUBLIC_HOST, "path": "/release", "method": "GET"}]


def test_resolve_without_port_uses_the_url_port(run_module, echo_server):
    url = "http://%s:%d/release" % (PUBLIC_HOST, echo_server.port)
    result = run_module("http_smoke", {"url": url, "resolve": "127.0.0.1", "requests": 2})
    assert result["passed"] is True, result
    assert [s["host"] for s in echo_server.seen] == ["%s:%d" % (PUBLIC_HOST, echo_server.port)] * 2


def test_resolve_to_an_ipv6_address(run_module, echo_server_v6):
    result = run_module("http_smoke", {"url": "http://%s/release" % PUBLIC_HOST,
                                       "resolve": "[::1]:%d" % echo_server_v6.port,
                                       "body_regex": "(?m)^host=%s$" % PUBLIC_HOST})
    assert result["passed"] is True, result
    assert result["msg"].endswith("(via [::1]:%d) passed" % echo_server_v6.port)

    url = "http://[::1]:%d/release" % echo_server_v6.port
    direct = run_module("http_smoke", {"url": url})
    assert direct["passed"] is True, direct
    assert echo_server_v6.seen[-1]["host"] == "[::1]:%d" % echo_server_v6.port


def test_resolve_also_applies_to_redirects_to_the_same_host(run_module, echo_server):
    args = {"url": "http://%s/redirect" % PUBLIC_HOST, "resolve": "127.0.0.1:%d" % echo_server.port}
    not_followed = run_module("http_smoke", dict(args, status_code=[302]))
    assert not_followed["passed"] is True, not_followed
    assert not_followed["results"][0]["status"] == 302

    refused = run_module("http_smoke", args)
    assert refused["msg"].endswith("1 x status 302 (expected 200)")

    followed = run_module("http_smoke", dict(args, follow_redirects="safe", body_regex="(?m)^path=/release$"))
    assert followed["passed"] is True, followed
    assert [s["path"] for s in echo_server.seen][-2:] == ["/redirect", "/release"]
    assert all(s["host"] == PUBLIC_HOST for s in echo_server.seen)


def test_method_headers_and_body_are_sent(run_module, echo_server):
    result = run_module("http_smoke", {"url": "http://127.0.0.1:%d/submit" % echo_server.port,
                                       "method": "post", "headers": {"X-Test": "smoke"},
                                       "body": "hello=world",
                                       "body_regex": "(?s)method=POST.*x-test=smoke.*body=hello=world"})
    assert result["passed"] is True, result

    head = run_module("http_smoke", {"url": "http://127.0.0.1:%d/" % echo_server.port, "method": "HEAD"})
    assert head["passed"] is True, head
    assert echo_server.seen[-1]["method"] == "HEAD"


def test_interval_spaces_the_requests(run_module, echo_server):
    started = time.monotonic()
    result = run_module("http_smoke", {"url": "http://127.0.0.1:%d/" % echo_server.port,
                                       "requests": 3, "interval": 0.4})
    assert result["passed"] is True, result
    assert time.monotonic() - started >= 0.8


# ---------------------------------------------------------------- TLS

def test_tls_with_resolve_sends_sni_and_verifies_against_the_url_host(run_module, tls_server, certificate):
    cert = certificate[0]
    result = run_module("http_smoke", {"url": "https://%s/release" % PUBLIC_HOST,
                                       "resolve": "127.0.0.1:%d" % tls_server.port,
                                       "ca_path": cert, "requests": 2,
                                       "body_regex": "(?m)^host=%s$" % PUBLIC_HOST})
    assert result.get("failed") is not True, result
    assert result["passed_count"] == 2
    assert tls_server.snis == [PUBLIC_HOST, PUBLIC_HOST]


def test_tls_untrusted_certificate_is_a_clear_per_request_error(run_module, tls_server):
    result = run_module("http_smoke", {"url": "https://%s/release" % PUBLIC_HOST,
                                       "resolve": "127.0.0.1:%d" % tls_server.port, "requests": 2})
    assert_clean_failure(result)
    for entry in result["results"]:
        assert entry["status"] is None
        assert entry["error"].startswith("TLS certificate verification failed: self")  # self-signed / self signed
    assert "2 x TLS certificate verification failed" in result["msg"]


def test_tls_certificate_for_another_host_is_refused(run_module, tls_server, certificate):
    cert = certificate[0]
    result = run_module("http_smoke", {"url": "https://other.example.test/release",
                                       "resolve": "127.0.0.1:%d" % tls_server.port, "ca_path": cert})
    assert_clean_failure(result)
    error = result["results"][0]["error"]
    assert error.startswith("TLS certificate verification failed")
    assert "other.example.test" in error


def test_tls_validate_certs_false_accepts_a_self_signed_certificate(run_module, tls_server):
    result = run_module("http_smoke", {"url": "https://%s/release" % PUBLIC_HOST,
                                       "resolve": "127.0.0.1:%d" % tls_server.port,
                                       "validate_certs": False})
    assert result["passed"] is True, result
    assert tls_server.snis == [PUBLIC_HOST]


def test_https_to_a_plain_http_port_is_a_tls_error(run_module, echo_server):
    result = run_module("http_smoke", {"url": "https://127.0.0.1:%d/" % echo_server.port,
                                       "validate_certs": False})
    assert_clean_failure(result)
    assert result["results"][0]["error"].startswith("TLS error")


# ---------------------------------------------------------------- the standard URL options

def test_client_certificate_opens_a_mutual_tls_listener(run_module, mutual_tls_server, certificate,
                                                        client_certificate):
    args = {"url": "https://%s/release" % PUBLIC_HOST, "resolve": "127.0.0.1:%d" % mutual_tls_server.port,
            "ca_path": certificate[0], "body_regex": "(?m)^sni=%s$" % PUBLIC_HOST}
    result = run_module("http_smoke", dict(args, client_cert=client_certificate[0],
                                           client_key=client_certificate[1], requests=2))
    assert result.get("failed") is not True, result
    assert result["passed_count"] == 2

    refused = run_module("http_smoke", args)
    assert_clean_failure(refused)
    assert refused["results"][0]["status"] is None
    assert len(mutual_tls_server.seen) == 2  # only the requests with the certificate arrived


def test_a_key_that_is_not_the_certificates_is_one_clear_error(run_module, echo_server, certificate,
                                                               client_certificate):
    result = run_module("http_smoke", {"url": "http://127.0.0.1:%d/" % echo_server.port,
                                       "client_cert": client_certificate[0], "client_key": certificate[1]})
    assert_clean_failure(result)
    assert result["msg"].startswith("client_cert '%s' with client_key '%s' could not be loaded"
                                    % (client_certificate[0], certificate[1])), result["msg"]
    assert echo_server.seen == []


def test_basic_auth_with_and_without_force(run_module):
    expected = "Basic " + base64.b64encode(b"owner:s3cret").decode()
    server = EchoServer(credentials=expected)
    try:
        url = "http://127.0.0.1:%d/release" % server.port
        args = {"url": url, "url_username": "owner", "url_password": "s3cret"}
        answered = run_module("http_smoke", args)
        assert answered["passed"] is True, answered
        assert server.authorizations == [None, expected]  # sent when the 401 asked for it

        forced = run_module("http_smoke", dict(args, force_basic_auth=True))
        assert forced["passed"] is True, forced
        assert server.authorizations[2:] == [expected]  # sent at once

        wrong = run_module("http_smoke", dict(args, url_password="nope"))
        assert_clean_failure(wrong)
        assert wrong["msg"] == "1 of 1 request to %s failed: 1 x status 401 (expected 200)" % url
        assert "nope" not in json.dumps(wrong)
    finally:
        server.stop()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("args, message", [
    ({"url": "release.example.test/release"}, "url 'release.example.test/release' has no scheme"),
    ({"url": "ftp://release.example.test/"}, "url 'ftp://release.example.test/' has the unsupported scheme 'ftp'"),
    ({"url": "http:///release"}, "url 'http:///release' has no host"),
    ({"url": "http://host.test:70000/"}, "url 'http://host.test:70000/' has an invalid port"),
    ({"resolve": "release.example.test:443:127.0.0.1"}, "resolve 'release.example.test:443:127.0.0.1'"),
    ({"resolve": "127.0.0.1:99999"}, "resolve '127.0.0.1:99999' has an invalid port"),
    ({"resolve": "http://127.0.0.1"}, "resolve 'http://127.0.0.1' must be an address"),
    ({"status_code": [99]}, "status_code: 99 is not an HTTP status code"),
    ({"status_code": []}, "status_code must list at least one"),
    ({"requests": 0}, "requests must be at least 1, got 0"),
    ({"body_regex": "version=("}, "body_regex 'version=(' is not a valid regular expression"),
    ({"headers": {"X-Bad": "a\r\nX-Injected: 1"}}, "headers: the value of 'X-Bad' contains CR, LF or NUL"),
    ({"method": "GET /admin"}, "method 'GET /admin' is not a valid HTTP method"),
    ({"timeout": 0}, "timeout must be more than 0 seconds"),
    ({"interval": -1}, "interval must not be negative"),
    ({"max_body_bytes": -1}, "max_body_bytes must be 0 or more, got -1"),
    ({"ca_path": "/nonexistent/ca.pem"}, "ca_path '/nonexistent/ca.pem' is not a file"),
])
def test_bad_input_fails_before_any_request(run_module, echo_server, args, message):
    full = {"url": "http://127.0.0.1:%d/release" % echo_server.port}
    full.update(args)
    result = run_module("http_smoke", full)
    assert_clean_failure(result)
    assert result["msg"].startswith(message), result["msg"]
    assert "results" not in result
    assert echo_server.seen == []  # nothing was sent


def test_missing_url_is_refused_by_the_argument_spec(run_module):
    result = run_module("http_smoke", {"requests": 1})
    assert_clean_failure(result)
    assert "url" in result["msg"]


def test_ansible_doc_renders():
    completed = subprocess.run([ansible_bin("ansible-doc"), "-t", "module", "--json", "bluegreen.haproxy.http_smoke"],
                               env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    doc = json.loads(completed.stdout)["bluegreen.haproxy.http_smoke"]["doc"]
    assert set(doc["options"]) == {
        "url", "method", "headers", "body", "status_code", "body_regex", "requests", "interval", "timeout",
        "max_body_bytes", "validate_certs", "ca_path", "resolve", "follow_redirects", "use_proxy", "fail_on_error",
        "client_cert", "client_key", "url_username", "url_password", "force_basic_auth", "use_netrc", "http_agent"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
    assert doc["attributes"]["diff_mode"]["support"] == "none"
