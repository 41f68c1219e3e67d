# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""TCP smoke tests for `mode tcp` services, through a node's listener: the tcp_smoke module.

One attempt is: connect to host:port, optionally send bytes (``send``), optionally read until a
regular expression (``expect``) matches what was received, then close; the attempt fails when
the connection is refused, the time runs out, the peer closes first or ``max_bytes`` were read
without a match. :func:`run_tcp_smoke` makes ``requests`` attempts and returns the verdict in
http_smoke's shape (smoke.run_smoke: passed, passed_count, failed_count, requests, results,
summary, msg), plus ``failures`` (the failed attempts: which one, what was expected, what was
received) and ``elapsed``, so the release engine can treat an HTTP and a TCP service alike.

Everything but :func:`probe_once` is pure. Option errors are :class:`TcpProbeOptionError`, a
:class:`smoke.SmokeOptionError`, raised by :func:`prepare` before any connection is made, so the
engine can check a service's options in PRECHECK without sending anything.

The connection itself is smoke.py's: the same bounded name lookup and connect
(``smoke._open_tcp``), one deadline for the whole attempt (``smoke.Deadline``) and the same
error texts (``smoke.describe_error``: ``connection refused``, ``timed out``, ...).
"""

from __future__ import annotations

import ipaddress
import re
import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke

DEFAULT_MAX_BYTES = 65536
DEFAULT_TIMEOUT = 5.0
_READ_CHUNK = 16384
# What a failure shows of the received bytes: the start and the end (a banner is at the start,
# an answer's body at the end), as escaped text on one line.
EXCERPT_HEAD = 120
EXCERPT_TAIL = 120

# The escapes `send` understands. Any other backslash sequence is refused, so a typo (`\d`, a
# Windows path) is an error and not bytes nobody meant to send.
_SIMPLE_ESCAPES = {'\\': b'\\', 'r': b'\r', 'n': b'\n', 't': b'\t', '0': b'\0'}
_HEX_DIGITS = '0123456789abcdefABCDEF'


class TcpProbeOptionError(smoke.SmokeOptionError):
    """An invalid tcp smoke option; the message names the option and what would be valid."""


def parse_send(text):
    """``send`` as the bytes to write: text encoded as UTF-8, with backslash escapes decoded.

    ``\\r``, ``\\n``, ``\\t``, ``\\0``, ``\\\\`` and ``\\xHH`` (one byte) are understood, so
    ``'GET / HTTP/1.0\\r\\n\\r\\n'`` written in YAML single quotes (where the backslashes stay)
    sends CR LF. Real control characters (from YAML double quotes, where ``"\\r\\n"`` already is
    CR LF) are sent as they are. Returns None for None.
    """
    if text is None:
        return None
    if not isinstance(text, str):
        raise TcpProbeOptionError('send must be a string, got %r' % (text,))
    data = bytearray()
    index = 0
    while index < len(text):
        char = text[index]
        if char != '\\':
            data += char.encode('utf-8', errors='surrogateescape')
            index += 1
            continue
        code = text[index + 1:index + 2]
        if code in _SIMPLE_ESCAPES:
            data += _SIMPLE_ESCAPES[code]
            index += 2
        elif code == 'x' and len(text) >= index + 4 and all(c in _HEX_DIGITS for c in text[index + 2:index + 4]):
            data.append(int(text[index + 2:index + 4], 16))
            index += 4
        else:
            shown = text[index:index + 4] if code == 'x' else text[index:index + 2]
            raise TcpProbeOptionError(
                'send %r has the unknown escape %r at character %d: use \\r, \\n, \\t, \\0, \\xHH or \\\\ '
                '(\\\\ for a backslash itself)' % (text, shown, index + 1))
    if not data:
        raise TcpProbeOptionError('send must not be empty; leave it out to only connect')
    return bytes(data)


def compile_expect(pattern):
    """``expect`` compiled (searched with ``re.search`` in the received text), or None."""
    if pattern is None:
        return None
    if not isinstance(pattern, str) or pattern == '':
        raise TcpProbeOptionError('expect must be a non-empty regular expression; leave it out to not read')
    try:
        return re.compile(pattern)
    except re.error as e:
        raise TcpProbeOptionError('expect %r is not a valid regular expression: %s' % (pattern, e))


def validate_host(host):
    """The address to connect to: an IPv4 or IPv6 address (brackets allowed) or a host name."""
    if not isinstance(host, str) or not host.strip():
        raise TcpProbeOptionError('host must not be empty: give the address of the listener (a node), '
                                  'like 10.0.0.5, haproxy1.internal or ::1')
    text = host.strip()
    address = text[1:-1] if text.startswith('[') and text.endswith(']') else text
    if ':' in address:
        try:
            ipaddress.IPv6Address(address.split('%', 1)[0])
        except ValueError:
            raise TcpProbeOptionError('host %r is not an IPv6 address or a host name; give the port in port, '
                                      'not in host' % host)
        return address
    if not smoke._HOSTNAME_RE.match(address) or '..' in address:
        raise TcpProbeOptionError('host %r is not an IPv4 address or a host name' % host)
    return address


def validate_port(port):
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise TcpProbeOptionError('port must be a TCP port from 1 to 65535, got %r' % (port,))
    return port


def validate_count(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise TcpProbeOptionError('%s must be at least %d, got %r' % (name, minimum, value))
    return value


class TcpSmokeSpec(object):
    """Validated options of a tcp smoke run (see :func:`prepare`)."""

    def __init__(self, host, port, requests, interval, timeout, send, expect, max_bytes):
        self.host = host
        self.port = port
        self.requests = requests
        self.interval = interval
        self.timeout = timeout
        self.send = send  # bytes or None
        self.expect = expect  # compiled pattern or None
        self.max_bytes = max_bytes

    @property
    def address_text(self):
        return smoke.format_address(self.host, self.port)

    @property
    def expectation(self):
        """What an attempt must achieve, in words (a failure's `expected`)."""
        if self.expect is not None:
            return 'a match of %r' % self.expect.pattern
        if self.send is not None:
            return 'a connection that accepts the %d bytes of send' % len(self.send)
        return 'a connection'


def prepare(host, port, requests=1, interval=0.0, timeout=DEFAULT_TIMEOUT, send=None, expect=None,
            max_bytes=DEFAULT_MAX_BYTES):
    """Check every option and return a :class:`TcpSmokeSpec`; raises TcpProbeOptionError naming
    the first bad one. Nothing is sent."""
    host = validate_host(host)
    port = validate_port(port)
    requests = validate_count('requests', requests, 1)
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or interval < 0:
        raise TcpProbeOptionError('interval must not be negative, got %r' % (interval,))
    try:
        timeout = smoke.validate_timeout(timeout)
    except smoke.SmokeOptionError as e:
        raise TcpProbeOptionError(str(e))
    max_bytes = validate_count('max_bytes', max_bytes, 1)
    return TcpSmokeSpec(host, port, requests, float(interval), timeout, parse_send(send), compile_expect(expect),
                        max_bytes)


def decode_received(data):
    """Received bytes as text for ``expect``: UTF-8, other bytes kept as surrogates (never fails,
    never matches a printable pattern by accident)."""
    return data.decode('utf-8', errors='surrogateescape')


def escape_text(text):
    """Text on one printable line: backslash, CR, LF, tab and other control characters (and bytes
    that were not UTF-8) as escapes, the form ``send`` accepts."""
    out = []
    for char in text:
        code = ord(char)
        if char == '\\':
            out.append('\\\\')
        elif char == '\r':
            out.append('\\r')
        elif char == '\n':
            out.append('\\n')
        elif char == '\t':
            out.append('\\t')
        elif 0xdc80 <= code <= 0xdcff:  # a byte that was not UTF-8 (surrogateescape)
            out.append('\\x%02x' % (code - 0xdc00))
        elif code < 0x20 or code == 0x7f:
            out.append('\\x%02x' % code)
        else:
            out.append(char)
    return ''.join(out)


def received_excerpt(data, head=EXCERPT_HEAD, tail=EXCERPT_TAIL):
    """The received bytes as one escaped line; longer ones as their start, `...` and their end."""
    text = decode_received(data)
    if len(text) <= head + tail + 5:
        return escape_text(text)
    return '%s ... %s' % (escape_text(text[:head]), escape_text(text[-tail:]))


def attempt_result(attempt, elapsed, spec, connected=False, error=None, received=b'', matched=None,
                   ended=None):
    """One attempt's entry of ``results``.

    `error`: no connection or a socket error (refused, timed out while connecting, reset);
    `ended` (with `matched` False): how the read ended without a match: ``eof``, ``timeout`` or
    ``max_bytes``. With neither, the attempt passed.
    """
    reason = None
    if error is not None:
        if connected and spec.expect is not None and error == 'timed out':
            reason = 'timed out after %d bytes without a match of %r' % (len(received), spec.expect.pattern)
        elif connected:
            reason = '%s after %d bytes' % (error, len(received))
        else:
            reason = error
    elif not matched and spec.expect is not None:
        reason = {
            'eof': 'connection closed after %d bytes without a match of %r',
            'max_bytes': 'read max_bytes (%d) without a match of %r',
        }[ended] % (len(received), spec.expect.pattern)
    passed = reason is None
    return {
        'attempt': attempt,
        'elapsed': round(max(elapsed, 0.0), 4),
        'connected': bool(connected),
        'matched': passed,
        'error': error,
        'reason': reason,
        'received_bytes': len(received),
        'received_excerpt': None if passed or not received else received_excerpt(received),
    }


def probe_once(spec, attempt=1, connect=None, clock=time.monotonic):
    """One attempt (see the module docstring); returns its :func:`attempt_result` entry.

    Never raises for network problems. ``timeout`` bounds the whole attempt: name lookup,
    connect, send and every read. ``connect`` (``(address, deadline) -> socket``) is
    smoke._open_tcp unless given.
    """
    connect = connect or smoke._open_tcp
    started = clock()
    sock = None
    received = bytearray()
    connected = False
    try:
        deadline = smoke.Deadline(spec.timeout, clock=clock)
        sock = connect((spec.host, spec.port), deadline)
        connected = True
        if spec.send is not None:
            sock.settimeout(deadline.remaining())
            sock.sendall(spec.send)
        if spec.expect is None:
            return attempt_result(attempt, clock() - started, spec, connected=True)
        while len(received) < spec.max_bytes:
            sock.settimeout(deadline.remaining())
            chunk = sock.recv(min(_READ_CHUNK, spec.max_bytes - len(received)))
            if not chunk:
                return attempt_result(attempt, clock() - started, spec, connected=True, received=bytes(received),
                                      matched=False, ended='eof')
            received += chunk
            if spec.expect.search(decode_received(bytes(received))):
                return attempt_result(attempt, clock() - started, spec, connected=True, received=bytes(received),
                                      matched=True)
        return attempt_result(attempt, clock() - started, spec, connected=True, received=bytes(received),
                              matched=False, ended='max_bytes')
    except Exception as e:  # every network problem is this attempt's result
        return attempt_result(attempt, clock() - started, spec, connected=connected, error=smoke.describe_error(e),
                              received=bytes(received))
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def failure_entries(results, spec):
    """The failed attempts: which one, why, what was expected and received, and how long it took."""
    return [{
        'attempt': r['attempt'],
        'reason': r['reason'],
        'expected': spec.expectation,
        'received': r['received_excerpt'],
        'elapsed': r['elapsed'],
    } for r in results if not r['matched']]


def summarize(results):
    """Counts over all attempts, with http_smoke's summary keys where they apply (TCP has no
    status, and what was received is in each failure rather than counted: a passing attempt
    stops reading at the match)."""
    return {
        'error_counts': dict(smoke._count(r['error'] for r in results if r['error'] is not None)),
        'failure_counts': dict(smoke._count(r['reason'] for r in results if not r['matched'])),
    }


def build_message(spec, results):
    """One line: how many attempts passed or failed, why, and what the first failure received."""
    total = len(results)
    failed = [r for r in results if not r['matched']]
    noun = 'connection' if total == 1 else 'connections'
    target = 'tcp://%s' % spec.address_text
    if not failed:
        if total == 1:
            return '1 connection to %s passed' % target
        return 'all %d %s to %s passed' % (total, noun, target)
    reasons = ', '.join('%d x %s' % (count, reason) for reason, count in smoke._count(r['reason'] for r in failed))
    message = '%d of %d %s to %s failed: %s' % (len(failed), total, noun, target, reasons)
    shown = [r for r in failed if r['received_excerpt'] is not None]
    if shown:
        message += "; attempt %d received '%s'" % (shown[0]['attempt'], shown[0]['received_excerpt'])
    return message


def run_tcp_smoke(spec, probe=None, sleep=None, clock=time.monotonic):
    """``spec.requests`` attempts (:func:`prepare`'s spec), ``spec.interval`` seconds apart: the verdict.

    Returns http_smoke's keys (passed, passed_count, failed_count, requests, results, summary,
    msg) and ``failures`` and ``elapsed`` (seconds, the whole run).
    """
    probe = probe or probe_once
    sleep = sleep or time.sleep
    started = clock()
    results = []
    for index in range(spec.requests):
        if index and spec.interval:
            sleep(spec.interval)
        results.append(probe(spec, attempt=index + 1))
    passed_count = sum(1 for r in results if r['matched'])
    return dict(
        passed=passed_count == len(results),
        passed_count=passed_count,
        failed_count=len(results) - passed_count,
        requests=len(results),
        results=results,
        failures=failure_entries(results, spec),
        summary=summarize(results),
        msg=build_message(spec, results),
        elapsed=round(max(clock() - started, 0.0), 4),
    )
