# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Pure helpers for the http_smoke module.

Everything here is free of network I/O so it can be unit tested: option
validation (URL, resolve address, status codes, method, headers), turning an
exception into a short per-request error text, judging one response, and
building the summary and the one-line message of a smoke run.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import socket
import ssl
import urllib.error
from urllib.parse import urlsplit, urlunsplit

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


def request_result(elapsed, status=None, text=None, error=None, status_codes=(200,), body_regex=None):
    """The per-request entry of ``results``.

    Either ``error`` (no usable response) or ``status`` and ``text`` (a response) is given.
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
