# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for tcp_probe: the options, and attempts against small socket servers started here
(one that answers, one that closes at once, one that stays silent, one that trickles, and a
port that refuses)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

import pytest

# Plain pytest from the repo root finds the collection through the `make collection` tree;
# ansible-test puts its own tree on the path first, so this entry is then unused.
_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke, tcp_probe  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.tcp_probe import TcpProbeOptionError  # noqa: E402

REQUEST = 'GET /release HTTP/1.0\\r\\n\\r\\n'  # as YAML single quotes hand it over: backslashes kept
BLUE_ANSWER = b'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Release: blue\r\n\r\nversion=blue\n'
GREEN_ANSWER = BLUE_ANSWER.replace(b'blue', b'green')


# ---------------------------------------------------------------- small socket servers

class Server(object):
    """A loopback listener; `behaviour(conn, server)` handles each accepted connection in a thread."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.received = []  # bytes each connection sent before the server answered
        self.accepted = 0
        self.held = []
        self._stop = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, dummy = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self.behaviour, args=(conn, self), daemon=True).start()

    def read_request(self, conn, until=b'\r\n\r\n', seconds=2.0):
        conn.settimeout(seconds)
        data = b''
        try:
            while until not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        self.received.append(data)
        return data

    def stop(self):
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        for conn in self.held:
            conn.close()


def answering(answer):
    def behaviour(conn, server):
        server.read_request(conn)
        conn.sendall(answer)
        conn.close()
    return behaviour


def closing(conn, server):
    conn.close()


def silent(conn, server):
    server.held.append(conn)  # kept open, never answered, closed when the test ends


def speaking_first(conn, server):
    conn.sendall(b'220 smtp.example.test ready\r\n')
    server.held.append(conn)  # then silent: a pass must not wait for the end


def trickling(conn, server):
    try:
        while True:
            conn.sendall(b'.')
            time.sleep(0.02)
    except OSError:
        conn.close()


def flooding(conn, server):
    try:
        conn.sendall(b'x' * 100000)
    except OSError:
        pass
    conn.close()


@pytest.fixture
def server():
    servers = []

    def start(behaviour):
        started = Server(behaviour)
        servers.append(started)
        return started

    yield start
    for started in servers:
        started.stop()


@pytest.fixture
def refused_port():
    """A port bound but not listening: the kernel refuses connections to it (and nobody else gets it)."""
    holder = socket.socket()
    holder.bind(('127.0.0.1', 0))
    yield holder.getsockname()[1]
    holder.close()


def spec(port, **options):
    return tcp_probe.prepare('127.0.0.1', port, **options)


# ---------------------------------------------------------------- send escapes

@pytest.mark.parametrize('text, data', [
    ('GET / HTTP/1.0\\r\\n\\r\\n', b'GET / HTTP/1.0\r\n\r\n'),
    ('GET / HTTP/1.0\r\n\r\n', b'GET / HTTP/1.0\r\n\r\n'),  # real CR LF (YAML double quotes) as they are
    ('a\\tb\\0c', b'a\tb\0c'),
    ('\\x00\\xff\\x41', b'\x00\xffA'),
    ('C:\\\\temp', b'C:\\temp'),
    ('caf\u00e9', 'caf\u00e9'.encode('utf-8')),
])
def test_send_escapes_are_decoded(text, data):
    assert tcp_probe.parse_send(text) == data


@pytest.mark.parametrize('text, fragment', [
    ('GET \\d', "unknown escape '\\\\d' at character 5"),
    ('end\\', "unknown escape '\\\\' at character 4"),
    ('\\xZZ', "unknown escape '\\\\xZZ' at character 1"),
    ('\\x4', "unknown escape '\\\\x4' at character 1"),
    ('', 'send must not be empty'),
])
def test_send_refuses_unknown_escapes(text, fragment):
    with pytest.raises(TcpProbeOptionError) as error:
        tcp_probe.parse_send(text)
    assert fragment in str(error.value)


def test_send_none_sends_nothing():
    assert tcp_probe.parse_send(None) is None


# ---------------------------------------------------------------- options

@pytest.mark.parametrize('host, port, options, message', [
    ('127.0.0.1', 0, {}, 'port must be a TCP port from 1 to 65535, got 0'),
    ('127.0.0.1', 65536, {}, 'port must be a TCP port from 1 to 65535, got 65536'),
    ('127.0.0.1', True, {}, 'port must be a TCP port from 1 to 65535, got True'),
    ('', 80, {}, 'host must not be empty'),
    ('10.0.0.5:80', 80, {}, "host '10.0.0.5:80' is not an IPv6 address or a host name; give the port in port"),
    ('a b', 80, {}, "host 'a b' is not an IPv4 address or a host name"),
    ('127.0.0.1', 80, {'expect': '('}, "expect '(' is not a valid regular expression"),
    ('127.0.0.1', 80, {'expect': ''}, 'expect must be a non-empty regular expression'),
    ('127.0.0.1', 80, {'requests': 0}, 'requests must be at least 1, got 0'),
    ('127.0.0.1', 80, {'timeout': 0}, 'timeout must be more than 0 seconds'),
    ('127.0.0.1', 80, {'max_bytes': 0}, 'max_bytes must be at least 1, got 0'),
    ('127.0.0.1', 80, {'interval': -1}, 'interval must not be negative'),
    ('127.0.0.1', 80, {'send': 'x\\q'}, "send 'x\\\\q' has the unknown escape"),
])
def test_bad_options_are_one_clear_error(host, port, options, message):
    with pytest.raises(TcpProbeOptionError) as error:
        tcp_probe.prepare(host, port, **options)
    assert str(error.value).startswith(message), str(error.value)
    assert isinstance(error.value, smoke.SmokeOptionError)  # the engine catches one error type


@pytest.mark.parametrize('host, expected', [
    ('10.0.0.5', '10.0.0.5'), ('haproxy1.internal', 'haproxy1.internal'), ('::1', '::1'),
    ('[2001:db8::5]', '2001:db8::5'), (' localhost ', 'localhost'),
])
def test_hosts_accepted(host, expected):
    assert tcp_probe.prepare(host, 80).host == expected


# ---------------------------------------------------------------- what a failure shows

def test_excerpt_escapes_and_keeps_start_and_end():
    assert tcp_probe.received_excerpt(b'a\r\nb\\c\t\x01\xff') == 'a\\r\\nb\\\\c\\t\\x01\\xff'
    long = b'HEAD' + b'-' * 1000 + b'version=blue\n'
    excerpt = tcp_probe.received_excerpt(long)
    assert excerpt.startswith('HEAD') and excerpt.endswith('version=blue\\n')
    assert ' ... ' in excerpt and len(excerpt) < 260


# ---------------------------------------------------------------- attempts against real sockets

def test_send_and_expect_pass_and_send_exactly_the_bytes(server):
    green = server(answering(GREEN_ANSWER))
    result = tcp_probe.probe_once(spec(green.port, send=REQUEST, expect='version=green'))
    assert result['matched'] is True, result
    assert (result['connected'], result['reason'], result['received_excerpt']) == (True, None, None)
    assert result['received_bytes'] == len(GREEN_ANSWER)
    assert green.received == [b'GET /release HTTP/1.0\r\n\r\n']


def test_a_wrong_answer_fails_naming_what_was_received(server):
    blue = server(answering(BLUE_ANSWER))
    result = tcp_probe.probe_once(spec(blue.port, send=REQUEST, expect='version=green'), attempt=3)
    assert result['matched'] is False
    assert result['attempt'] == 3
    assert result['reason'] == ("connection closed after %d bytes without a match of 'version=green'"
                                % len(BLUE_ANSWER))
    assert result['received_excerpt'].endswith('\\r\\n\\r\\nversion=blue\\n')


def test_a_peer_that_closes_at_once_fails_an_expect_but_passes_a_connect(server):
    closer = server(closing)
    result = tcp_probe.probe_once(spec(closer.port, expect='.'))
    assert (result['matched'], result['connected']) == (False, True)
    assert result['reason'] == "connection closed after 0 bytes without a match of '.'"
    assert result['received_excerpt'] is None
    assert tcp_probe.probe_once(spec(closer.port))['matched'] is True  # only a connection was asked for


def test_a_silent_peer_fails_within_the_timeout(server):
    quiet = server(silent)
    started = time.monotonic()
    result = tcp_probe.probe_once(spec(quiet.port, send='PING\\r\\n', expect='PONG', timeout=0.5))
    assert time.monotonic() - started < 2.0
    assert result['matched'] is False and result['error'] == 'timed out'
    assert result['reason'] == "timed out after 0 bytes without a match of 'PONG'"


def test_the_timeout_bounds_the_whole_attempt_not_each_read(server):
    slow = server(trickling)
    started = time.monotonic()
    # max_bytes ends a read that only a per-read timeout would bound (about 2 s at 50 bytes/s)
    result = tcp_probe.probe_once(spec(slow.port, expect='never', timeout=0.5, max_bytes=100))
    assert time.monotonic() - started < 2.0
    assert result['reason'].startswith('timed out after ') and result['received_bytes'] > 0
    assert set(result['received_excerpt']) <= set('. ')  # the dots it sent, start and end


def test_reading_stops_at_the_match(server):
    banner = server(speaking_first)
    started = time.monotonic()
    result = tcp_probe.probe_once(spec(banner.port, expect='^220 ', timeout=5))
    assert result['matched'] is True
    assert time.monotonic() - started < 2.0  # the peer stays open: the match ended the read


def test_max_bytes_bounds_the_read(server):
    flood = server(flooding)
    result = tcp_probe.probe_once(spec(flood.port, expect='version', max_bytes=100))
    assert result['matched'] is False
    assert result['received_bytes'] == 100
    assert result['reason'] == "read max_bytes (100) without a match of 'version'"


def test_a_refused_connection_fails(refused_port):
    result = tcp_probe.probe_once(spec(refused_port, send=REQUEST, expect='x'))
    assert (result['matched'], result['connected']) == (False, False)
    assert result['error'] == result['reason'] == 'connection refused'


# ---------------------------------------------------------------- the run

def test_run_makes_every_connection_and_keeps_http_smokes_shape(server):
    green = server(answering(GREEN_ANSWER))
    result = tcp_probe.run_tcp_smoke(spec(green.port, send=REQUEST, expect='version=green', requests=3))
    assert green.accepted == 3
    assert (result['passed'], result['passed_count'], result['failed_count'], result['requests']) == (True, 3, 0, 3)
    assert [r['attempt'] for r in result['results']] == [1, 2, 3]
    assert result['failures'] == []
    assert result['msg'] == 'all 3 connections to tcp://127.0.0.1:%d passed' % green.port
    http_keys = set(smoke.run_smoke('http://x.test/', send=lambda url, **o: smoke.request_result(
        0.0, status=200, text='ok')))
    assert http_keys <= set(result)
    assert set(result['summary']) == {'error_counts', 'failure_counts'}
    assert result['elapsed'] >= 0


def test_run_reports_each_failure_with_expected_and_received(server, refused_port):
    blue = server(answering(BLUE_ANSWER))
    result = tcp_probe.run_tcp_smoke(spec(blue.port, send=REQUEST, expect='version=green', requests=2))
    assert (result['passed'], result['failed_count']) == (False, 2)
    failure = result['failures'][0]
    assert (failure['attempt'], failure['expected']) == (1, "a match of 'version=green'")
    assert failure['received'].endswith('version=blue\\n') and failure['elapsed'] >= 0
    assert result['msg'].startswith(
        "2 of 2 connections to tcp://127.0.0.1:%d failed: 2 x connection closed after %d bytes without a match "
        "of 'version=green'; attempt 1 received 'HTTP/1.0 200 OK\\r\\n" % (blue.port, len(BLUE_ANSWER)))
    assert result['msg'].endswith("version=blue\\n'")
    assert result['summary']['failure_counts'] == {
        "connection closed after %d bytes without a match of 'version=green'" % len(BLUE_ANSWER): 2}

    refused = tcp_probe.run_tcp_smoke(spec(refused_port))
    assert refused['msg'] == '1 of 1 connection to tcp://127.0.0.1:%d failed: 1 x connection refused' % refused_port
    assert refused['failures'] == [{'attempt': 1, 'reason': 'connection refused', 'expected': 'a connection',
                                    'received': None, 'elapsed': refused['results'][0]['elapsed']}]
    assert refused['summary']['error_counts'] == {'connection refused': 1}


def test_run_waits_interval_between_attempts_only():
    waits, attempts = [], []

    def probe(run_spec, attempt):
        attempts.append(attempt)
        return tcp_probe.attempt_result(attempt, 0.01, run_spec, connected=True)

    result = tcp_probe.run_tcp_smoke(tcp_probe.prepare('::1', 9, requests=3, interval=0.25), probe=probe,
                                     sleep=waits.append)
    assert (attempts, waits) == ([1, 2, 3], [0.25, 0.25])
    assert result['msg'] == 'all 3 connections to tcp://[::1]:9 passed'
