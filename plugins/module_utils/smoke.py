# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""HTTP smoke requests for the http_smoke and haproxy_backend_preflight modules.

Most of this file is pure and unit tested without a network: option
validation (URL, resolve address, status codes, method, headers), turning an
exception into a short per-request error text, judging one response, and
building the summary and the one-line message of a smoke run. The engine's
filter plugin imports the validators on the controller, so their signatures
stay as they are.

:func:`send_request` is the one function that sends a request, for both
modules: one request on a fresh connection, optionally to another address
than the URL's host (like curl's ``--resolve``), bounded as a whole by one
deadline, with the body read up to a cap.
"""

from __future__ import annotations

import http.client
import inspect
import ipaddress
import re
import socket
import ssl
import threading
import time
import urllib.error
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from ansible.module_utils.urls import Request

try:
    from ansible.module_utils.urls import make_context
except ImportError:  # older ansible-core: Request builds its own TLS context per request
    make_context = None

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

# RFC 9110 token characters, the only ones allowed in a method or header name.
_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# A DNS name or an IPv4 address (letters, digits, '-', '_' and dots).
_HOSTNAME_RE = re.compile(r'^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$')
_SSL_LOCATION_RE = re.compile(r'\s*\(_ssl\.c:\d+\)\s*$')


class SmokeOptionError(ValueError):
    """An invalid option value; the message names the option."""


class Target(object):
    """A parsed, validated URL: where the request goes and what it is called."""

    def __init__(self, url, scheme, host, port):
        self.url = url
        self.scheme = scheme
        self.host = host
        self.port = port

    def __repr__(self):
        return 'Target(%r, %r, %r, %r)' % (self.url, self.scheme, self.host, self.port)


def _has_control_chars(value):
    return any(ord(c) < 0x20 or ord(c) == 0x7f for c in value)


def parse_url(url):
    """Validate ``url`` and return a :class:`Target`.

    Only absolute http:// and https:// URLs with a host are accepted.
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
    if scheme not in SUPPORTED_SCHEMES:
        raise SmokeOptionError('url %r has the unsupported scheme %r; use http or https' % (url, parts.scheme))
    host = parts.hostname
    if not host:
        raise SmokeOptionError('url %r has no host' % url)
    try:
        port = parts.port
    except ValueError:
        raise SmokeOptionError('url %r has an invalid port' % url)
    if port is None:
        port = DEFAULT_PORTS[scheme]
    elif not 1 <= port <= 65535:
        raise SmokeOptionError('url %r has an invalid port' % url)
    return Target(url, scheme, host, port)


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
    return '%d of %d %s to %s failed: %s' % (len(failed), total, noun, target, reasons)


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


# The deadline of the request being sent. The modules send one request at a time, and a
# socket made by http.client or ssl cannot be handed one any other way.
_ACTIVE_DEADLINE = [None]


def _arm(sock):
    """Before each wait on ``sock``: allow only what is left of the request's time.

    A socket timeout alone bounds each read, so an answer trickling one byte a second
    would never time out; re-arming before every read bounds the whole request.
    """
    deadline = _ACTIVE_DEADLINE[0]
    if deadline is not None:
        sock.settimeout(deadline.remaining())


class _DeadlineSocket(socket.socket):
    """A plain TCP socket whose every send and receive waits at most until the deadline."""

    def recv(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSocket, self).recv(*args, **kwargs)

    def recv_into(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSocket, self).recv_into(*args, **kwargs)

    def send(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSocket, self).send(*args, **kwargs)

    def sendall(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSocket, self).sendall(*args, **kwargs)


class _DeadlineSSLSocket(ssl.SSLSocket):
    """The TLS socket on top: the handshake, every read and every write wait at most until the deadline.

    (recv, recv_into and sendall go through read and send.)
    """

    def do_handshake(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSSLSocket, self).do_handshake(*args, **kwargs)

    def read(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSSLSocket, self).read(*args, **kwargs)

    def send(self, *args, **kwargs):
        _arm(self)
        return super(_DeadlineSSLSocket, self).send(*args, **kwargs)


def _target_matches(target, wanted):
    try:
        return (str(target[0]).lower().strip('[]'), int(target[1])) == wanted
    except (TypeError, ValueError, IndexError):
        return False


@contextmanager
def connect_to(host, port, address):
    """Send TCP connections for ``host:port`` to ``address`` (``(addr, port)``) instead.

    ``ansible.module_utils.urls`` offers no hook for the TCP connect, so, like its own
    ``unix_socket_patch_httpconnection_connect``, this patches for the duration of one request:
    ``http.client`` picks ``socket.create_connection`` when it builds a connection, and only the
    URL's own host and port are redirected. The URL, the Host header, TLS SNI and the
    certificate check are untouched.
    """
    original = socket.create_connection
    wanted = (host.lower(), int(port))

    def create_connection(target, *args, **kwargs):
        if _target_matches(target, wanted):
            target = address
        return original(target, *args, **kwargs)

    socket.create_connection = create_connection
    try:
        yield
    finally:
        socket.create_connection = original


@contextmanager
def request_deadline(seconds):
    """Bound everything one request does on the network by one deadline of ``seconds``.

    Connecting (to every address tried, and to each redirect), the TLS handshake, sending,
    and reading the status line, headers and body all share it. Patched for the duration of
    the request, like :func:`connect_to`: every TCP socket ``http.client`` creates, and every
    TLS socket ``ssl`` wraps around it, re-arms its timeout to what is left before each wait.
    Name resolution shares it too: a host name is resolved first (:func:`resolve_within`),
    then its addresses are tried in order, as ``socket.create_connection`` does.
    """
    deadline = Deadline(seconds)
    original_create = socket.create_connection
    original_tls_class = ssl.SSLContext.sslsocket_class

    def connect(target, timeout, *args, **kwargs):
        if _is_ip_literal(target[0]):
            return original_create(target, timeout, *args, **kwargs)
        last_error = None
        for info in resolve_within(target[0], target[1], deadline):
            try:
                return original_create(info[4][:2], min(timeout, deadline.remaining()), *args, **kwargs)
            except OSError as exc:
                last_error = exc
        raise last_error or socket.gaierror('no address for %s' % target[0])

    def create_connection(target, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, *args, **kwargs):
        left = deadline.remaining()
        if timeout is socket._GLOBAL_DEFAULT_TIMEOUT or timeout is None or timeout > left:
            timeout = left
        sock = connect(target, timeout, *args, **kwargs)
        bounded = _DeadlineSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())
        bounded.settimeout(timeout)
        return bounded

    _ACTIVE_DEADLINE[0] = deadline
    socket.create_connection = create_connection
    ssl.SSLContext.sslsocket_class = _DeadlineSSLSocket
    try:
        yield deadline
    finally:
        ssl.SSLContext.sslsocket_class = original_tls_class
        socket.create_connection = original_create
        _ACTIVE_DEADLINE[0] = None


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


# Building a TLS context reads the CA store (tens of milliseconds); build it once for all
# requests when this ansible-core's Request accepts a ready-made one.
try:
    _REQUEST_TAKES_CONTEXT = make_context is not None and 'context' in inspect.signature(Request.open).parameters
except (TypeError, ValueError):
    _REQUEST_TAKES_CONTEXT = False


def build_tls_context(validate_certs=True, ca_path=None):
    """A TLS context shared by every request, or None to let Request build one per request."""
    if not _REQUEST_TAKES_CONTEXT:
        return None
    return make_context(cafile=ca_path, validate_certs=validate_certs)


def send_request(url, method='GET', headers=None, data=None, status_codes=(200,), body_regex=None,
                 timeout=5.0, max_body_bytes=DEFAULT_MAX_BODY_BYTES, connect_address=None,
                 validate_certs=True, ca_path=None, follow_redirects='none', use_proxy=True,
                 tls_context=None):
    """Send one request and return its result entry (see :func:`request_result`).

    Never raises for network or protocol problems: they are the entry's ``error``.
    ``timeout`` bounds the whole request, from connecting to the last byte read;
    ``connect_address`` (``(addr, port)``) sends the TCP connection for the URL's host and
    port there, keeping the URL's host in the Host header, the TLS SNI and the certificate
    check; proxies are then never used.
    """
    target = parse_url(url)
    # A new Request per request: a fresh cookie jar, so no stickiness cookie pins the balancer.
    options = dict(
        headers=dict(headers or {}),
        use_proxy=use_proxy and connect_address is None,
        timeout=timeout,
        validate_certs=validate_certs,
        follow_redirects=follow_redirects,
        http_agent=HTTP_AGENT,
        ca_path=ca_path,
    )
    if tls_context is not None:
        options['context'] = tls_context
    request = Request(**options)
    started = time.monotonic()
    response = None
    try:
        with request_deadline(timeout):
            if connect_address is not None:
                redirect = connect_to(target.host, target.port, connect_address)
            else:
                redirect = _no_redirect()
            with redirect:
                try:
                    response = request.open(method, target.url, data=data)
                except urllib.error.HTTPError as e:
                    response = e
                status, text, truncated = read_response(response, max_body_bytes)
    except Exception as e:  # every network or protocol problem is a per-request result
        return request_result(time.monotonic() - started, error=describe_error(e))
    finally:
        if response is not None:
            try:
                response.close()
            except Exception:
                pass
    return request_result(time.monotonic() - started, status=status, text=text,
                          status_codes=status_codes, body_regex=body_regex, body_truncated=truncated)


@contextmanager
def _no_redirect():
    yield
