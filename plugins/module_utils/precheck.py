# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A release's PRECHECK on one node, every service of the run in one module run.

First the socket: a Runtime API socket below `level admin` (`show cli level`) is refused
(failed_stage "socket"), since the switch that follows changes maps through it. Then three
stages, in the order of the release checklist, each for every service before the next one
starts, so the first stage with a failure ends the precheck:

1. health: the target backend exists and (unless forced) enough of its servers are UP with
   passing checks, waiting up to `health_wait` seconds (health.wait_for_health);
2. preflight: every server of the target answers the smoke request directly
   (preflight.preflight);
3. current: the live path answers through this node's own listener (smoke.run_smoke).

A service whose `url` is tcp://HOST:PORT (a `mode tcp` service) is smoke-tested by a tcp
attempt in stages 2 and 3 (smoke.send_request dispatches it: connect, `send`, read until the
body regex matches); its status codes and headers do not apply.

Each stage's result for a service is what the single-purpose module returns
(haproxy_backend_health, haproxy_backend_preflight, http_smoke), and its failure message is
that module's message, so a release reads the same whether it ran three modules or this one.
`run_precheck` is the only function that talks to HAProxy or HTTP, through the client and
the `send` it is given.
"""

from __future__ import annotations

import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (
    HealthOptionError,
    failure_message,
    parse_min_healthy,
    query_backend_servers,
    validate_wait,
    wait_for_health,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.preflight import (
    failed as preflight_failed,
    message as preflight_message,
    preflight,
    query_servers,
    validate_skip_servers,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIError, SocketLevelError
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import (
    ENGINE_SCHEMES,
    SmokeOptionError,
    compile_body_regex,
    parse_url,
    resolve_address,
    run_smoke,
    send_request,
    validate_headers,
    validate_status_codes,
    validate_timeout,
)

STAGES = ("health", "preflight", "current")
# What the release does through the socket after the precheck, for the level message.
SWITCH_PURPOSE = "the release's switch (set map, prepare/commit map)"


class PrecheckOptionError(ValueError):
    """An option of the precheck (or of one service) that cannot work; nothing was asked."""


def prepare_services(services):
    """Check every service before anything is asked; return them with parsed, compiled values.

    Raises PrecheckOptionError naming the service (its key) and what is wrong.
    """
    if not services:
        raise PrecheckOptionError("services must list at least one service to check")
    prepared, seen = [], set()
    for index, service in enumerate(services):
        key = service.get("key")
        label = "service %r" % key if key else "service #%d" % (index + 1)
        try:
            if not key:
                raise SmokeOptionError("key must name the map key of the service")
            if key in seen:
                raise SmokeOptionError("is listed twice")
            seen.add(key)
            backend = service.get("backend")
            if not backend or not backend.strip():
                raise SmokeOptionError("backend must name the target backend, got %r" % (backend,))
            target = parse_url(service["url"], ENGINE_SCHEMES)
            resolve_to, resolve_text = resolve_address(service["resolve"], target) if service.get("resolve") \
                else (None, None)
            # A tcp:// service sends `send` (proved here: tcp_probe's escapes); http ignores it.
            tcp = dict(tcp_send=tcp_send(service.get("send"))) if target.scheme == "tcp" else {}
            prepared.append(dict(
                key=key, backend=backend, url=target.url, resolve_to=resolve_to, resolve_text=resolve_text, tcp=tcp,
                min_healthy=parse_min_healthy(service.get("min_healthy")),
                headers=validate_headers(service.get("headers") or {}),
                status_codes=validate_status_codes(service.get("status_code") or [200]),
                body_regex=compile_body_regex(service.get("body_regex")),
                current_body_regex=compile_body_regex(service.get("current_body_regex")),
                preflight=bool(service.get("preflight", True)), current=bool(service.get("current", True)),
            ))
        except (SmokeOptionError, HealthOptionError) as exc:
            raise PrecheckOptionError("%s: %s" % (label, exc))
    return prepared


def tcp_send(text):
    """A tcp service's `send` (None or empty: nothing is sent), its escapes proved; SmokeOptionError otherwise."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.tcp_probe import parse_send

    if text in (None, ""):
        return None
    parse_send(text)
    return text


def precheck_argument_spec():
    """The precheck's options shared by every service of a run (release_precheck, and release_step's
    step prepare), documented in the precheck doc fragment; validate_options checks them."""
    return dict(
        health_wait=dict(type="float", default=0),
        poll_interval=dict(type="float", default=1.0),
        allow_no_check=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        requests=dict(type="int", default=1),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=True),
        preflight_validate_certs=dict(type="bool", default=False),
        skip_servers=dict(type="list", elements="str", default=[]),
    )


def validate_options(health_wait, poll_interval, requests, request_timeout, skip_servers):
    """The options shared by every service; returns skip_servers cleaned. PrecheckOptionError otherwise."""
    try:
        validate_wait(health_wait, poll_interval)
        if requests < 1:
            raise SmokeOptionError("requests must be at least 1, got %d" % requests)
        validate_timeout(request_timeout, "request_timeout")
        return validate_skip_servers(skip_servers)
    except (SmokeOptionError, HealthOptionError) as exc:
        raise PrecheckOptionError(str(exc))


def _health(client, service, options):
    wait = 0 if options["force"] else options["health_wait"]
    try:
        result = wait_for_health(lambda: query_backend_servers(client, service["backend"]), service["backend"],
                                 service["min_healthy"], allow_no_check=options["allow_no_check"],
                                 wait_timeout=wait, poll_interval=options["poll_interval"],
                                 clock=options["clock"], sleep=options["sleep"])
    except (HealthOptionError, RuntimeAPIError) as exc:
        # The target must exist whatever force says: an unknown backend fails here too.
        return dict(backend=service["backend"], failed=True, msg=str(exc))
    if not result["healthy"] and not options["force"]:
        return dict(result, failed=True, msg=failure_message(result, result["waited"] if wait else None))
    return dict(result, failed=False)


def _preflight(client, service, options):
    try:
        servers = query_servers(client, service["backend"])
        result = preflight(servers, service["url"], skip_servers=options["skip_servers"], headers=service["headers"],
                           status_codes=service["status_codes"], body_regex=service["body_regex"],
                           request_timeout=options["request_timeout"],
                           validate_certs=options["preflight_validate_certs"], backend=service["backend"],
                           send=options["send"], tls_context=options["preflight_tls_context"], **service["tcp"])
    except (SmokeOptionError, RuntimeAPIError) as exc:
        return dict(backend=service["backend"], failed=True, msg=str(exc))
    return dict(result, failed=preflight_failed(result),
                msg=preflight_message(service["backend"], service["url"], result))


def _current(client, service, options):
    result = run_smoke(service["url"], requests=options["requests"], resolve_text=service["resolve_text"],
                       send=options["send"], headers=service["headers"], status_codes=service["status_codes"],
                       body_regex=service["current_body_regex"], timeout=options["request_timeout"],
                       connect_address=service["resolve_to"], validate_certs=options["validate_certs"],
                       follow_redirects="none", use_proxy=True, tls_context=options["tls_context"], **service["tcp"])
    return dict(result, failed=not result["passed"])


_CHECKS = dict(health=_health, preflight=_preflight, current=_current)


def run_precheck(client, services, health_wait=0.0, poll_interval=1.0, allow_no_check=False, force=False,
                 requests=1, request_timeout=5.0, validate_certs=True, preflight_validate_certs=False,
                 skip_servers=(), tls_context=None, preflight_tls_context=None, send=None, clock=None, sleep=None):
    """Run the stages over `services` (prepare_services' output); return the module's result.

    The result has `services` (per service: key, backend and each stage's result, None when
    the stage did not run), `failed`, `failed_stage` and `msg`: the failing stage's message
    of each failed service, prefixed with its key when the run has several services.
    """
    options = dict(health_wait=health_wait, poll_interval=poll_interval, allow_no_check=allow_no_check,
                   force=force, requests=requests, request_timeout=request_timeout, validate_certs=validate_certs,
                   preflight_validate_certs=preflight_validate_certs, skip_servers=list(skip_servers),
                   tls_context=tls_context, preflight_tls_context=preflight_tls_context,
                   send=send or send_request, clock=clock or time.monotonic, sleep=sleep or time.sleep)
    reports = [dict(key=service["key"], backend=service["backend"], health=None, preflight=None, current=None)
               for service in services]
    try:
        client.require_level("admin", SWITCH_PURPOSE)
    except SocketLevelError as exc:
        return dict(services=reports, failed=True, failed_stage="socket", msg=str(exc))
    except RuntimeAPIError:
        pass  # an unreachable socket: the health stage says so, with its own message
    for stage in STAGES:
        failures = []
        for service, report in zip(services, reports):
            if stage != "health" and not service[stage]:
                continue
            report[stage] = _CHECKS[stage](client, service, options)
            if report[stage]["failed"]:
                failures.append((service["key"], report[stage]["msg"]))
        if failures:
            return dict(services=reports, failed=True, failed_stage=stage, msg="; ".join(
                "%s: %s" % (key, text) if len(services) > 1 else text for key, text in failures))
    checked = ", ".join("%s -> %s" % (service["key"], service["backend"]) for service in services)
    return dict(services=reports, failed=False, failed_stage=None,
                msg="precheck passed for %s: target healthy%s%s" % (
                    checked,
                    ", preflight passed" if any(report["preflight"] for report in reports) else "",
                    ", the current path answers" if any(report["current"] for report in reports) else ""))
