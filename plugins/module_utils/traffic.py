# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live-traffic error gate: did real users' requests to a backend fail?

HAProxy counts every response it sends for a backend in the backend row of
`show stat <backend> 2 -1`. What the counters do was measured on HAProxy 2.6.12
and 3.0.11 (one request per connection through a frontend, `retries 3`):

=====================================  ======  ========  =====================================
what the server did                    client  hrsp_5xx  other counters of the backend row
=====================================  ======  ========  =====================================
answered 200                           200     -         hrsp_2xx +1
answered 500 / 503                     500     +1        -
closed the connection without reply    502     +1        eresp +1 (3.0: +2)
reset the connection (RST) unanswered  502     +1        eresp +2
no answer within `timeout server`      504     +1        eresp +1
refused the connection (after retries) 503     +1        econ +1, wretr +3
every server DOWN ("no server")        503     +1        econ +1
refused, then redispatched and served  200     -         hrsp_2xx +1, wredis +1 (no econ)
sent 200 headers, then reset the body  200     -         hrsp_2xx +1, eresp +1, srv_abrt +1
sent 500 headers, then reset the body  500     +1        eresp +1, srv_abrt +1
100 Continue, then 200                 200     -         hrsp_2xx +1 (the 100 is not counted)
=====================================  ======  ========  =====================================

So HAProxy's own 502/503/504 for a connection or response error are already
in hrsp_5xx: adding eresp or econ would count those requests twice (a reset
even counts twice in eresp alone). The one failure hrsp_5xx misses is a
response cut off after its status was sent, which srv_abrt counts. Hence:

    failed   = min(requests, delta(hrsp_5xx) + delta(srv_abrt))
    requests = delta(hrsp_1xx + hrsp_2xx + hrsp_3xx + hrsp_4xx + hrsp_5xx + hrsp_other)
    rate     = 100 * failed / requests

A 5xx whose body is also cut off counts twice (it errs towards failing), and
the cap keeps the rate at most 100%. eresp and econ are reported to explain
the failures, not added. Counters that go down were reset (a reload starts a
new worker at 0): that read counts from 0 again instead of going negative.

Only real users' requests are judged. The caller's own requests to the
backend (the release engine's smoke requests) go through the same listener
and land in the same counters, so they are subtracted exactly, by status
class, and never guessed from timestamps:
- requests the caller sent before this call (`own_requests`, status code ->
  count) were all answered before the first read, and after the baseline;
- requests sent during the window (`smoke`) are sent by :func:`watch` itself,
  one round at a time, each answered before the next read. HAProxy counts a
  response in hrsp_Nxx when it processes the response headers, before it
  forwards them, so a request whose answer the client holds is in the next
  read, and no smoke request is ever in flight while the counters are read.
A smoke request that got no answer (a timeout, a reset) cannot be placed; it
fails the smoke anyway, and is reported as unanswered, not subtracted.

The verdict is `passed`, `failed` (at least `min_requests` real requests and
the rate above the limit), `insufficient` (fewer real requests than
`min_requests`: nothing to judge; the caller says whether that fails) or
`baseline` (the call only read the counters: no baseline and no duration).

Everything here is pure except :func:`read_counters`; :func:`watch` only
calls the read, clock and sleep functions it is given, so the unit tests
feed captured replies and a fake clock.
"""

from __future__ import annotations

import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (
    BackendNotFoundError,
    IncompleteReplyError,
    format_seconds,
    is_transient,
    list_backends,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    BACKEND_COUNTER_FIELDS,
    backend_counters,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    CommandError,
    RuntimeAPIError,
)

RESPONSE_FIELDS = ("hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other")
# Reported in `errors`; only hrsp_5xx and srv_abrt are added up (see the module docstring).
ERROR_FIELDS = ("hrsp_5xx", "srv_abrt", "eresp", "econ")
# Counters a baseline must carry for the gate to work out its deltas.
REQUIRED_FIELDS = RESPONSE_FIELDS + ("srv_abrt", "eresp", "econ")
# Not a counter: when the counters were read (epoch seconds), so a later call can tell the window.
READ_AT = "read_at"


class TrafficOptionError(ValueError):
    """An option of the traffic gate has a value that cannot work; nothing was sent."""


class NotHTTPBackendError(RuntimeAPIError):
    """The backend has no HTTP response counters (it is in TCP mode)."""


VERDICTS = ("passed", "failed", "insufficient", "baseline")
INSUFFICIENT_TRAFFIC = ("fail", "pass")


def response_field(status):
    """The `show stat` counter HAProxy adds a response with this status code to."""
    if isinstance(status, int) and not isinstance(status, bool) and 100 <= status <= 599:
        return "hrsp_%dxx" % (status // 100)
    return "hrsp_other"


def own_counters(own_requests):
    """`own_requests` as given ({status code: count}) -> {hrsp_* counter: count}; TrafficOptionError if malformed."""
    if own_requests is None:
        return {}
    if not isinstance(own_requests, dict):
        raise TrafficOptionError("own_requests must be a dict of status code -> count, got %s"
                                 % type(own_requests).__name__)
    counters = {}
    for status, count in own_requests.items():
        try:
            code = int(str(status))
        except ValueError:
            raise TrafficOptionError("own_requests keys are HTTP status codes, got %r" % str(status)[:80])
        if isinstance(count, bool):
            count = None
        try:
            count = int(count)
        except (TypeError, ValueError):
            raise TrafficOptionError("own_requests[%s] must be a whole number, got %r" % (code, str(count)[:80]))
        if count < 0:
            raise TrafficOptionError("own_requests[%s] cannot be negative, got %d" % (code, count))
        field = response_field(code)
        counters[field] = counters.get(field, 0) + count
    return counters


def traffic_gate_argument_spec():
    """How a watch window judges real users' requests: haproxy_backend_traffic and release_step
    (steps switch and canary), documented in the traffic_gate doc fragment."""
    return dict(
        max_error_rate=dict(type="float", default=1.0),
        min_requests=dict(type="int", default=20),
        insufficient_traffic=dict(type="str", choices=list(INSUFFICIENT_TRAFFIC), default="fail"),
    )


def validate_options(duration, interval, max_error_rate, min_requests, baseline, insufficient_traffic="fail",
                     smoke_interval=1.0):
    if insufficient_traffic not in INSUFFICIENT_TRAFFIC:
        raise TrafficOptionError("insufficient_traffic must be fail or pass, got %r" % str(insufficient_traffic)[:80])
    if smoke_interval is None or smoke_interval <= 0:
        raise TrafficOptionError("smoke_interval must be a positive number of seconds, got %r" % smoke_interval)
    if duration is None or duration < 0:
        raise TrafficOptionError("duration must be 0 (one look) or a positive number of seconds, got %r" % duration)
    if interval is None or interval <= 0:
        raise TrafficOptionError("interval must be a positive number of seconds, got %r" % interval)
    if max_error_rate is None or not 0 <= max_error_rate <= 100:
        raise TrafficOptionError("max_error_rate is a percentage from 0 to 100, got %r" % max_error_rate)
    if min_requests is None or min_requests < 1:
        raise TrafficOptionError("min_requests must be at least 1, got %r" % min_requests)
    if baseline is not None:
        normalize_baseline(baseline)


def normalize_baseline(baseline):
    """A baseline as given (the `counters` of an earlier call) -> {counter: int}, plus read_at if known."""
    if not isinstance(baseline, dict):
        raise TrafficOptionError("baseline must be the counters dict an earlier call returned, got %s"
                                 % type(baseline).__name__)
    missing = [name for name in REQUIRED_FIELDS if name not in baseline]
    if missing:
        raise TrafficOptionError("baseline lacks %s: pass the `counters` an earlier haproxy_backend_traffic "
                                 "call returned" % ", ".join(missing))
    counters = {}
    for name, value in baseline.items():
        if name == READ_AT:
            try:
                counters[READ_AT] = float(value)
            except (TypeError, ValueError):
                raise TrafficOptionError("baseline read_at must be epoch seconds, got %r" % str(value)[:80])
            continue
        if name not in BACKEND_COUNTER_FIELDS:
            continue
        if value is None and name not in REQUIRED_FIELDS:
            counters[name] = None
            continue
        try:
            counters[name] = int(value)
        except (TypeError, ValueError):
            raise TrafficOptionError("baseline %s must be a whole number, got %r" % (name, str(value)[:80]))
        if counters[name] < 0:
            raise TrafficOptionError("baseline %s cannot be negative, got %d" % (name, counters[name]))
    return counters


def counters_from_reply(reply, backend):
    """`show stat <backend> 2 -1` reply -> counters; NotHTTPBackendError for a TCP backend."""
    counters = backend_counters(reply, backend)
    if counters is None:
        return None
    missing = [name for name in REQUIRED_FIELDS if counters.get(name) is None]
    if missing:
        raise NotHTTPBackendError(
            "backend '%s' has no HTTP response counters (%s empty): the traffic gate needs a backend in "
            "mode http" % (backend, ", ".join(missing)))
    return counters


def check_backend(client, backend, retry_for=5.0, clock=time.monotonic, sleep=time.sleep):
    """BackendNotFoundError unless HAProxy has loaded `backend` (asked once, before watching).

    Transient socket errors (a reload) are retried for up to `retry_for` seconds.
    """
    until = clock() + retry_for
    while True:
        try:
            backends = list_backends(client)
            break
        except RuntimeAPIError as exc:
            if not is_transient(exc) or clock() >= until:
                raise
            sleep(0.2)
    if backend not in backends:
        raise BackendNotFoundError(backend, backends)


def read_counters(client, backend, clock=time.time):
    """The backend row's counters now, with READ_AT."""
    try:
        reply = client.run("show stat", backend, "2", "-1")
    except CommandError as exc:
        if "No such proxy" in (exc.reply or ""):
            raise BackendNotFoundError(backend, [])
        raise
    counters = counters_from_reply(reply, backend)
    if counters is None:
        # An empty reply is what a worker that is stopping gives (a reload): worth another try.
        raise IncompleteReplyError("HAProxy's answer to 'show stat %s 2 -1' had no backend row for it%s"
                                   % (backend, "" if reply.strip() else " (empty reply)"))
    counters[READ_AT] = round(clock(), 3)
    return counters


class Window(object):
    """Sums counter deltas read after read, so a reset in between (a reload) never goes negative."""

    def __init__(self, baseline):
        self.baseline = baseline
        self.last = baseline
        self.totals = dict((name, 0) for name in BACKEND_COUNTER_FIELDS)
        self.resets = 0

    def add(self, counters):
        reset = any(None not in (counters.get(name), self.last.get(name)) and counters[name] < self.last[name]
                    for name in REQUIRED_FIELDS)
        if reset:
            self.resets += 1
        for name in BACKEND_COUNTER_FIELDS:
            now, before = counters.get(name), self.last.get(name)
            if now is None:
                continue
            # After a reset the new worker counted from 0: what it shows is the delta.
            self.totals[name] += now if (reset or before is None) else now - before
        self.last = counters


def judge(totals, max_error_rate, min_requests, own=None):
    """The verdict over summed deltas, the caller's own requests (`own`, {hrsp_* counter: count}) taken out.

    Returns requests, errors, failed_requests, error_rate, judged, passed and verdict.
    """
    own = own or {}
    real = dict((name, max(0, totals[name] - own.get(name, 0))) for name in RESPONSE_FIELDS)
    requests = sum(real.values())
    failed = min(requests, real["hrsp_5xx"] + totals["srv_abrt"])
    rate = round(100.0 * failed / requests, 3) if requests else 0.0
    judged = requests >= min_requests
    errors = dict((name, totals[name]) for name in ERROR_FIELDS)
    errors["hrsp_5xx"] = real["hrsp_5xx"]
    verdict = "insufficient" if not judged else ("passed" if rate <= max_error_rate else "failed")
    return dict(
        requests=requests,
        errors=errors,
        failed_requests=failed,
        error_rate=rate,
        judged=judged,
        passed=verdict != "failed",
        verdict=verdict,
    )


def _percent(value):
    text = ("%.2f" % value).rstrip("0").rstrip(".")
    return (text or "0") + "%"


def _plural(count, noun):
    return "%d %s%s" % (count, noun, "" if count == 1 else "s")


def describe(backend, result, max_error_rate, min_requests):
    """One line saying what was counted and what it means.

    "backend_green: 7.5% of 200 real requests failed (hrsp_5xx 12, srv_abrt 3; eresp 3, econ 0) in 12s;
    the limit is 1%"
    """
    if result["verdict"] == "baseline":
        return "%s: counters read as a baseline; nothing judged" % backend
    errors = result["errors"]
    counts = "hrsp_5xx %d, srv_abrt %d; eresp %d, econ %d" % (
        errors["hrsp_5xx"], errors["srv_abrt"], errors["eresp"], errors["econ"])
    window = format_seconds(result["window"])
    own = sum((result.get("own_requests") or {}).values())
    own_text = " (%s of the caller's own not counted)" % _plural(own, "request") if own else ""
    if result["verdict"] == "insufficient":
        return ("%s: insufficient traffic to judge: %s in %s%s, fewer than min_requests %d (%d failed: %s)"
                % (backend, _plural(result["requests"], "real request"), window, own_text, min_requests,
                   result["failed_requests"], counts))
    return ("%s: %s of %s failed (%s) in %s%s; the limit is %s"
            % (backend, _percent(result["error_rate"]), _plural(result["requests"], "real request"), counts, window,
               own_text, _percent(max_error_rate)))


def smoke_report(rounds, targets):
    """What the smoke requests sent during the window gave, http_smoke's counts and one message per URL.

    `rounds` is a list of rounds, each one request result (smoke.send_request) per target, in the
    order of `targets`, a list of (url, resolve text or None).
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import build_message, summarize

    every = [entry for batch in rounds for entry in batch]
    passed_count = sum(1 for entry in every if entry["matched"])
    messages = []
    for index, (url, resolve_text) in enumerate(targets):
        results = [batch[index] for batch in rounds if len(batch) > index]
        if results:
            messages.append(build_message(url, results, resolve_text))
    return dict(
        passed=passed_count == len(every),
        passed_count=passed_count,
        failed_count=len(every) - passed_count,
        requests=len(every),
        unanswered=sum(1 for entry in every if entry.get("status") is None),
        summary=summarize(every),
        msg="; ".join(messages) if messages else "no smoke request was sent",
    )


def watch(read, backend, baseline=None, duration=0.0, interval=1.0, max_error_rate=1.0, min_requests=20,
          retry_for=5.0, clock=time.monotonic, sleep=time.sleep, own=None, smoke=None, smoke_interval=1.0,
          insufficient_traffic="fail"):
    """Read the backend's counters for `duration` seconds and judge the error rate of the deltas.

    `read()` returns counters (read_counters). Without `baseline` the first
    read is the baseline. Reads every `interval` seconds and stops early as
    soon as enough requests were counted and the rate is above the limit.
    A read that fails with a transient socket error (a reload) is skipped;
    the last read is retried for up to `retry_for` seconds. Returns the
    result dict the module reports, with `passed`, `verdict` and `msg`.

    `own` ({hrsp_* counter: count}) are the caller's requests answered after
    the baseline and before this call. `smoke()`, when given, sends one round
    of the caller's smoke requests and returns their results; a round is sent
    every `smoke_interval` seconds, always between two reads and never after
    the last one, so each of them is in the next read and subtracted exactly
    (see the module docstring). A failed smoke request ends the watch at the
    next read. The rounds are in the result's `_smoke_rounds`.

    `passed` is false for the verdict `failed`, and for `insufficient` unless
    `insufficient_traffic` is "pass".
    """
    started = clock()
    deadline = started + duration
    missed = []
    own = dict(own or {})
    own_unanswered = 0
    rounds = []
    next_round = started
    only_baseline = baseline is None and duration == 0

    def read_retrying(until):
        while True:
            try:
                return read()
            except RuntimeAPIError as exc:
                if not is_transient(exc) or clock() >= until:
                    raise
                missed.append(str(exc))
                sleep(min(interval, 0.5, max(0.0, until - clock())) or 0.05)

    if baseline is None:
        baseline = read_retrying(started + retry_for)
        reads = 1
    else:
        reads = 0
    window = Window(baseline)
    latest = baseline
    verdict = judge(window.totals, max_error_rate, min_requests, own)
    smoke_failed = False
    while True:
        now = clock()
        if reads and now >= deadline:
            break
        if reads:
            sleep(min(interval, max(0.0, deadline - now)))
        last = clock() >= deadline
        if smoke is not None and not last and clock() >= next_round:
            batch = smoke()
            rounds.append(batch)
            next_round += smoke_interval
            for entry in batch:
                if entry.get("status") is None:
                    own_unanswered += 1
                else:
                    field = response_field(entry["status"])
                    own[field] = own.get(field, 0) + 1
                smoke_failed = smoke_failed or not entry["matched"]
        try:
            latest = read_retrying(clock() + retry_for if (last or smoke_failed) else clock())
        except RuntimeAPIError as exc:
            if last or smoke_failed or not is_transient(exc):
                raise
            missed.append(str(exc))
            reads += 1
            continue
        reads += 1
        window.add(latest)
        verdict = judge(window.totals, max_error_rate, min_requests, own)
        if not verdict["passed"] or smoke_failed:
            break  # enough requests and too many failed, or a smoke request failed: no need to watch longer
        if last:
            break

    elapsed = round(max(0.0, clock() - started), 3)
    span = elapsed
    if baseline.get(READ_AT) is not None and latest.get(READ_AT) is not None:
        span = max(0.0, latest[READ_AT] - baseline[READ_AT])
    if only_baseline:
        verdict = dict(verdict, verdict="baseline")
    passed = verdict["verdict"] in ("passed", "baseline") or (
        verdict["verdict"] == "insufficient" and insufficient_traffic == "pass")
    result = dict(
        backend=backend,
        counters=latest,
        baseline=baseline,
        requests=verdict["requests"],
        errors=verdict["errors"],
        failed_requests=verdict["failed_requests"],
        error_rate=verdict["error_rate"],
        judged=verdict["judged"],
        passed=passed,
        verdict=verdict["verdict"],
        own_requests=dict((name, count) for name, count in sorted(own.items()) if count),
        own_unanswered=own_unanswered,
        elapsed=elapsed,
        window=round(span, 3),
        reads=reads,
        counter_resets=window.resets,
        missed_reads=len(missed),
        last_missed_read_error=missed[-1] if missed else None,
        max_error_rate=max_error_rate,
        min_requests=min_requests,
        insufficient_traffic=insufficient_traffic,
    )
    result["msg"] = describe(backend, result, max_error_rate, min_requests)
    result["_smoke_rounds"] = rounds
    return result


def smoke_sender(items):
    """One round of the smoke requests (a function), and each item's (url, resolve text); options checked first.

    The smoke module (and its HTTP client) is imported only when there are smoke requests.
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke

    prepared, targets = [], []
    for index, item in enumerate(items):
        try:
            target = smoke.parse_url(item["url"], smoke.ENGINE_SCHEMES)
            connect_address, resolve_text = (smoke.resolve_address(item["resolve"], target)
                                             if item.get("resolve") else (None, None))
            options = dict(
                headers=smoke.validate_headers(item.get("headers") or {}),
                status_codes=smoke.validate_status_codes(item.get("status_code")),
                body_regex=smoke.compile_body_regex(item.get("body_regex")),
                timeout=smoke.validate_timeout(item.get("timeout") if item.get("timeout") is not None else 5.0),
                connect_address=connect_address,
                validate_certs=item.get("validate_certs") is not False,
            )
            if target.scheme == "tcp":  # one tcp attempt (smoke.send_request): `send`, then the body regex
                from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import tcp_send

                options["tcp_send"] = tcp_send(item.get("send"))
            else:
                options["tls_context"] = smoke.build_tls_context(options["validate_certs"])
        except smoke.SmokeOptionError as exc:
            raise TrafficOptionError("smoke[%d]: %s" % (index, exc))
        prepared.append((target.url, options))
        targets.append((target.url, resolve_text))

    def send_round():
        return [smoke.send_request(url, **options) for url, options in prepared]

    return send_round, targets


def watch_backend(client, backend, baseline=None, duration=0.0, interval=1.0, max_error_rate=1.0, min_requests=20,
                  retry_for=5.0, own=None, smoke=None, smoke_interval=1.0, insufficient_traffic="fail"):
    """haproxy_backend_traffic's run: the backend must exist, then the watch; returns its result.

    `smoke` is smoke_sender's (send_round, targets) or None. A failed smoke request fails the
    result (`passed` false) whatever the counters say. Raises RuntimeAPIError.
    """
    send_round, smoke_targets = smoke if smoke is not None else (None, [])
    check_backend(client, backend, retry_for=retry_for)
    result = watch(lambda: read_counters(client, backend), backend, baseline=baseline, duration=duration,
                   interval=interval, max_error_rate=max_error_rate, min_requests=min_requests, retry_for=retry_for,
                   own=own, smoke=send_round, smoke_interval=smoke_interval, insufficient_traffic=insufficient_traffic)
    rounds = result.pop("_smoke_rounds")
    result["smoke"] = smoke_report(rounds, smoke_targets) if send_round is not None else None
    if result["smoke"] is not None and not result["smoke"]["passed"]:
        result["passed"] = False
        result["msg"] = "smoke requests during the window failed: %s; %s" % (result["smoke"]["msg"], result["msg"])
    return result
