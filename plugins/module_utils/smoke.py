# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""HTTP smoke requests for the http_smoke and haproxy_backend_preflight modules.

Most of this file is pure and unit tested without a network: option
validation (URL, resolve address, status codes, method, headers), turning an
exception into a short per-request error text, judging one response, and
building the summary and the one-line message of a smoke run. The engine's
filter plugin imports the validators on the controller, so their signatures
stay as they are.

:func:`send_request` is the one function that sends a request, for every
module: one request on a fresh ``http.client`` connection whose socket is
made here, optionally to another address than the URL's host (like curl's
``--resolve``; the URL's host stays in the Host header, the TLS SNI and the
certificate check), bounded as a whole by one deadline, with the body read up
to a cap. Nothing global is patched, so requests in other threads are never
affected.
"""

from __future__ import annotations

import http.client
import http.cookiejar
import io
import ipaddress
import netrc
import os
import re
import socket
import ssl
import string
import threading
import time
import urllib.error
import urllib.request
import zlib
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

# ansible.module_utils.urls is imported where it is used (Basic auth, the TLS context), not here:
# importing it costs ~45 ms of every module run that loads this file, and the release engine's
# steps load it on every run whether or not they send a request over TLS or with credentials.
# AnsiballZ bundles it all the same (it finds imports inside functions too).

HTTP_AGENT = 'ansible-httpget'
# The most of a body that is read and judged; the rest is never read (issue 7: a 50 MB body
# must not cost 140 MB of memory on the managed host).
DEFAULT_MAX_BODY_BYTES = 1048576
_READ_CHUNK = 65536

EXCERPT_LENGTH = 200
BODY_KEY_LENGTH = 80
MAX_BODY_KEYS = 10
OTHER_BODIES = '(other)'

SUPPORTED_SCHEMES = ('http', 'https')
DEFAULT_PORTS = {'http': 80, 'https': 443}
# What the release engine's smoke tests take: http(s) URLs and tcp://HOST:PORT (a `mode tcp`
# service: connect, optionally send, read until the backend's regex matches; tcp_probe.py).
ENGINE_SCHEMES = SUPPORTED_SCHEMES + ('tcp',)

# RFC 9110 token characters, the only ones allowed in a method or header name.
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# A DNS name or an IPv4 address (letters, digits, '-', '_' and dots).
_HOSTNAME_RE = re.compile(r'^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$')
_SSL_LOCATION_RE = re.compile(r'\s*\(_ssl\.c:\d+\)\s*$')


class SmokeOptionError(ValueError):
    """An invalid option value; the message names the option."""


def smoke_request_argument_spec():
    """The request a smoke test sends and how its answers are judged (url, headers, status_code,
    body_regex, max_body_bytes): http_smoke and haproxy_backend_preflight, documented in the
    smoke doc fragment."""
    return dict(
        url=dict(type='str', required=True),
        headers=dict(type='dict', default={}),
        status_code=dict(type='list', elements='int', default=[200]),
        body_regex=dict(type='str'),
        max_body_bytes=dict(type='int', default=DEFAULT_MAX_BODY_BYTES),
    )


def smoke_repeat_argument_spec():
    """How often a smoke test tries and what a failed one does (requests, interval, timeout,
    fail_on_error): http_smoke and tcp_smoke, documented in the smoke.repeat doc fragment."""
    return dict(
        requests=dict(type='int', default=1),
        interval=dict(type='float', default=0),
        timeout=dict(type='float', default=5),
        fail_on_error=dict(type='bool', default=True),
    )


def exit_smoke(module, result, fail_on_error):
    """End a smoke module's run with its result: a smoke test only reads, and with any attempt
    failed the task fails unless fail_on_error is off (the playbook then judges `passed`)."""
    result['changed'] = False
    if result['failed_count'] and fail_on_error:
        module.fail_json(**result)
    module.exit_json(**result)


class Target(object):
    """A parsed, validated URL: where the request goes and what it is called."""

    def __init__(self, url, scheme, host, port):
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port
        self.netloc_host = None  # the URL's host[:port] as written, for the Host header

    def __repr__(self):
        return 'Target(%r, %r, %r, %r)' % (self.url, self.scheme, self.host, self.port)


def _has_control_chars(value):
    return any(ord(c) < 0x20 or ord(c) == 0x7f for c in value)


def parse_url(url, schemes=SUPPORTED_SCHEMES):
    """Validate ``url`` and return a :class:`Target`.

    Only absolute URLs with a host and one of ``schemes`` are accepted: http:// and https://
    unless told otherwise; with ``tcp`` in ``schemes`` (ENGINE_SCHEMES, the release engine's),
    also ``tcp://HOST:PORT``, which names no path, query or user and needs its port.
    """
    if not isinstance(url, str) or not url.strip():
        raise SmokeOptionError('url must not be empty')
    if url != url.strip() or ' ' in url or _has_control_chars(url):
        raise SmokeOptionError('url %r must not contain spaces or control characters' % url)
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise SmokeOptionError('url %r is not a valid URL: %s' % (url, e))
    scheme = parts.scheme.lower()
    if not scheme:
        raise SmokeOptionError('url %r has no scheme; use http://HOST/PATH or https://HOST/PATH' % url)
    if scheme not in schemes:
        raise SmokeOptionError('url %r has the unsupported scheme %r; use %s' % (
            url, parts.scheme, ' or '.join(schemes) if len(schemes) < 3 else ', '.join(schemes[:-1]) + ' or ' + schemes[-1]))
    host = parts.hostname
    if not host:
        raise SmokeOptionError('url %r has no host' % url)
    try:
        port = parts.port
    except ValueError:
        raise SmokeOptionError('url %r has an invalid port' % url)
    if scheme == 'tcp':
        if port is None or not 1 <= port <= 65535:
            raise SmokeOptionError('url %r needs a port from 1 to 65535: tcp://HOST:PORT' % url)
        if parts.path not in ('', '/') or parts.query or parts.fragment or '@' in parts.netloc:
            raise SmokeOptionError('url %r: a tcp:// URL is tcp://HOST:PORT only (what to send is the smoke '
                                   'send option, not a path)' % url)
        return Target(url, scheme, host, port)
    if port is None:
        port = DEFAULT_PORTS[scheme]
    elif not 1 <= port <= 65535:
        raise SmokeOptionError('url %r has an invalid port' % url)
    return Target(url, scheme, host, port)


def is_tcp(url):
    """Whether a smoke URL is a tcp:// one (checked with parse_url(url, ENGINE_SCHEMES) elsewhere)."""
    return isinstance(url, str) and url[:6].lower() == 'tcp://'


def parse_resolve(value):
    """Parse a ``resolve`` address like curl's ``--resolve``.

    Accepted: ``ADDR``, ``ADDR:PORT``, ``[IPV6]``, ``[IPV6]:PORT`` and a bare
    IPv6 address. ADDR is an IPv4 address or a host name. Returns
    ``(address, port)`` where port is None when not given.
    """
    if not isinstance(value, str) or not value.strip():
        raise SmokeOptionError('resolve must not be empty')
    text = value.strip()
    if ' ' in text or _has_control_chars(text) or '/' in text:
        raise SmokeOptionError('resolve %r must be an address with an optional port, '
                               'like 10.0.0.5, 10.0.0.5:8080, [2001:db8::5]:443 or node1.example.com' % value)

    port_text = None
    if text.startswith('['):
        end = text.find(']')
        if end < 0:
            raise SmokeOptionError('resolve %r has no closing ] for its IPv6 address' % value)
        address = text[1:end]
        rest = text[end + 1:]
        if rest:
            if not rest.startswith(':'):
                raise SmokeOptionError('resolve %r: expected :PORT after the ] of the IPv6 address' % value)
            port_text = rest[1:]
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise SmokeOptionError('resolve %r: %r is not a valid IPv6 address' % (value, address))
    elif text.count(':') >= 2:
        try:
            ipaddress.IPv6Address(text)
        except ValueError:
            raise SmokeOptionError('resolve %r is neither an IPv6 address nor ADDR:PORT '
                                   '(curl\'s HOST:PORT:ADDR form is not used here: give only the address, '
                                   'and write IPv6 with a port as [ADDR]:PORT)' % value)
        address = text
    else:
        address, sep, port_text = text.partition(':')
        if not sep:
            port_text = None
        if not address:
            raise SmokeOptionError('resolve %r has no address' % value)
        if not _HOSTNAME_RE.match(address) or '..' in address:
            raise SmokeOptionError('resolve %r: %r is not a valid IPv4 address or host name' % (value, address))
        if re.match(r'^[0-9.]+$', address):
            try:
                ipaddress.IPv4Address(address)
            except ValueError:
                raise SmokeOptionError('resolve %r: %r is not a valid IPv4 address' % (value, address))

    port = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise SmokeOptionError('resolve %r has an invalid port %r (expected 1-65535)' % (value, port_text))
        port = int(port_text)
    return address, port


def resolve_address(value, target):
    """`resolve` for the URL `target` (parse_url's): the (address, port) to connect to, the URL's
    port when `resolve` gives none, and that address as text for messages."""
    address, port = parse_resolve(value)
    connect = (address, port or target.port)
    return connect, format_address(*connect)


def format_address(address, port):
    """``host:port`` with IPv6 addresses in brackets."""
    if ':' in address:
        return '[%s]:%d' % (address, port)
    return '%s:%d' % (address, port)


def validate_status_codes(codes):
    """Return the list of expected status codes or raise SmokeOptionError."""
    if not codes:
        raise SmokeOptionError('status_code must list at least one HTTP status code')
    result = []
    for code in codes:
        if isinstance(code, bool) or not isinstance(code, int) or not 100 <= code <= 599:
            raise SmokeOptionError('status_code: %r is not an HTTP status code (100-599)' % (code,))
        if code not in result:
            result.append(code)
    return result


def validate_method(method):
    if not isinstance(method, str) or not _TOKEN_RE.match(method):
        raise SmokeOptionError('method %r is not a valid HTTP method' % (method,))
    return method.upper()


def validate_headers(headers):
    """Return headers as a dict of str to str, refusing names and values that would break the request."""
    result = {}
    for name, value in (headers or {}).items():
        name = str(name)
        if not _TOKEN_RE.match(name):
            raise SmokeOptionError('headers: %r is not a valid header name' % name)
        if value is None:
            value = ''
        if isinstance(value, bool):
            value = 'true' if value else 'false'
        value = str(value)
        if any(c in value for c in '\r\n\0'):
            raise SmokeOptionError('headers: the value of %r contains CR, LF or NUL' % name)
        result[name] = value
    return result


def compile_body_regex(pattern):
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        raise SmokeOptionError('body_regex %r is not a valid regular expression: %s' % (pattern, e))


def mask_url(url):
    """Hide a password in the URL's user info, for messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition('@')
    userinfo = netloc[0].partition(':')[0]
    return urlunsplit(parts._replace(netloc='%s:********@%s' % (userinfo, netloc[2])))


def decode_body(data, charset=None):
    """Bytes to text; unknown or wrong charsets never fail."""
    if data is None:
        return ''
    if isinstance(data, str):
        return data
    try:
        return data.decode(charset or 'utf-8', errors='replace')
    except LookupError:
        return data.decode('utf-8', errors='replace')


def body_excerpt(text, limit=EXCERPT_LENGTH):
    """The first ``limit`` characters of a body, marked when cut."""
    if text is None:
        return None
    if len(text) <= limit:
        return text
    return text[:limit] + '...'


def body_key(text, limit=BODY_KEY_LENGTH):
    """The first non-empty line of a body, shortened: how bodies are counted in the summary."""
    if not text:
        return ''
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[:limit] + '...'
    return ''


def _clean_ssl_text(text):
    return _SSL_LOCATION_RE.sub('', text).strip()


def describe_error(exc):
    """A short, stable text for an exception raised while sending one request."""
    # urllib wraps errors raised while connecting and sending
    if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError):
        reason = exc.reason
        if isinstance(reason, BaseException):
            return describe_error(reason)
        return 'request failed: %s' % reason

    if isinstance(exc, SmokeOptionError):
        return str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, 'verify_message', None) or _clean_ssl_text(str(exc))
        return 'TLS certificate verification failed: %s' % detail
    if isinstance(exc, ssl.SSLError):
        detail = _clean_ssl_text(str(exc)) or getattr(exc, 'reason', None) or exc.__class__.__name__
        return 'TLS error: %s' % detail
    if isinstance(exc, NameResolutionTimeout):
        return 'name resolution of %s timed out' % exc.host
    if isinstance(exc, socket.timeout) or isinstance(exc, TimeoutError):
        return 'timed out'
    if isinstance(exc, ConnectionRefusedError):
        return 'connection refused'
    if isinstance(exc, http.client.RemoteDisconnected):
        return 'connection closed without a response'
    if isinstance(exc, ConnectionResetError):
        return 'connection reset'
    if isinstance(exc, socket.gaierror):
        return 'name resolution failed: %s' % (exc.strerror or exc)
    if isinstance(exc, http.client.IncompleteRead):
        return 'incomplete response body'
    if isinstance(exc, http.client.HTTPException):
        return 'invalid HTTP response: %s' % (str(exc) or exc.__class__.__name__)
    if isinstance(exc, OSError):
        return 'connection error: %s' % (exc.strerror or str(exc) or exc.__class__.__name__)
    return '%s: %s' % (exc.__class__.__name__, exc)


def describe_expected(codes):
    if len(codes) == 1:
        return str(codes[0])
    if len(codes) == 2:
        return '%s or %s' % (codes[0], codes[1])
    return 'one of %s' % ', '.join(str(c) for c in codes)


def judge(status, text, status_codes, body_regex=None):
    """Does one response pass? Returns ``(matched, reason)``; reason is None when it passed."""
    if status not in status_codes:
        return False, 'status %s (expected %s)' % (status, describe_expected(status_codes))
    if body_regex is not None and not body_regex.search(text or ''):
        return False, 'body did not match %r' % body_regex.pattern
    return True, None


def request_result(elapsed, status=None, text=None, error=None, status_codes=(200,), body_regex=None,
                   body_truncated=False):
    """The per-request entry of ``results``.

    Either ``error`` (no usable response) or ``status`` and ``text`` (a response) is given.
    ``body_truncated`` says the body was longer than the cap and only its start was judged.
    """
    if error is not None:
        matched, reason = False, error
    else:
        matched, reason = judge(status, text, status_codes, body_regex)
    return {
        'status': status,
        'elapsed': round(max(elapsed, 0.0), 4),
        'matched': matched,
        'error': error,
        'reason': reason,
        'body_excerpt': None if matched or text is None else body_excerpt(text),
        'body_truncated': bool(body_truncated) if error is None else False,
        # kept only for the summary; removed before the result is returned
        '_body_key': None if text is None else body_key(text),
    }


def _count(items):
    """Count items, keeping first-seen order, most frequent first."""
    counts = {}
    order = []
    for item in items:
        if item not in counts:
            counts[item] = 0
            order.append(item)
        counts[item] += 1
    order.sort(key=lambda k: -counts[k])  # stable: ties keep first-seen order
    return [(k, counts[k]) for k in order]


def summarize(results):
    """Status, body and failure counts over all requests."""
    status_counts = dict((str(k), v) for k, v in _count(r['status'] for r in results if r['status'] is not None))
    body_counts = {}
    for key, count in _count(r['_body_key'] for r in results if r.get('_body_key') is not None):
        if len(body_counts) < MAX_BODY_KEYS:
            body_counts[key] = count
        else:
            body_counts[OTHER_BODIES] = body_counts.get(OTHER_BODIES, 0) + count
    error_counts = dict(_count(r['error'] for r in results if r['error'] is not None))
    failure_counts = dict(_count(r['reason'] for r in results if not r['matched']))
    return {
        'status_counts': status_counts,
        'body_counts': body_counts,
        'error_counts': error_counts,
        'failure_counts': failure_counts,
    }


def build_message(url, results, resolve_address=None):
    """One line: how many requests passed or failed, and why."""
    total = len(results)
    failed = [r for r in results if not r['matched']]
    target = mask_url(url)
    if resolve_address:
        target = '%s (via %s)' % (target, resolve_address)
    noun = 'request' if total == 1 else 'requests'
    if not failed:
        if total == 1:
            return '1 request to %s passed' % target
        return 'all %d %s to %s passed' % (total, noun, target)
    reasons = ', '.join('%d x %s' % (count, reason) for reason, count in _count(r['reason'] for r in failed))
    received = [r['body_excerpt'] for r in failed if r.get('body_excerpt')] if is_tcp(url) else []
    # A tcp answer has no status to count: what the first failed attempt received says what answered.
    return '%d of %d %s to %s failed: %s%s' % (len(failed), total, noun, target, reasons,
                                               "; received '%s'" % received[0] if received else '')


def public_results(results):
    """The results without internal keys."""
    return [dict((k, v) for k, v in r.items() if not k.startswith('_')) for r in results]


# ---------------------------------------------------------------------------
# Sending one request
# ---------------------------------------------------------------------------

def run_smoke(url, requests=1, interval=0.0, resolve_text=None, send=None, sleep=None, **request_options):
    """Send the smoke request `requests` times, `interval` seconds apart: http_smoke's verdict.

    `request_options` go to `send` (send_request unless given) for every request. Returns
    passed, passed_count, failed_count, requests, results, summary and msg.
    """
    send = send or send_request
    sleep = sleep or time.sleep
    raw_results = []
    for index in range(requests):
        if index and interval:
            sleep(interval)
        raw_results.append(send(url, **request_options))
    passed_count = sum(1 for result in raw_results if result['matched'])
    failed_count = len(raw_results) - passed_count
    return dict(
        passed=failed_count == 0,
        passed_count=passed_count,
        failed_count=failed_count,
        requests=len(raw_results),
        results=public_results(raw_results),
        summary=summarize(raw_results),
        msg=build_message(url, raw_results, resolve_text),
    )


def validate_timeout(timeout, name='timeout'):
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise SmokeOptionError('%s must be more than 0 seconds, got %s' % (name, timeout))
    return float(timeout)


def validate_max_body_bytes(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SmokeOptionError('max_body_bytes must be 0 or more, got %s' % (value,))
    return value


class NameResolutionTimeout(socket.timeout):
    """The request's time ran out while the URL's host name was being resolved."""

    def __init__(self, host):
        super(NameResolutionTimeout, self).__init__('timed out resolving %s' % host)
        self.host = host


def _is_ip_literal(host):
    try:
        ipaddress.ip_address(str(host).strip('[]').split('%', 1)[0])
        return True
    except ValueError:
        return False


def resolve_within(host, port, deadline, getaddrinfo=None):
    """getaddrinfo for a TCP connection to ``host:port``, waiting at most until ``deadline``.

    getaddrinfo cannot be interrupted, so it runs in a daemon thread; when the time runs out
    the thread is left to finish on its own (the module exits soon after) and the request
    fails with NameResolutionTimeout.
    """
    getaddrinfo = getaddrinfo or socket.getaddrinfo
    outcome = {}

    def work():
        try:
            outcome['infos'] = getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except Exception as exc:  # handed to the caller's thread below
            outcome['error'] = exc

    worker = threading.Thread(target=work, name='resolve %s' % host)
    worker.daemon = True
    worker.start()
    worker.join(deadline.remaining())
    if worker.is_alive():
        raise NameResolutionTimeout(host)
    if 'error' in outcome:
        raise outcome['error']
    return outcome['infos']


class Deadline(object):
    """The instant by which a whole request must be done."""

    def __init__(self, seconds, clock=time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self.expires = clock() + seconds

    def remaining(self):
        """Seconds left; raises socket.timeout once none are (reported as 'timed out')."""
        left = self.expires - self._clock()
        if left <= 0:
            raise socket.timeout('timed out')
        return left


def read_capped(response, max_bytes):
    """Read at most ``max_bytes`` of a body: ``(data, truncated)``.

    Reading stops at the cap, so memory stays at the cap whatever the server sends;
    ``truncated`` says more was there (found by reading one more byte, or by the time
    running out while looking for it).
    """
    data = bytearray()
    while len(data) < max_bytes:
        chunk = response.read(min(_READ_CHUNK, max_bytes - len(data)))
        if not chunk:
            return bytes(data), False
        data += chunk
    try:
        truncated = bool(response.read(1))
    except (socket.timeout, OSError, http.client.HTTPException):
        truncated = True
    return bytes(data), truncated


def read_response(response, max_bytes=DEFAULT_MAX_BODY_BYTES):
    """Status, decoded body (at most ``max_bytes`` of it) and whether it was cut, of a response
    (or of an HTTPError, which is one)."""
    status = response.getcode() if hasattr(response, 'getcode') else response.code
    try:
        data, truncated = read_capped(response, max_bytes)
    except AttributeError:
        # HTTPError without a body
        data, truncated = b'', False
    charset = None
    headers = getattr(response, 'headers', None)
    if headers is not None and hasattr(headers, 'get_content_charset'):
        charset = headers.get_content_charset()
    return status, decode_body(data, charset), truncated


# ---------------------------------------------------------------------------
# The connection: explicit http.client connections, nothing global touched
# ---------------------------------------------------------------------------

# The redirect statuses urllib (and so ansible-core's Request) follows, and its limits.
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
MAX_REPEATS = 4


class _DeadlineReader(io.RawIOBase):
    """The response side of a socket: every read waits at most until the request's deadline.

    A socket timeout alone bounds each read, so an answer trickling one byte a second would
    never time out; setting what is left of the deadline before every read bounds the whole
    request. (``socket.timeout`` is raised once none is left.)
    """

    def __init__(self, sock, deadline):
        super(_DeadlineReader, self).__init__()
        self._sock = sock
        self._deadline = deadline

    def readable(self):
        return True

    def readinto(self, buffer):
        self._sock.settimeout(self._deadline.remaining())
        return self._sock.recv_into(buffer)


class _DeadlineStream(object):
    """The socket as http.client sees it: sends and reads bounded by the request's deadline.

    The connection owns the real socket and closes it (``_SmokeConnection.release``);
    http.client's own ``close`` calls, made while the response is still being read, only
    drop this view of it.
    """

    def __init__(self, sock, deadline):
        self._sock = sock
        self._deadline = deadline

    def sendall(self, data):
        self._sock.settimeout(self._deadline.remaining())
        return self._sock.sendall(data)

    def makefile(self, mode='rb', *args, **kwargs):
        if 'r' not in mode or 'w' in mode:
            raise ValueError('only reading is supported, not %r' % mode)
        return io.BufferedReader(_DeadlineReader(self._sock, self._deadline))

    def close(self):
        pass

    def __getattr__(self, name):
        return getattr(self._sock, name)


def _open_tcp(address, deadline):
    """A TCP connection to ``address`` (``(host, port)``) made within ``deadline``.

    A host name is resolved first under the same deadline (:func:`resolve_within`), then its
    addresses are tried in order, as ``socket.create_connection`` does.
    """
    host, port = address
    host = str(host).strip('[]')
    if _is_ip_literal(host):
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
    else:
        infos = resolve_within(host, port, deadline)
    last_error = None
    for family, kind, proto, dummy, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(sockaddr)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as exc:
            sock.close()
            last_error = exc
    raise last_error or socket.gaierror('no address for %s' % host)


class _Route(object):
    """Where one hop's TCP connection goes and how the request line names the resource."""

    def __init__(self, address, proxy_headers=None, tunnel=False, absolute_form=False):
        self.address = address
        self.proxy_headers = proxy_headers or {}
        self.tunnel = tunnel
        self.absolute_form = absolute_form


class _SmokeConnection(http.client.HTTPConnection):
    """One request's connection: to an address chosen here, TLS wrapped here, under one deadline.

    ``http.client`` writes the request and parses the answer; the TCP connection (to the
    ``resolve`` address, a proxy or the URL's host), the CONNECT tunnel through a proxy and
    the TLS handshake (SNI and certificate check for ``server_hostname``, the URL's host) are
    made in :meth:`connect`, each bounded by what is left of the deadline.
    """

    def __init__(self, target, route, deadline, tls_context):
        super(_SmokeConnection, self).__init__(target.host, target.port)
        self._route = route
        self._deadline = deadline
        self._tls_context = tls_context if target.scheme == 'https' else None
        self._server_hostname = target.host
        self._real_socket = None
        if route.tunnel:
            self.set_tunnel(target.host, target.port, headers=route.proxy_headers)

    def connect(self):
        self._real_socket = _open_tcp(self._route.address, self._deadline)
        self.sock = _DeadlineStream(self._real_socket, self._deadline)
        if self._route.tunnel:
            self._tunnel()  # http.client's CONNECT, through the bounded stream
        if self._tls_context is not None:
            # wrap_socket's handshake is one call; the socket timeout bounds it as a whole
            self._real_socket.settimeout(self._deadline.remaining())
            self._real_socket = self._tls_context.wrap_socket(self._real_socket,
                                                              server_hostname=self._server_hostname)
            self.sock = _DeadlineStream(self._real_socket, self._deadline)

    def release(self):
        if self._real_socket is not None:
            try:
                self._real_socket.close()
            except OSError:
                pass
            self._real_socket = None
        self.sock = None


def _proxy_route(target, use_proxy):
    """The route through the environment's proxy for ``target``, or None for a direct one
    (urllib's rules: ``<scheme>_proxy`` and ``no_proxy``)."""
    if not use_proxy:
        return None
    proxy = urllib.request.getproxies().get(target.scheme)
    if not proxy:
        return None
    if urllib.request.proxy_bypass(target.netloc_host):
        return None
    if '://' not in proxy:
        proxy = 'http://' + proxy
    parts = urlsplit(proxy)
    if not parts.hostname:
        return None
    headers = {}
    if parts.username is not None:
        headers['Proxy-Authorization'] = _basic_authorization(unquote(parts.username), unquote(parts.password or ''))
    address = (parts.hostname, parts.port or DEFAULT_PORTS[target.scheme])  # urllib's defaults
    if target.scheme == 'https':
        return _Route(address, proxy_headers=headers, tunnel=True)
    return _Route(address, proxy_headers=headers, absolute_form=True)


class _Hop(object):
    """One URL of a request's redirect chain, parsed the way the request line needs it."""

    def __init__(self, url):
        parts = urlsplit(url)
        self.target = parse_url(urlunsplit(parts._replace(fragment='')))
        netloc = parts.netloc.rpartition('@')[2]
        self.target.netloc_host = netloc
        self.url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ''))
        self.selector = urlunsplit(('', '', parts.path or '/', parts.query, ''))


def _basic_authorization(username, password):
    """ansible-core's Basic Authorization value, as text (it gives bytes, which http.client's
    CONNECT tunnel would write as "b'...'")."""
    from ansible.module_utils.urls import basic_auth_header  # lazily: see the imports at the top

    value = basic_auth_header(username, password)
    return value.decode('ascii') if isinstance(value, bytes) else value


def _merge_headers(*layers):
    """Header dictionaries merged in order, a later name replacing an earlier one in any case."""
    merged = {}
    for layer in layers:
        for name, value in layer.items():
            for existing in [key for key in merged if key.lower() == name.lower()]:
                del merged[existing]
            merged[name] = value
    return merged


def _url_credentials(url):
    """``(url without user info, username, password)``; the names are None when the URL has none."""
    parts = urlsplit(url)
    if '@' not in parts.netloc:
        return url, None, None
    credentials, dummy, netloc = parts.netloc.rpartition('@')
    username, sep, password = credentials.partition(':')
    return urlunsplit(parts._replace(netloc=netloc)), unquote(username), unquote(password) if sep else ''


def _netrc_authorization(host):
    try:
        login = netrc.netrc(os.environ.get('NETRC')).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if login and login[0] and login[2]:
        return _basic_authorization(login[0], login[2])
    return None


def _challenge_authorization(response, method, url, data, username, password):
    """The Authorization answering a 401's Basic or Digest challenge, or None (urllib's handlers)."""
    for challenge in response.headers.get_all('WWW-Authenticate') or []:
        scheme, dummy, rest = challenge.strip().partition(' ')
        if scheme.lower() == 'basic':
            return _basic_authorization(username, password)
        if scheme.lower() == 'digest':
            handler = urllib.request.HTTPDigestAuthHandler(urllib.request.HTTPPasswordMgrWithDefaultRealm())
            handler.add_password(None, url, username, password)
            request = urllib.request.Request(url, data=data, method=method)
            fields = urllib.request.parse_keqv_list(filter(None, urllib.request.parse_http_list(rest)))
            authorization = handler.get_authorization(request, fields)
            if authorization:
                return 'Digest %s' % authorization
    return None


def _redirect_to(hop, response, method, follow_redirects):
    """The next URL and method when ``response`` is a redirect to follow, else None.

    ansible-core's rules (``follow_redirects``: none, safe for GET and HEAD only, all) on top
    of urllib's (the statuses it follows, a Location or URI header, http and https only).
    """
    if follow_redirects not in ('safe', 'all') or response.status not in REDIRECT_STATUSES:
        return None
    if follow_redirects == 'safe' and method not in ('GET', 'HEAD'):
        return None
    location = response.headers.get('Location') or response.headers.get('URI')
    if not location:
        return None
    new_url = urljoin(hop.url, location.replace(' ', '%20'))
    if urlsplit(new_url).scheme.lower() not in SUPPORTED_SCHEMES:
        return None
    new_url = quote(new_url, encoding='iso-8859-1', safe=string.punctuation)
    if response.status in (307, 308):
        return new_url, method, True
    if (response.status in (302, 303) and method != 'HEAD') or (response.status == 301 and method == 'POST'):
        method = 'GET'
    return new_url, method, False


class _GzipBody(object):
    """A gzip-encoded body read decoded, never more than asked for (as ansible-core decodes it)."""

    def __init__(self, response):
        self._response = response
        self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending = b''

    def read(self, amount):
        while True:
            if self._pending:
                data = self._decoder.decompress(self._pending, amount)
                self._pending = self._decoder.unconsumed_tail
                if data:
                    return data
            if self._decoder.eof:
                return b''
            chunk = self._response.read(_READ_CHUNK)
            if not chunk:
                return self._decoder.flush()
            self._pending = chunk


# Building a TLS context reads the CA store (tens of milliseconds): callers sending many
# requests build it once and pass it to every send_request.
def build_tls_context(validate_certs=True, ca_path=None, client_cert=None, client_key=None):
    """The TLS context of smoke requests: ansible-core's (the CA store it finds, ``ca_path``
    instead when given, verification off with ``validate_certs=False``), with the client
    certificate loaded. Raises SmokeOptionError naming the file that could not be used."""
    try:  # lazily: see the imports at the top
        from ansible.module_utils.urls import make_context
    except ImportError:  # an ansible-core without it: the TLS context is built from ssl's defaults
        make_context = None
    try:
        if make_context is not None:
            context = make_context(cafile=ca_path, validate_certs=validate_certs)
        else:
            context = ssl.create_default_context(cafile=ca_path)
            if not validate_certs:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
    except (OSError, ssl.SSLError, ValueError) as e:
        raise SmokeOptionError('ca_path %r could not be used to verify certificates: %s' % (ca_path, e))
    if client_cert:
        try:
            context.load_cert_chain(client_cert, keyfile=client_key)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise SmokeOptionError('client_cert %r%s could not be loaded: %s' % (
                client_cert, ' with client_key %r' % client_key if client_key else '', _clean_ssl_text(str(e))))
    return context


class LazyTLSContext(object):
    """A TLS context built on first use and shared from then on (``tls_context`` of send_request).

    The release engine's steps hand one to every request they may send: a run whose smoke URLs
    and servers are all plain http never reads the CA store nor imports ansible's urls (~0.1 s
    a module run), and a run with https reads it once.
    """

    def __init__(self, validate_certs=True):
        self.validate_certs = validate_certs
        self._context = None

    def get(self):
        if self._context is None:
            self._context = build_tls_context(self.validate_certs)
        return self._context


def send_tcp(url, body_regex=None, timeout=5.0, connect_address=None, tcp_send=None, **ignored):
    """One tcp:// smoke attempt as a request result entry (:func:`request_result`'s keys, status None).

    tcp_probe's attempt: connect to ``connect_address`` (else the URL's host and port), send
    ``tcp_send`` (tcp_probe's escapes) when given, then read until ``body_regex`` (a compiled
    regex or None: connecting is the test) matches. HTTP options (status codes, headers, TLS,
    redirects...) do not apply and are ignored. A failed attempt's ``body_excerpt`` is what was
    received, as one escaped line. Never raises for network problems; bad options raise
    SmokeOptionError (tcp_probe.TcpProbeOptionError).
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import tcp_probe  # it imports this file

    target = parse_url(url, ENGINE_SCHEMES)
    host, port = connect_address or (target.host, target.port)
    expect = getattr(body_regex, 'pattern', body_regex)  # compiled (compile_body_regex) or text
    attempt = tcp_probe.probe_once(tcp_probe.prepare(host, port, timeout=timeout, send=tcp_send or None,
                                                     expect=expect or None))
    return {
        'status': None,
        'elapsed': attempt['elapsed'],
        'matched': attempt['matched'],
        'error': attempt['error'],
        'reason': attempt['reason'],
        'body_excerpt': attempt['received_excerpt'],
        'body_truncated': False,
        # The whole excerpt (a banner at its start, an answer's body at its end), where a failure quotes it.
        '_body_key': attempt['received_excerpt'],
    }


def send_request(url, method='GET', headers=None, data=None, status_codes=(200,), body_regex=None,
                 timeout=5.0, max_body_bytes=DEFAULT_MAX_BODY_BYTES, connect_address=None,
                 validate_certs=True, ca_path=None, follow_redirects='none', use_proxy=True,
                 tls_context=None, url_username=None, url_password=None, force_basic_auth=False,
                 client_cert=None, client_key=None, http_agent=HTTP_AGENT, use_netrc=True, tcp_send=None):
    """Send one request and return its result entry (see :func:`request_result`).

    The one place every smoke test of the release engine sends through (precheck's current
    path, the preflight of each server, SMOKE, the watch window's rounds, the rollback's
    smoke): a ``tcp://HOST:PORT`` URL is one tcp attempt (:func:`send_tcp`, with ``tcp_send``,
    ``body_regex``, ``timeout`` and ``connect_address``), anything else an HTTP request.
    ``tcp_send`` is ignored for http(s) URLs.

    Never raises for network or protocol problems: they are the entry's ``error``.
    ``timeout`` bounds the whole request, from connecting to the last byte read;
    ``connect_address`` (``(addr, port)``) sends the TCP connection for the URL's host and
    port there, keeping the URL's host in the Host header, the TLS SNI and the certificate
    check; proxies are then never used.

    Credentials as ansible-core's ``Request`` takes them: ``url_username``/``url_password``
    (else the URL's user info, else ``~/.netrc`` when ``use_netrc``), sent at once with
    ``force_basic_auth`` or a netrc entry, otherwise in answer to a 401's Basic or Digest
    challenge; ``client_cert``/``client_key`` for TLS client authentication (ignored when
    ``tls_context`` is given: build it with :func:`build_tls_context`).
    """
    if is_tcp(url):
        return send_tcp(url, body_regex=body_regex, timeout=timeout, connect_address=connect_address,
                        tcp_send=tcp_send)
    parse_url(url)  # an invalid URL is the caller's error, raised
    started = time.monotonic()
    connection = None
    try:
        deadline = Deadline(timeout)
        url, username, password = _url_credentials(url)
        if url_username:
            username, password = url_username, url_password or ''
        first = _Hop(url)
        origin = (first.target.host.lower(), first.target.port)
        preset = {'User-Agent': http_agent}
        if username and force_basic_auth:
            preset['Authorization'] = _basic_authorization(username, password)
        elif not username and use_netrc:
            netrc_authorization = _netrc_authorization(first.target.host)
            if netrc_authorization:
                preset['Authorization'] = netrc_authorization
        user_headers = dict(headers or {})
        body = data.encode('utf-8') if isinstance(data, str) else data  # as ansible-core's to_bytes
        # A new cookie jar per request, so no stickiness cookie pins the balancer; cookies set
        # along a redirect chain are sent on along it, as urllib does.
        cookies = http.cookiejar.CookieJar()
        hop, visited, challenge_answer = first, {}, None
        while True:
            at_origin = (hop.target.host.lower(), hop.target.port) == origin
            route = None
            if connect_address is not None and at_origin:
                route = _Route(connect_address)
            elif connect_address is None:
                route = _proxy_route(hop.target, use_proxy)
            route = route or _Route((hop.target.host, hop.target.port))
            if hop.target.scheme == 'https':  # reading the CA store costs ~0.1 s
                if isinstance(tls_context, LazyTLSContext):
                    tls_context = tls_context.get()
                elif tls_context is None:
                    tls_context = build_tls_context(validate_certs, ca_path, client_cert, client_key)
            connection = _SmokeConnection(hop.target, route, deadline, tls_context)
            cookie_request = urllib.request.Request(hop.url, method=method)
            cookies.add_cookie_header(cookie_request)
            extra = dict(cookie_request.unredirected_hdrs)
            if body is not None:
                extra['Content-Type'] = 'application/x-www-form-urlencoded'  # urllib's default
            if route.absolute_form:
                extra.update(route.proxy_headers)
            if challenge_answer is not None and at_origin:
                extra['Authorization'] = challenge_answer
            # The caller's headers win (Host included); urllib's Connection: close always.
            sent = _merge_headers(preset, extra, user_headers, {'Connection': 'close'})
            if not any(name.lower() == 'host' for name in sent):
                sent['Host'] = hop.target.netloc_host
            connection.request(method, hop.url if route.absolute_form else hop.selector, body=body, headers=sent)
            response = connection.getresponse()
            cookies.extract_cookies(response, cookie_request)
            if response.status == 401 and username and challenge_answer is None and at_origin:
                challenge_answer = _challenge_authorization(response, method, hop.url, body, username, password)
                if challenge_answer is not None:
                    connection.release()
                    continue
            redirect = _redirect_to(hop, response, method, follow_redirects)
            if redirect is None or len(visited) >= MAX_REDIRECTS or visited.get(redirect[0], 0) >= MAX_REPEATS:
                break
            new_url, method, keep_body = redirect
            visited[new_url] = visited.get(new_url, 0) + 1
            if not keep_body:
                body = None
                user_headers = dict((name, value) for name, value in user_headers.items()
                                    if name.lower() not in ('content-length', 'content-type', 'transfer-encoding'))
            connection.release()
            hop = _Hop(new_url)
        reader = response
        if response.headers.get('Content-Encoding', '').lower() == 'gzip':
            reader = _GzipBody(response)
        raw, truncated = read_capped(reader, max_body_bytes)
        status, text = response.status, decode_body(raw, response.headers.get_content_charset())
    except Exception as e:  # every network or protocol problem is a per-request result
        return request_result(time.monotonic() - started, error=describe_error(e))
    finally:
        if connection is not None:
            connection.release()
    return request_result(time.monotonic() - started, status=status, text=text,
                          status_codes=status_codes, body_regex=body_regex, body_truncated=truncated)
