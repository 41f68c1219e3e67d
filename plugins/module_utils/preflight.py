# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Preflight of a backend: the smoke request straight to each of its servers, before any traffic.

HAProxy itself says where the servers are (`show servers state <backend>`: srv_addr,
srv_port, srv_use_ssl); each server gets the public URL's request on its own address, with
the public host in the Host header and, for TLS servers, in the SNI. So a server that is
healthy by its checks but serves the wrong thing is named before any user reaches it.

:func:`query_servers` is the one function that asks HAProxy and :func:`preflight` the one
that sends HTTP (through smoke.send_request, given as `send`); everything else is pure, so
unit tests feed captured replies and a fake sender.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import BackendNotFoundError
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    parse_backend_list,
    parse_servers_state,
    server_from_state_row,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIError,
    first_line,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import (
    ENGINE_SCHEMES,
    SmokeOptionError,
    format_address,
    mask_url,
    parse_url,
    send_request,
)

# The facts reported for each server, in this order (documented in RETURN).
SERVER_FIELDS = ("name", "address", "port", "ssl", "status", "passed", "reason", "skipped")

SKIPPED_MAINT = "in maintenance (MAINT): HAProxy sends it no traffic"
SKIPPED_BY_USER = "listed in skip_servers"
# How many characters of a name list an error message quotes before it cuts.
_QUOTE_LIMIT = 80


class PreflightOptionError(SmokeOptionError):
    """An option of the preflight cannot work; nothing was sent."""


class PreflightError(RuntimeAPIError):
    """HAProxy's answer does not let the preflight run (e.g. an unexpected reply)."""


def _short(text, limit=_QUOTE_LIMIT):
    return text if len(text) <= limit else text[:limit] + "..."


def validate_skip_servers(skip_servers):
    names = []
    for name in skip_servers or []:
        if not isinstance(name, str) or not name.strip():
            raise PreflightOptionError("skip_servers must list server names, got %r" % (_short(repr(name)),))
        if name not in names:
            names.append(name)
    return names


def query_servers(client, backend):
    """`backend`'s servers (dicts from parsers.server_from_state_row), in HAProxy's order.

    Existence is checked with `show backend` first, so an unknown backend is an error that
    lists the backends HAProxy has (`show servers state` only says `Can't find backend.`).
    """
    backends = parse_backend_list(client.run("show backend"))
    if backend not in backends:
        raise BackendNotFoundError(backend, backends)
    reply = client.run("show servers state", backend)
    if not any(line.startswith("# be_id") for line in reply.split("\n")):
        if reply.startswith("Can't find backend"):
            raise BackendNotFoundError(backend, backends)
        raise PreflightError("HAProxy answered 'show servers state %s' with %r, not a server list"
                             % (backend, _short(first_line(reply))))
    return [server_from_state_row(row) for row in parse_servers_state(reply) if row.get("be_name") == backend]


def plan(servers, skip_servers, backend="the backend"):
    """One entry per server: what to check, or why it is skipped.

    Refuses skip_servers names the backend does not have: a typo there must not pass
    unnoticed.
    """
    names = [server["name"] for server in servers]
    unknown = [name for name in skip_servers if name not in names]
    if unknown:
        raise PreflightOptionError(
            "skip_servers names %s that backend '%s' does not have; its servers: %s"
            % (_short(", ".join(unknown)), backend, _short(", ".join(names)) or "(none)"))
    entries = []
    for server in servers:
        entry = dict(name=server["name"], address=server["address"], port=server["port"], ssl=server["ssl"],
                     status=None, passed=None, reason=None, skipped=False)
        if server["name"] in skip_servers:
            entry.update(skipped=True, reason=SKIPPED_BY_USER)
        elif server["maintenance"]:
            entry.update(skipped=True, reason=SKIPPED_MAINT)
        entries.append(entry)
    return entries


def server_url(target, use_ssl):
    """The public URL with the scheme the server speaks: the netloc (so the Host header) stays.

    A tcp:// URL stays as it is: the attempt speaks whatever `send` says (a TLS server is not
    spoken to in TLS; list it in skip_servers).
    """
    if target.scheme == "tcp":
        return target.url
    parts = urlsplit(target.url)
    return urlunsplit(parts._replace(scheme="https" if use_ssl else "http"))


def describe(entry):
    """`green2 127.0.0.1:8082` (how messages name a server)."""
    if entry["address"] and entry["port"]:
        return "%s %s" % (entry["name"], format_address(entry["address"], entry["port"]))
    return entry["name"]


def unreachable_reason(entry, fqdn=None):
    """Why a server cannot be sent a request at all, or None."""
    if not entry["address"]:
        return "no address yet (%s is not resolved); list it in skip_servers or wait for DNS" % (fqdn or "its name")
    if not entry["port"]:
        return ("no port of its own (HAProxy connects to the client's destination port); "
                "give it a port or list it in skip_servers")
    return None


def judge_entry(entry, result):
    """Copy a smoke request result into the server entry; name what the wrong body said."""
    entry["status"] = result["status"]
    entry["passed"] = bool(result["matched"])
    reason = result["reason"]
    # A wrong HTTP body, or what a tcp server answered without a match (no status there).
    wrong_answer = reason.startswith("body did not match") if reason else False
    unmatched_tcp = bool(reason) and result["status"] is None and "without a match of" in reason
    if reason and result["error"] is None and (wrong_answer or unmatched_tcp):
        got = result.get("_body_key")
        reason = "%s (got %s)" % (reason, repr(got) if got else "an empty body")
    entry["reason"] = None if entry["passed"] else reason
    return entry


def preflight(servers, url, skip_servers=(), headers=None, status_codes=(200,), body_regex=None,
              request_timeout=5.0, validate_certs=False, max_body_bytes=None, backend="the backend",
              send=None, tls_context=None, tcp_send=None):
    """Check each server of `servers`; returns the module's result (without `msg`).

    `tls_context` (optional) is shared by every TLS request, so the CA store is read once.
    A tcp://HOST:PORT `url` (the release engine's `mode tcp` services) is a tcp attempt to each
    server's address instead (connect, `tcp_send`, read until `body_regex` matches).
    """
    send = send or send_request
    target = parse_url(url, ENGINE_SCHEMES)
    entries = plan(servers, skip_servers, backend)
    by_name = dict((server["name"], server) for server in servers)
    options = dict(headers=headers or {}, status_codes=status_codes, body_regex=body_regex,
                   timeout=request_timeout, validate_certs=validate_certs, follow_redirects="none",
                   use_proxy=False)
    if max_body_bytes is not None:
        options["max_body_bytes"] = max_body_bytes
    if tls_context is not None:
        options["tls_context"] = tls_context
    if target.scheme == "tcp":
        options["tcp_send"] = tcp_send
    for entry in entries:
        if entry["skipped"]:
            continue
        problem = unreachable_reason(entry, by_name[entry["name"]].get("fqdn"))
        if problem:
            entry.update(passed=False, reason=problem)
            continue
        # The URL keeps the public host (Host header, SNI); only the TCP connection goes to the server.
        result = send(server_url(target, entry["ssl"]), connect_address=(entry["address"], entry["port"]),
                      **options)
        judge_entry(entry, result)
    return summarize(entries)


def summarize(entries):
    checked = [entry for entry in entries if not entry["skipped"]]
    failed = [entry["name"] for entry in checked if not entry["passed"]]
    return dict(
        servers=[dict((field, entry[field]) for field in SERVER_FIELDS) for entry in entries],
        failed_servers=failed,
        skipped_servers=[entry["name"] for entry in entries if entry["skipped"]],
        passed_count=len(checked) - len(failed),
        failed_count=len(failed),
    )


def message(backend, url, result):
    """One line for the task: which servers are wrong and why, or that all answered."""
    servers = result["servers"]
    checked = [entry for entry in servers if not entry["skipped"]]
    skipped = [entry for entry in servers if entry["skipped"]]
    target = mask_url(url)
    skipped_text = ""
    if skipped:
        skipped_text = "; skipped: %s" % ", ".join(
            "%s (%s)" % (entry["name"], "MAINT" if entry["reason"] == SKIPPED_MAINT else "skip_servers")
            for entry in skipped)
    if not servers:
        return "backend '%s' has no servers: there is nothing the preflight could prove" % backend
    if not checked:
        return ("backend '%s': no server was checked, so nothing is proven%s"
                % (backend, skipped_text))
    failed = [entry for entry in checked if not entry["passed"]]
    if failed:
        return "backend '%s': %d of %d servers failed the preflight of %s: %s%s" % (
            backend, len(failed), len(checked), target,
            "; ".join("%s: %s" % (describe(entry), entry["reason"]) for entry in failed), skipped_text)
    return "backend '%s': all %d servers answered %s as expected%s" % (
        backend, len(checked), target, skipped_text)


def failed(result):
    """The preflight fails when any checked server failed, or when none was checked."""
    return bool(result["failed_servers"]) or result["passed_count"] == 0
