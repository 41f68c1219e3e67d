# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the pure helpers behind the http_smoke module."""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import sys
import urllib.error

import pytest

# Plain pytest from the repo root finds the collection through the `make collection` tree;
# ansible-test puts its own tree on the path first, so this entry is then unused.
_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import SmokeOptionError  # noqa: E402


# ---------------------------------------------------------------- url

@pytest.mark.parametrize('url, scheme, host, port', [
    ('http://release.example.test/release', 'http', 'release.example.test', 80),
    ('https://release.example.test/', 'https', 'release.example.test', 443),
    ('HTTP://Release.Example.TEST:8080', 'http', 'release.example.test', 8080),
    ('http://127.0.0.1:18080/healthz?x=1', 'http', '127.0.0.1', 18080),
    ('https://[::1]:8443/', 'https', '::1', 8443),
    ('http://user:secret@host.test/', 'http', 'host.test', 80),
])
def test_parse_url_accepts(url, scheme, host, port):
    target = smoke.parse_url(url)
    assert (target.url, target.scheme, target.host, target.port) == (url, scheme, host, port)


@pytest.mark.parametrize('url, fragment', [
    ('', 'must not be empty'),
    ('release.example.test/release', 'has no scheme'),
    ('/release', 'has no scheme'),
    ('ftp://release.example.test/', "unsupported scheme 'ftp'"),
    ('file:///etc/passwd', "unsupported scheme 'file'"),
    ('http:///release', 'has no host'),
    ('http://', 'has no host'),
    ('http://host.test:99999/', 'invalid port'),
    ('http://host.test:0/', 'invalid port'),
    ('http://host.test:abc/', 'invalid port'),
    ('http://host.test/a b', 'spaces or control characters'),
    ('http://host.test/\r\nX: y', 'spaces or control characters'),
    (' http://host.test/', 'spaces or control characters'),
])
def test_parse_url_refuses(url, fragment):
    with pytest.raises(SmokeOptionError) as error:
        smoke.parse_url(url)
    assert fragment in str(error.value)
    assert str(error.value).startswith('url')


# ---------------------------------------------------------------- resolve

@pytest.mark.parametrize('value, expected', [
    ('127.0.0.1', ('127.0.0.1', None)),
    ('127.0.0.1:8080', ('127.0.0.1', 8080)),
    (' 10.0.0.5:443 ', ('10.0.0.5', 443)),
    ('haproxy1.internal', ('haproxy1.internal', None)),
    ('haproxy1.internal:80', ('haproxy1.internal', 80)),
    ('localhost', ('localhost', None)),
    ('[::1]', ('::1', None)),
    ('[::1]:8443', ('::1', 8443)),
    ('[2001:db8::5]:443', ('2001:db8::5', 443)),
    ('2001:db8::5', ('2001:db8::5', None)),
    ('::1', ('::1', None)),
])
def test_parse_resolve_accepts(value, expected):
    assert smoke.parse_resolve(value) == expected


@pytest.mark.parametrize('value, fragment', [
    ('', 'must not be empty'),
    ('   ', 'must not be empty'),
    (':8080', 'has no address'),
    ('127.0.0.1:', 'invalid port'),
    ('127.0.0.1:0', 'invalid port'),
    ('127.0.0.1:65536', 'invalid port'),
    ('127.0.0.1:http', 'invalid port'),
    ('300.1.2.3', 'not a valid IPv4 address'),
    ('1.2.3', 'not a valid IPv4 address'),
    ('release.example.test:443:127.0.0.1', "curl's HOST:PORT:ADDR form"),
    ('[::1', 'no closing ]'),
    ('[::1]8080', 'expected :PORT'),
    ('[not-v6]:80', 'not a valid IPv6 address'),
    ('http://10.0.0.5', 'must be an address'),
    ('10.0.0.5/24', 'must be an address'),
    ('bad host', 'must be an address'),
    ('-bad.example', 'not a valid IPv4 address or host name'),
    ('a..b', 'not a valid IPv4 address or host name'),
])
def test_parse_resolve_refuses(value, fragment):
    with pytest.raises(SmokeOptionError) as error:
        smoke.parse_resolve(value)
    assert fragment in str(error.value)
    assert str(error.value).startswith('resolve')


@pytest.mark.parametrize('address, port, text', [
    ('127.0.0.1', 80, '127.0.0.1:80'),
    ('::1', 8443, '[::1]:8443'),
    ('node.test', 443, 'node.test:443'),
])
def test_format_address(address, port, text):
    assert smoke.format_address(address, port) == text


# ---------------------------------------------------------------- other options

def test_status_codes_are_validated_and_deduplicated():
    assert smoke.validate_status_codes([200, 204, 200]) == [200, 204]


@pytest.mark.parametrize('codes', [[], [99], [600], [200, 1000], [True]])
def test_status_codes_refused(codes):
    with pytest.raises(SmokeOptionError, match='^status_code'):
        smoke.validate_status_codes(codes)


@pytest.mark.parametrize('method, expected', [('get', 'GET'), ('HEAD', 'HEAD'), ('PURGE', 'PURGE')])
def test_method_accepted(method, expected):
    assert smoke.validate_method(method) == expected


@pytest.mark.parametrize('method', ['', 'GET /x', 'GE\nT', 'G(E)T'])
def test_method_refused(method):
    with pytest.raises(SmokeOptionError, match='^method'):
        smoke.validate_method(method)


def test_headers_are_stringified():
    assert smoke.validate_headers({'X-Count': 3, 'X-Flag': True, 'X-Empty': None, 'Host': 'a.test'}) == {
        'X-Count': '3', 'X-Flag': 'true', 'X-Empty': '', 'Host': 'a.test'}
    assert smoke.validate_headers(None) == {}


@pytest.mark.parametrize('headers, fragment', [
    ({'Bad Name': 'x'}, "'Bad Name' is not a valid header name"),
    ({'X-Split': 'a\r\nX-Injected: 1'}, "the value of 'X-Split' contains CR, LF or NUL"),
    ({'X-Nul': 'a\0'}, 'contains CR, LF or NUL'),
])
def test_headers_refused(headers, fragment):
    with pytest.raises(SmokeOptionError) as error:
        smoke.validate_headers(headers)
    assert str(error.value).startswith('headers')
    assert fragment in str(error.value)


def test_body_regex():
    assert smoke.compile_body_regex(None) is None
    assert smoke.compile_body_regex('version=(blue|green)').search('version=green')
    with pytest.raises(SmokeOptionError, match=r"^body_regex 'version=\(' is not a valid regular expression"):
        smoke.compile_body_regex('version=(')


# ---------------------------------------------------------------- bodies

def test_body_excerpt_is_cut_at_200_characters():
    assert smoke.body_excerpt('short') == 'short'
    assert smoke.body_excerpt(None) is None
    text = 'x' * 200
    assert smoke.body_excerpt(text) == text
    long_text = 'y' * 500
    assert smoke.body_excerpt(long_text) == 'y' * 200 + '...'


def test_body_key_is_the_first_non_empty_line():
    assert smoke.body_key('\n  version=blue  \nmore\n') == 'version=blue'
    assert smoke.body_key('') == ''
    assert smoke.body_key('\n\n') == ''
    assert smoke.body_key('z' * 100) == 'z' * 80 + '...'


def test_decode_body():
    assert smoke.decode_body(b'version=blue\n') == 'version=blue\n'
    assert smoke.decode_body('caf\xe9'.encode('latin-1'), 'iso-8859-1') == 'caf\xe9'
    assert smoke.decode_body(b'\xff ok') == '\ufffd ok'
    assert smoke.decode_body(b'ok', 'no-such-charset') == 'ok'
    assert smoke.decode_body(None) == ''


def test_mask_url():
    assert smoke.mask_url('http://user:secret@host.test/x') == 'http://user:********@host.test/x'
    assert smoke.mask_url('http://host.test/x') == 'http://host.test/x'
    assert smoke.mask_url('http://user@host.test/x') == 'http://user@host.test/x'


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize('exc, text', [
    (urllib.error.URLError(ConnectionRefusedError(111, 'Connection refused')), 'connection refused'),
    (ConnectionRefusedError(111, 'Connection refused'), 'connection refused'),
    (urllib.error.URLError(socket.timeout('timed out')), 'timed out'),
    (socket.timeout('timed out'), 'timed out'),
    (TimeoutError(), 'timed out'),
    (http.client.RemoteDisconnected('Remote end closed connection without response'),
     'connection closed without a response'),
    (ConnectionResetError(104, 'Connection reset by peer'), 'connection reset'),
    (urllib.error.URLError(socket.gaierror(-2, 'Name or service not known')),
     'name resolution failed: Name or service not known'),
    (http.client.BadStatusLine('garbage'), 'invalid HTTP response: garbage'),
    (http.client.IncompleteRead(b'abc', 10), 'incomplete response body'),
    (urllib.error.URLError(OSError(101, 'Network is unreachable')), 'connection error: Network is unreachable'),
    (urllib.error.URLError('no host given'), 'request failed: no host given'),
    (ValueError('Invalid header value'), 'ValueError: Invalid header value'),
])
def test_describe_error(exc, text):
    assert smoke.describe_error(exc) == text


def test_describe_tls_errors():
    verify = ssl.SSLCertVerificationError(1, '[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: '
                                             'self-signed certificate (_ssl.c:1006)')
    verify.verify_message = 'self-signed certificate'
    assert smoke.describe_error(urllib.error.URLError(verify)) == \
        'TLS certificate verification failed: self-signed certificate'

    wrong = ssl.SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)')
    assert smoke.describe_error(urllib.error.URLError(wrong)) == \
        'TLS error: [SSL: WRONG_VERSION_NUMBER] wrong version number'


# ---------------------------------------------------------------- judging one request

@pytest.mark.parametrize('status, text, codes, regex, matched, reason', [
    (200, 'version=blue\n', [200], None, True, None),
    (204, '', [200, 204], None, True, None),
    (503, 'down', [200], None, False, 'status 503 (expected 200)'),
    (503, 'down', [200, 204], None, False, 'status 503 (expected 200 or 204)'),
    (500, 'x', [200, 201, 204], None, False, 'status 500 (expected one of 200, 201, 204)'),
    (200, 'version=blue\n', [200], 'version=green', False, "body did not match 'version=green'"),
    (200, 'version=green\n', [200], '^version=green$', True, None),
    (503, 'version=green', [200], 'version=green', False, 'status 503 (expected 200)'),
    (301, '', [301], None, True, None),
])
def test_judge(status, text, codes, regex, matched, reason):
    compiled = re.compile(regex, re.M) if regex else None
    assert smoke.judge(status, text, codes, compiled) == (matched, reason)


def test_request_result_for_a_passing_answer():
    result = smoke.request_result(0.0123456, status=200, text='version=blue\n', status_codes=[200])
    assert result == {'status': 200, 'elapsed': 0.0123, 'matched': True, 'error': None, 'reason': None,
                      'body_excerpt': None, 'body_truncated': False, '_body_key': 'version=blue'}


def test_request_result_for_a_failing_answer_keeps_an_excerpt():
    body = 'version=blue\n' + 'x' * 300
    result = smoke.request_result(0.5, status=200, text=body, status_codes=[200],
                                  body_regex=re.compile('version=green'))
    assert result['matched'] is False
    assert result['error'] is None
    assert result['reason'] == "body did not match 'version=green'"
    assert result['body_excerpt'] == body[:200] + '...'


def test_request_result_for_an_error():
    result = smoke.request_result(-0.001, error='connection refused')
    assert result == {'status': None, 'elapsed': 0.0, 'matched': False, 'error': 'connection refused',
                      'reason': 'connection refused', 'body_excerpt': None, 'body_truncated': False,
                      '_body_key': None}


# ---------------------------------------------------------------- summary and message

def _results():
    ok_blue = smoke.request_result(0.01, status=200, text='version=blue\n', status_codes=[200])
    down = smoke.request_result(0.01, status=503, text='<html>503 Service Unavailable</html>', status_codes=[200])
    refused = smoke.request_result(0.01, error='connection refused')
    return [ok_blue] * 7 + [down, refused, down]


def test_summarize():
    summary = smoke.summarize(_results())
    assert summary == {
        'status_counts': {'200': 7, '503': 2},
        'body_counts': {'version=blue': 7, '<html>503 Service Unavailable</html>': 2},
        'error_counts': {'connection refused': 1},
        'failure_counts': {'status 503 (expected 200)': 2, 'connection refused': 1},
    }


def test_summarize_caps_distinct_bodies():
    results = [smoke.request_result(0.0, status=200, text='body %d' % i, status_codes=[200]) for i in range(15)]
    body_counts = smoke.summarize(results)['body_counts']
    assert len(body_counts) == smoke.MAX_BODY_KEYS + 1
    assert body_counts[smoke.OTHER_BODIES] == 5


def test_message_counts_reasons_most_frequent_first():
    message = smoke.build_message('http://release.example.test/release', _results())
    assert message == ('3 of 10 requests to http://release.example.test/release failed: '
                       '2 x status 503 (expected 200), 1 x connection refused')


def test_message_when_everything_passed():
    ok = smoke.request_result(0.01, status=200, text='ok', status_codes=[200])
    assert smoke.build_message('http://a.test/', [ok] * 5) == 'all 5 requests to http://a.test/ passed'
    assert smoke.build_message('http://a.test/', [ok]) == '1 request to http://a.test/ passed'


def test_message_names_the_resolve_address_and_hides_passwords():
    refused = smoke.request_result(0.01, error='connection refused')
    message = smoke.build_message('https://u:pw@release.example.test/', [refused], '127.0.0.1:8443')
    assert message == ('1 of 1 request to https://u:********@release.example.test/ (via 127.0.0.1:8443) '
                       'failed: 1 x connection refused')


def test_public_results_drop_internal_keys():
    results = smoke.public_results(_results())
    assert all(not any(key.startswith('_') for key in r) for r in results)
    assert set(results[0]) == {'status', 'elapsed', 'matched', 'error', 'reason', 'body_excerpt', 'body_truncated'}


# ---------------------------------------------------------------- one request: deadline and body cap
#
# Real sockets on loopback, in this process: a server thread that answers slowly or at length.

import shutil  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402


class LoopbackServer(object):
    """Accepts connections and answers each with ``answer(conn)`` in a thread."""

    def __init__(self, answer, tls_context=None):
        self.answer = answer
        self.tls_context = tls_context
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.sent = 0
        self.answered_in_full = False  # set by trickle() once it sent its last byte
        self.finished = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        try:
            if self.tls_context is not None:
                conn = self.tls_context.wrap_socket(conn, server_side=True)
            data = b''
            while b'\r\n\r\n' not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.answer(self, conn)
        except OSError:
            pass
        finally:
            self.finished.set()
            conn.close()

    def send(self, conn, data):
        conn.sendall(data)
        self.sent += len(data)

    def stop(self):
        self.sock.close()


def trickle(head, body, delay):
    """An answer whose ``head`` (bytes before the body) or body comes one byte every ``delay`` s."""
    def answer(server, conn):
        for part, slow in ((head, body is None), (body or b'', True)):
            if not slow:
                server.send(conn, part)
                continue
            for index in range(len(part)):
                server.send(conn, part[index:index + 1])
                time.sleep(delay)
        server.answered_in_full = True
    return answer


HEAD_13 = b'HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n'


@pytest.fixture
def loopback():
    servers = []

    def start(answer, tls_context=None):
        server = LoopbackServer(answer, tls_context)
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope='module')
def tls_server_context(tmp_path_factory):
    openssl = shutil.which('openssl')
    if not openssl:
        pytest.fail('the openssl CLI is needed for a test certificate')
    directory = tmp_path_factory.mktemp('tls')
    cert, key = str(directory / 'cert.pem'), str(directory / 'key.pem')
    subprocess.run([openssl, 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-keyout', key,
                    '-out', cert, '-subj', '/CN=release.example.test'], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def test_deadline_counts_down_and_times_out():
    now = [100.0]
    deadline = smoke.Deadline(2.0, clock=lambda: now[0])
    assert deadline.remaining() == 2.0
    now[0] = 101.5
    assert deadline.remaining() == 0.5
    now[0] = 102.0
    with pytest.raises(socket.timeout):
        deadline.remaining()


@pytest.mark.parametrize('slow_part', ['body', 'head'])
def test_timeout_bounds_the_whole_request_not_each_read(loopback, slow_part):
    # 13 bytes, one every 0.25 s: each read gets a byte well within the 1 s timeout, the whole
    # answer takes 3.25 s. Only a deadline over the whole request stops it at 1 s.
    if slow_part == 'body':
        server = loopback(trickle(HEAD_13, b'version=green', 0.25))
    else:
        server = loopback(trickle(HEAD_13 + b'version=green', None, 0.25))
    started = time.monotonic()
    result = smoke.send_request('http://127.0.0.1:%d/release' % server.port, timeout=1.0)
    took = time.monotonic() - started
    # Given up while the server was still trickling (state, not a time bound that breaks under
    # load), and not before the timeout.
    assert not server.answered_in_full, "the client waited for the whole answer"
    assert result['error'] == 'timed out', result
    assert result['matched'] is False
    assert took >= 0.9, took


def slow_resolver(seconds, answer=None):
    """A getaddrinfo that takes ``seconds``, then gives ``answer``'s address (a stuck resolver)."""
    calls, answered = [], []

    def getaddrinfo(host, port, *args):
        calls.append(host)
        time.sleep(seconds)
        answered.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, '', (answer or '127.0.0.1', port))]
    getaddrinfo.calls = calls
    getaddrinfo.answered = answered
    return getaddrinfo


def test_a_stuck_name_resolution_is_bounded_by_the_timeout(monkeypatch):
    resolver = slow_resolver(5.0)
    monkeypatch.setattr(smoke.socket, 'getaddrinfo', resolver)
    for variable in ('http_proxy', 'HTTP_PROXY', 'https_proxy', 'HTTPS_PROXY', 'no_proxy', 'NO_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    started = time.monotonic()
    result = smoke.send_request('http://stuck-dns.example.test:8080/release', timeout=0.5)
    took = time.monotonic() - started
    assert result['error'] == 'name resolution of stuck-dns.example.test timed out', result
    assert resolver.calls == ['stuck-dns.example.test']
    # Given up while the resolver was still stuck, and not before the timeout.
    assert resolver.answered == [], "the client waited for the stuck resolver"
    assert took >= 0.4, took


def test_a_resolved_name_connects_within_the_same_deadline(loopback, monkeypatch):
    server = loopback(trickle(HEAD_13 + b'version=green', None, 0.0))
    resolver = slow_resolver(0.2)
    monkeypatch.setattr(smoke.socket, 'getaddrinfo', resolver)
    for variable in ('http_proxy', 'HTTP_PROXY', 'no_proxy', 'NO_PROXY'):
        monkeypatch.delenv(variable, raising=False)
    result = smoke.send_request('http://release.example.test:%d/release' % server.port, timeout=2.0,
                                body_regex=re.compile('^version=green$'))
    assert result['error'] is None and result['matched'] is True, result
    # The name once, by resolve_within; then the address it gave, connected to as a literal.
    assert resolver.calls[0] == 'release.example.test' and resolver.calls.count('release.example.test') == 1


def test_resolve_within_hands_back_the_resolver_error():
    def failing(host, port, *args):
        raise socket.gaierror(socket.EAI_NONAME, 'Name or service not known')
    with pytest.raises(socket.gaierror):
        smoke.resolve_within('nowhere.invalid', 80, smoke.Deadline(1.0), getaddrinfo=failing)


def test_timeout_bounds_a_trickling_tls_answer(loopback, tls_server_context):
    server = loopback(trickle(HEAD_13, b'version=green', 0.25), tls_context=tls_server_context)
    started = time.monotonic()
    result = smoke.send_request('https://release.example.test/release', timeout=1.0, validate_certs=False,
                                connect_address=('127.0.0.1', server.port))
    took = time.monotonic() - started
    assert not server.answered_in_full, "the client waited for the whole answer"
    assert result['error'] == 'timed out', result
    assert took >= 0.9, took


def test_a_fast_answer_within_the_timeout_passes(loopback, tls_server_context):
    server = loopback(trickle(HEAD_13 + b'version=green', None, 0.0))
    result = smoke.send_request('http://127.0.0.1:%d/' % server.port, timeout=2.0,
                                body_regex=re.compile('^version=green$'))
    assert (result['status'], result['matched'], result['body_truncated']) == (200, True, False), result
    tls = loopback(trickle(HEAD_13 + b'version=green', None, 0.0), tls_context=tls_server_context)
    result = smoke.send_request('https://release.example.test/', timeout=2.0, validate_certs=False,
                                connect_address=('127.0.0.1', tls.port))
    assert (result['status'], result['matched']) == (200, True), result


def free_port_number():
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


class EndlessBody(object):
    """A response whose body never ends; counts what the reader asked for."""

    def __init__(self, length=None):
        self.length = length
        self.bytes_read = 0

    def read(self, amount=None):
        assert amount is not None, 'the body must be read in bounded chunks'
        if self.length is not None:
            amount = min(amount, self.length - self.bytes_read)
        self.bytes_read += amount
        return b'x' * amount


@pytest.mark.parametrize('length, cap, expected_read, truncated', [
    (None, 1048576, 1048577, True),          # endless: the cap, plus one byte to know there is more
    (50 * 1024 * 1024, 1000, 1001, True),
    (1000, 1000, 1000, False),               # exactly the cap: nothing more came
    (10, 1000, 10, False),
    (10, 0, 1, True),
    (0, 0, 0, False),
])
def test_read_capped_stops_at_the_cap(length, cap, expected_read, truncated):
    body = EndlessBody(length)
    data, was_truncated = smoke.read_capped(body, cap)
    assert len(data) == min(cap, length if length is not None else cap)
    assert body.bytes_read == expected_read
    assert was_truncated is truncated


def test_a_50_mb_body_is_not_downloaded_nor_held(loopback):
    body_size = 50 * 1024 * 1024
    chunk = b'version=green\n' + b'x' * (65536 - 14)

    def answer(server, conn):
        server.send(conn, b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n' % body_size)
        for dummy in range(body_size // len(chunk) + 1):
            server.send(conn, chunk)

    server = loopback(answer)
    tracemalloc.start()
    try:
        result = smoke.send_request('http://127.0.0.1:%d/' % server.port, timeout=10,
                                    body_regex=re.compile('^version=green$', re.M))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (result['status'], result['matched'], result['body_truncated']) == (200, True, True), result
    # The cap (1 MiB) plus its decoded text and buffers, far from 50 MB.
    assert peak < 8 * 1024 * 1024, peak
    server.finished.wait(10)
    assert server.sent < 20 * 1024 * 1024, server.sent  # the rest was never sent: the client left


def test_the_regex_is_judged_on_what_was_read(loopback):
    body = b'a' * 5000 + b'version=green'
    head = b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n' % len(body)
    server = loopback(trickle(head + body, None, 0.0))
    url = 'http://127.0.0.1:%d/' % server.port
    regex = re.compile('version=green')
    short = smoke.send_request(url, body_regex=regex, max_body_bytes=1000)
    assert (short['matched'], short['body_truncated']) == (False, True), short
    assert short['reason'] == "body did not match 'version=green'"
    whole = smoke.send_request(url, body_regex=regex)
    assert (whole['matched'], whole['body_truncated']) == (True, False), whole


@pytest.mark.parametrize('value', [0, 1, 1048576])
def test_max_body_bytes_accepted(value):
    assert smoke.validate_max_body_bytes(value) == value


@pytest.mark.parametrize('value', [-1, True, 1.5, '10'])
def test_max_body_bytes_refused(value):
    with pytest.raises(SmokeOptionError, match='max_body_bytes must be 0 or more'):
        smoke.validate_max_body_bytes(value)


@pytest.mark.parametrize('value', [0, -1, True, None])
def test_timeout_refused(value):
    with pytest.raises(SmokeOptionError, match='request_timeout must be more than 0 seconds'):
        smoke.validate_timeout(value, 'request_timeout')
