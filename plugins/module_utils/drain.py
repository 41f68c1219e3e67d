# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drain the previous backend after a switch: wait until its servers hold no session, then
optionally close what remains.

A map switch moves every NEW request at once, but a session that is already open (a streaming
response, a long poll, a websocket, a `mode tcp` connection) stays on the server it was sent to
until it ends. HAProxy counts those in the `scur` column of each server row of `show stat`.

`shutdown sessions server <backend>/<server>` (Runtime API, admin level) closes every session of
one server at once. What it does was measured on HAProxy 2.6.12 and 3.0.11
(tests/unit/fixtures/haproxy-*/drain/): it answers an empty line, the client's connection is
closed before the end of its response (a chunked HTTP stream without its last chunk, a TCP
connection closed), `scur` drops to 0 right after, and the server stays UP and keeps taking new
sessions. A server without sessions answers the same empty line. Errors: `No such server.`,
`No such backend.`, `Require 'backend/server'.`, and `Permission denied` on an operator-level
socket (nothing is closed).

Sessions are counted per HAProxy worker: after a reload, sessions that the old worker still
carries are not in the new worker's `show stat`, so they are neither counted nor closed here
(`hard-stop-after` bounds them).

Everything is pure except :func:`read_sessions` and :func:`shutdown_sessions`, the two
functions that speak to HAProxy; :func:`drain` (one backend) and :func:`drain_backends` (the
previous backends of a multi-service release, in one wait) only call the client, clock and sleep
they are given, so the unit tests feed captured replies and a fake clock.
"""

from __future__ import annotations

import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (
    TransientWaitError,
    format_seconds,
    is_transient,
    query_backend_servers,
    servers_from_stat_reply,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIError

# After `shutdown sessions server`, how long to wait for `scur` to show the sessions gone
# (measured: at the next read, well under 0.1 s; a loaded machine may take longer).
SHUTDOWN_SETTLE_SECONDS = 2.0
SHUTDOWN_SETTLE_INTERVAL = 0.05


class DrainOptionError(ValueError):
    """An option of the drain has a value that cannot work; nothing was sent."""


def validate_options(backend, timeout, interval):
    """DrainOptionError naming the option and the fix; nothing is sent before this passes."""
    if not isinstance(backend, str) or not backend.strip():
        raise DrainOptionError("backend must name the backend to drain (the previous version), got %r"
                               % (backend,))
    if "/" in backend:
        raise DrainOptionError("backend must be a backend name without a server, got %r" % backend)
    if timeout is None or isinstance(timeout, bool) or timeout < 0:
        raise DrainOptionError("the drain timeout must be 0 (one look) or a positive number of seconds, got %r"
                               % (timeout,))
    if interval is None or isinstance(interval, bool) or interval <= 0:
        raise DrainOptionError("the drain poll interval must be a positive number of seconds, got %r"
                               % (interval,))


def sessions_from_servers(servers):
    """Server dicts (parsers.server_from_stat_row) -> {server name: scur}; an empty cell counts 0."""
    return dict((server["name"], server["current_sessions"] or 0) for server in servers)


def sessions_from_stat_reply(reply, backend):
    """`show stat <backend> 4 -1` reply -> {server name: scur} of that backend's servers."""
    return sessions_from_servers(servers_from_stat_reply(reply, backend))


def read_sessions(client, backend):
    """{server: scur} now; BackendNotFoundError (listing the backends) for an unknown backend."""
    return sessions_from_servers(query_backend_servers(client, backend))


def shutdown_sessions(client, backend, server):
    """Close every session of one server; CommandError for any reply but the empty line."""
    client.run("shutdown sessions server", "%s/%s" % (backend, server), expect_empty=True)


def servers_holding(sessions):
    """Names of the servers with sessions, sorted."""
    return sorted(name for name, count in sessions.items() if count > 0)


def _look(read, backends, started, deadline, interval, clock, sleep, stop):
    """Read every backend until stop(sessions) or the deadline; transient errors (a reload) are
    retried like a look that did not satisfy stop. Returns ({backend: {server: scur}}, attempts,
    transient failures)."""
    attempts = failures = 0
    while True:
        attempts += 1
        try:
            sessions = dict((backend, read(backend)) for backend in backends)
            error = None
        except RuntimeAPIError as exc:
            if not is_transient(exc):
                raise
            failures += 1
            sessions, error = None, exc
        now = clock()
        if sessions is not None and (stop(sessions) or now >= deadline):
            return sessions, attempts, failures
        if now >= deadline:
            raise TransientWaitError(", ".join(backends), now - started, attempts, failures, error)
        sleep(max(0.0, min(interval, deadline - now)))


def drain(client, backend, timeout, interval=0.5, shutdown=False, check_mode=False,
          clock=time.monotonic, sleep=time.sleep, read=None):
    """Wait until `backend`'s servers hold no session or `timeout` seconds passed; then, with
    `shutdown`, close the sessions left (`shutdown sessions server`, one per server holding some)
    and read again.

    timeout 0 looks once. In check mode nothing is closed: `would_shut_down` counts what would be.
    `read(backend)` (default read_sessions on `client`) returns {server: scur}. Returns the report:
      backend, servers ({name: scur} at the last read), sessions_left (after the wait and the
      shutdown), shut_down (sessions the shutdown closed: the drop of their servers' scur),
      would_shut_down, shutdown_servers (the servers a shutdown was (or would be) sent to),
      waited (seconds from the first read to the end of the wait), drained (sessions_left == 0),
      attempts, transient_errors.
    Raises DrainOptionError, BackendNotFoundError, TransientWaitError, CommandError (a refused
    shutdown, e.g. `Permission denied` on an operator socket) or another RuntimeAPIError.
    """
    return drain_backends(client, [backend], timeout, interval, shutdown, check_mode, clock, sleep, read)[0]


def drain_backends(client, backends, timeout, interval=0.5, shutdown=False, check_mode=False,
                   clock=time.monotonic, sleep=time.sleep, read=None):
    """drain() for several backends (the previous backends of a multi-service release) in ONE
    wait: every look reads them all, the wait ends when none holds a session or `timeout`
    passed, then the shutdown closes what each one holds. Returns one report per backend, in
    the order given, each as drain() returns it (`waited`, `attempts` and `transient_errors`
    are the shared wait's). A backend named twice is drained once."""
    if not isinstance(backends, (list, tuple)) or not backends:
        raise DrainOptionError("backends must be a non-empty list of backend names, got %r" % (backends,))
    backends = list(dict.fromkeys(backends))
    for backend in backends:
        validate_options(backend, timeout, interval)
    if read is None:
        def read(backend):
            return read_sessions(client, backend)

    def none_held(found):
        return not any(servers_holding(servers) for servers in found.values())

    started = clock()
    sessions, attempts, failures = _look(read, backends, started, started + timeout, interval, clock, sleep, none_held)
    waited = round(clock() - started, 3)
    holding = dict((backend, servers_holding(sessions[backend])) for backend in backends)
    reports = [dict(backend=backend, servers=sessions[backend], sessions_left=sum(sessions[backend].values()),
                    shut_down=0, would_shut_down=0, shutdown_servers=holding[backend] if shutdown else [],
                    waited=waited)
               for backend in backends]
    if shutdown and any(holding.values()):
        if check_mode:
            for report in reports:
                report["would_shut_down"] = report["sessions_left"]
        else:
            for backend in backends:
                for name in holding[backend]:
                    shutdown_sessions(client, backend, name)
            settled = clock()
            after, more_attempts, more_failures = _look(
                read, backends, settled, settled + SHUTDOWN_SETTLE_SECONDS, SHUTDOWN_SETTLE_INTERVAL, clock, sleep,
                lambda found: not any(found[backend].get(name, 0) for backend in backends for name in holding[backend]))
            attempts += more_attempts
            failures += more_failures
            for report in reports:
                backend = report["backend"]
                report.update(
                    servers=after[backend],
                    sessions_left=sum(after[backend].values()),
                    shut_down=sum(max(0, sessions[backend][name] - after[backend].get(name, 0))
                                  for name in holding[backend]),
                )
    for report in reports:
        report.update(drained=report["sessions_left"] == 0, attempts=attempts, transient_errors=failures)
    return reports


def _sessions(count):
    return "%d session%s" % (count, "" if count == 1 else "s")


def describe(result, check_mode=False):
    """One line for the report.

    "backend_blue holds no session (waited 0.2s)"
    "backend_blue: closed 1 session (blue1) after 10s; it holds no session now"
    "backend_blue: 1 session left after 10s (blue1 1)"
    """
    backend = result["backend"]
    waited = format_seconds(result["waited"])
    left = result["sessions_left"]
    where = ", ".join("%s %d" % (name, count) for name, count in sorted(result["servers"].items()) if count)
    if check_mode and result["would_shut_down"]:
        return ("%s: would close %s (%s) after %s (check mode: nothing closed)"
                % (backend, _sessions(result["would_shut_down"]), where, waited))
    if result["shut_down"]:
        closed = "%s: closed %s (%s) after %s" % (backend, _sessions(result["shut_down"]),
                                                  ", ".join(result["shutdown_servers"]), waited)
        if left:
            return "%s; %s still open (%s)" % (closed, _sessions(left), where)
        return "%s; it holds no session now" % closed
    if left:
        return "%s: %s left after %s (%s)" % (backend, _sessions(left), waited, where)
    return "%s holds no session (waited %s)" % (backend, waited)
