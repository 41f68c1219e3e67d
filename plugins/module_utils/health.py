# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backend health gate: is a backend healthy enough to receive traffic?

Everything here is pure (options in, verdict out) except
:func:`query_backend_servers`, the one function that asks HAProxy, and
:func:`wait_for_health`, which only calls the `look` and clock functions it is
given. So the unit tests feed real captured `show stat` replies and a fake
clock, and the module stays a thin wrapper.
"""

from __future__ import annotations

import re
import socket
import time
from fractions import Fraction

from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    parse_backend_list,
    parse_show_stat,
    server_from_stat_row,
    server_health,
    server_rows,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    CommandError,
    ConnectionRefusedAPIError,
    RuntimeAPIError,
    RuntimeAPITimeoutError,
    SocketNotFoundError,
)

# The facts reported for each server, in this order (documented in RETURN).
SERVER_FIELDS = (
    "name", "status", "healthy", "reason", "check_status", "check_code",
    "check_description", "weight", "current_sessions", "address",
)

_COUNT = re.compile(r"^\s*\+?(\d+)\s*$")
_PERCENT = re.compile(r"^\s*\+?(\d+(?:\.\d+)?|\.\d+)\s*%\s*$")


# What a socket does while HAProxy reloads: the stats socket is re-created by
# the new worker (missing, refused), the old worker closes connections
# (reset, broken pipe) or answers late (timeout).
_TRANSIENT_OS_ERRORS = (ConnectionResetError, ConnectionAbortedError, BrokenPipeError, ConnectionRefusedError,
                        FileNotFoundError, TimeoutError, socket.timeout)


class IncompleteReplyError(RuntimeAPIError):
    """HAProxy closed the connection without the answer a command always has (a worker stopping)."""


def is_transient(exc):
    """Whether a Runtime API error can pass by itself, as during a reload (socket missing, refused,
    reset, timed out, answer cut short). Permission and address errors, unknown backends and
    refused commands are not: waiting would not change them."""
    if isinstance(exc, (SocketNotFoundError, ConnectionRefusedAPIError, RuntimeAPITimeoutError,
                        IncompleteReplyError)):
        return True
    if isinstance(exc, (CommandError, HealthOptionError)):
        return False
    cause = exc.__cause__ or exc.__context__
    return isinstance(cause, _TRANSIENT_OS_ERRORS)


class TransientWaitError(RuntimeAPIError):
    """The wait ended while the Runtime API kept failing (a reload that did not finish in time)."""

    def __init__(self, backend, waited, attempts, failures, last_error):
        self.backend = backend
        self.waited = waited
        self.attempts = attempts
        self.failures = failures
        self.last_error = last_error
        super(TransientWaitError, self).__init__(
            "could not read the servers of %s: the Runtime API failed %d of %d looks in %s and the last look "
            "failed too (is HAProxy reloading or down? raise wait_timeout to wait longer); the last error: %s"
            % (backend, failures, attempts, format_seconds(waited), last_error)
        )


class HealthOptionError(ValueError):
    """An option of the health gate has a value that cannot work; nothing was sent."""


class BackendNotFoundError(RuntimeAPIError):
    """The backend is not one HAProxy has loaded."""

    def __init__(self, backend, existing):
        self.backend = backend
        self.existing = list(existing)
        super(BackendNotFoundError, self).__init__(
            "backend '%s' does not exist in HAProxy; backends: %s"
            % (backend, ", ".join(self.existing) if self.existing else "(none)")
        )


class MinHealthy(object):
    """A parsed `min_healthy`: every server (None), a count, or a percentage."""

    def __init__(self, count=None, percent=None):
        self.count = count
        self.percent = percent

    @property
    def is_all(self):
        return self.count is None and self.percent is None

    def describe(self):
        if self.count is not None:
            return str(self.count)
        if self.percent is not None:
            return "%s%%" % _format_number(self.percent)
        return "all"

    def resolve(self, total, backend="the backend"):
        """Number of healthy servers required out of `total`; at least 1.

        A count larger than the backend's size can never be met: that is a
        mistake in the options, so it raises instead of waiting it out.
        """
        if self.count is not None:
            if total and self.count > total:
                raise HealthOptionError(
                    "min_healthy is %d but %s has only %d server%s"
                    % (self.count, backend, total, "" if total == 1 else "s")
                )
            return self.count
        if self.percent is not None:
            # Round up: 50% of 3 servers needs 2. Fraction keeps 33.3% exact.
            required = -(-(total * self.percent) // 100)
            return max(1, int(required))
        return max(1, total)

    def __eq__(self, other):
        return isinstance(other, MinHealthy) and (self.count, self.percent) == (other.count, other.percent)

    def __repr__(self):
        return "MinHealthy(%s)" % self.describe()


def _format_number(value):
    """2 -> '2', 2.5 -> '2.5', Fraction(333, 10) -> '33.3'."""
    text = ("%.3f" % float(value)).rstrip("0").rstrip(".")
    return text or "0"


def parse_min_healthy(value):
    """`min_healthy` as given by the user -> MinHealthy; HealthOptionError when invalid.

    Accepts None (every server), a positive integer (2, "2") or a percentage
    in (0, 100] ("50%", "33.3%").
    """
    if value is None:
        return MinHealthy()
    if isinstance(value, bool):
        raise HealthOptionError(
            "min_healthy must be a number of servers (like 2) or a percentage (like '50%%'), not %r" % value
        )
    if isinstance(value, float):
        if not value.is_integer():
            raise HealthOptionError(
                "min_healthy must be a whole number of servers or a percentage like '50%%', not %r" % value
            )
        value = int(value)
    if isinstance(value, int):
        count = value
    else:
        text = str(value)
        count_match = _COUNT.match(text)
        percent_match = _PERCENT.match(text)
        if count_match:
            count = int(count_match.group(1))
        elif percent_match:
            percent = Fraction(percent_match.group(1))
            if not 0 < percent <= 100:
                raise HealthOptionError(
                    "min_healthy %r is out of range: a percentage must be above 0%% and at most 100%%" % text
                )
            return MinHealthy(percent=percent)
        else:
            raise HealthOptionError(
                "min_healthy %r is not valid: give a number of servers (like 2) or a percentage (like '50%%')"
                % text
            )
    if count < 1:
        raise HealthOptionError("min_healthy must be at least 1, got %r" % value)
    return MinHealthy(count=count)


def validate_wait(wait_timeout, poll_interval):
    """Refuse a negative wait or a poll interval that is not positive."""
    if wait_timeout is None or wait_timeout < 0:
        raise HealthOptionError("wait_timeout must be 0 (look once) or a positive number of seconds, got %r"
                                % wait_timeout)
    if poll_interval is None or poll_interval <= 0:
        raise HealthOptionError("poll_interval must be a positive number of seconds, got %r" % poll_interval)


def servers_from_stat_reply(reply, backend):
    """`show stat <backend> 4 -1` reply -> server dicts (parsers.server_from_stat_row) of that backend."""
    return [server_from_stat_row(row) for row in server_rows(parse_show_stat(reply), backend)]


def evaluate(backend, servers, min_healthy, allow_no_check=False):
    """Verdict over one look at a backend's servers.

    `servers` are dicts from parsers.server_from_stat_row(); `min_healthy` a
    MinHealthy. Returns the result fields the module reports (without
    waited/attempts). A backend with no servers is never healthy.
    """
    reported = []
    unhealthy = []
    for server in servers:
        healthy, reason = server_health(server, allow_no_check)
        entry = dict((name, server.get(name)) for name in SERVER_FIELDS)
        entry["healthy"] = healthy
        entry["reason"] = reason
        reported.append(entry)
        if not healthy:
            unhealthy.append(entry)
    total = len(reported)
    required = min_healthy.resolve(total, backend)
    healthy_count = total - len(unhealthy)
    return dict(
        backend=backend,
        healthy=total > 0 and healthy_count >= required,
        total=total,
        healthy_count=healthy_count,
        unhealthy_count=len(unhealthy),
        required=required,
        servers=reported,
        unhealthy_servers=[entry["name"] for entry in unhealthy],
    )


def describe_server(server):
    """'green2 (DOWN, L7STS/503)', 'green1 (MAINT)', 'green1 (UP 1/2, L4CON)'."""
    details = [server["status"] or "no status"]
    if server.get("check_status"):
        check = server["check_status"]
        if server.get("check_code") is not None:
            check += "/%s" % server["check_code"]
        details.append(check)
    return "%s (%s)" % (server["name"], ", ".join(details))


def format_seconds(seconds):
    return "%ss" % _format_number(round(seconds, 1))


def failure_message(result, waited=None):
    """Why the gate failed, naming every unhealthy server and its status.

    "backend_green is not healthy after 10s: 1 of 2 servers healthy, 2 required: green2 (DOWN, L7STS/503)"
    """
    head = "%s is not healthy" % result["backend"]
    if waited:
        head += " after %s" % format_seconds(waited)
    if not result["total"]:
        return "%s: it has no servers" % head
    text = "%s: %d of %d servers healthy, %d required" % (
        head, result["healthy_count"], result["total"], result["required"])
    names = [describe_server(server) for server in result["servers"] if not server["healthy"]]
    if names:
        text += ": " + ", ".join(names)
    return text


def list_backends(client):
    """`show backend` -> names; IncompleteReplyError for an empty reply (never "no backends")."""
    reply = client.run("show backend")
    if not reply.strip():
        raise IncompleteReplyError("HAProxy closed the Runtime API connection without answering 'show backend' "
                                   "(a worker stopping during a reload?)")
    return parse_backend_list(reply)


def query_backend_servers(client, backend):
    """Ask HAProxy for `backend`'s servers (server dicts); BackendNotFoundError if it has no such backend.

    `show stat` takes any proxy name and answers `No such proxy.` only for
    names that do not exist at all, so existence is checked with `show
    backend`, which also gives the list the error message shows.
    """
    backends = list_backends(client)
    if backend not in backends:
        raise BackendNotFoundError(backend, backends)
    try:
        reply = client.run("show stat", backend, "4", "-1")
    except CommandError as exc:
        if "No such proxy" in (exc.reply or ""):
            raise BackendNotFoundError(backend, backends)
        raise
    return servers_from_stat_reply(reply, backend)


def wait_for_health(look, backend, min_healthy, allow_no_check=False, wait_timeout=0.0,
                    poll_interval=1.0, clock=time.monotonic, sleep=time.sleep):
    """Look at the backend until it is healthy or `wait_timeout` seconds have passed.

    `look()` returns the backend's server dicts. With wait_timeout 0 it looks
    exactly once; otherwise it looks at once, then every `poll_interval`
    seconds, and a last time when the time is up. A look that fails with a
    transient socket error (is_transient: HAProxy reloading) counts as a look
    and is retried the same way; when the time is up without a verdict,
    TransientWaitError names the last error. Returns the last verdict with
    `waited` (seconds), `attempts` and `transient_errors` (how many looks failed).
    """
    started = clock()
    deadline = started + wait_timeout
    attempts = 0
    result = None
    failures = []
    last_failed = False
    while True:
        attempts += 1
        try:
            result = evaluate(backend, look(), min_healthy, allow_no_check)
            last_failed = False
        except RuntimeAPIError as exc:
            if not is_transient(exc):
                raise
            failures.append(exc)
            last_failed = True
        else:
            if result["healthy"]:
                break
        remaining = deadline - clock()
        if remaining <= 0:
            break
        sleep(min(poll_interval, remaining))
    waited = round(max(0.0, clock() - started), 3)
    if last_failed:
        if attempts == 1:
            raise failures[-1]  # one look, no waiting: its own error says it best
        raise TransientWaitError(backend, waited, attempts, len(failures), failures[-1])
    result["waited"] = waited
    result["attempts"] = attempts
    result["transient_errors"] = len(failures)
    return result
