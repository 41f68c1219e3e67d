# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release engine's decisions, on the controller (private: not a public API).

The release role decides with these functions instead of long Jinja: which inputs are
wrong, which internal names an extra var tries to set, every node's verdict after a
phase, each node's outcome, the run's outcome and its message. The role reaches them
through the private filter `bluegreen.haproxy._release` (plugins/filter/_release.py),
which names the step: `value | bluegreen.haproxy._release('read_plan', ...)`. They
are pure functions of what the role hands them, unit tested in
tests/unit/plugins/plugin_utils/test_release_engine.py.
"""

from __future__ import annotations

import difflib
import re
import math
import multiprocessing
import os
import socket

from ansible.errors import AnsibleFilterError

# The rules PREPARE applies on the node are the controller's too: written once, in module_utils.
from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import (  # noqa: F401  pylint: disable=unused-import
    SmokeBodiesError,
    body_regex as _node_body_regex,
    default_body_regex,
    describe,
    key_refusal,
    lock_entries,
    precheck_services,
    read_plan,
    readback_errors,
    watch_errors,
    watch_items,
)


# Facts and registered results the engine used before its internal state moved to
# `_release_*`. Passed as extra vars they would override the engine's own verdicts
# (extra vars beat set_fact), so a run that sets one is refused.
OLD_INTERNAL_NAMES = frozenset((
    "release_failures", "release_fleet_failed", "release_fleet_reasons", "release_fleet_live",
    "release_switched", "release_rolled_back", "release_rollback", "release_persisted",
    "release_persist_result", "release_current", "release_live_before", "release_disk_before",
    "release_map_before", "release_drift_check", "release_current_check", "release_health",
    "release_smoke", "release_smoke_before", "release_watch", "release_smoke_counts", "release_verify",
    "release_verify_check", "release_final", "release_node_summary", "release_timings",
    "release_run_owner", "release_run_started", "release_disk_path", "release_lock_file",
    "release_lock_taken", "release_lock_result", "release_status_map",
    "release_status_health", "release_persist_live", "release_rollback_live", "release_gate_phase",
    "release_verify_phase", "release_verify_value", "release_smoke_phase", "release_smoke_backend",
    "release_smoke_watch", "release_persist_phase", "release_persist_value", "release_step",
))

INTERNAL_PREFIX = "_release_"
# The names the INIT guard looks at: inputs and the engine's internal state.
RELEASE_NAME = re.compile(r"^_?release_")
LEFT_THE_PLAY = "left the play (unreachable or an unexpected error)"
SHORT = 80


def short(value, limit=SHORT):
    """At most `limit` characters of a value, for messages."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def refused_names(names):
    """The names among `names` no input may set: `_release_*` and the engine's old internal names."""
    return sorted(set(str(name) for name in names
                      if str(name).startswith(INTERNAL_PREFIX) or str(name) in OLD_INTERNAL_NAMES))


# Names the playbooks publish as job artifacts (set_stats). An AWX workflow hands a job's
# artifacts to the next job as extra vars, so they are known names, not inputs: the engine reads
# none of them (release_summary, release_switch and release_status were internal names once, and
# refusing them refused every workflow job after a cutover or a status run).
PUBLISHED_NAMES = frozenset(("release_outcome", "release_fleet", "release_partial", "release_summary",
                             "release_switch", "release_status", "release_drain"))


def known_names(specs):
    """Every input name of the release role: the options of every entry point of its argument specs.

    `specs` is roles/release/meta/argument_specs.yml as parsed YAML (the whole file, or its
    `argument_specs` mapping).
    """
    specs = specs if isinstance(specs, dict) else {}
    entry_points = specs.get("argument_specs", specs)
    names = set(PUBLISHED_NAMES)
    for entry_point in (entry_points or {}).values():
        if isinstance(entry_point, dict) and isinstance(entry_point.get("options"), dict):
            names.update(entry_point["options"])
    return names


def unknown_names(names, specs):
    """The `release_*` names among `names` the role does not know, each with the closest known name.

    Returns [{name, suggestion}] sorted by name (suggestion None when nothing is close). Internal
    names (refused_names) are left to that check. A misspelled input would otherwise be ignored
    silently, e.g. release_watch_secnds=30 running with no watch window.
    """
    known = known_names(specs)
    refused = set(refused_names(names))
    unknown = []
    for name in sorted(set(str(name) for name in names)):
        if not name.startswith("release_") or name in known or name in refused:
            continue
        # Compared without the prefix every name shares, which would make any two names look alike.
        close = difflib.get_close_matches(name[len("release_"):], sorted(known_name[len("release_"):] for known_name in
                                                                         known - PUBLISHED_NAMES), n=1, cutoff=0.6)
        unknown.append(dict(name=name, suggestion="release_" + close[0] if close else None))
    return unknown


def unknown_names_message(unknown):
    """One message naming every unknown input and its closest known name ('' when there is none)."""
    if not unknown:
        return ""
    parts = ["%s (did you mean `%s`?)" % (short(item["name"]), item["suggestion"]) if item.get("suggestion")
             else "%s (no input has a similar name)" % short(item["name"]) for item in unknown]
    return ("refusing to run: unknown release input%s %s. The release role reads only the inputs listed in "
            "roles/release/meta/argument_specs.yml (README \"Inputs\"); a misspelled one would be silently "
            "ignored. Fix or remove %s. Nothing was read or changed."
            % ("" if len(unknown) == 1 else "s", ", ".join(parts), "it" if len(unknown) == 1 else "them"))


def internal_names_message(refused):
    """The refusal of a run that sets the engine's own state ('' when nothing is refused)."""
    if not refused:
        return ""
    return ("refusing to run: %s %s the release engine's internal state, not an input; remove %s from the extra "
            "vars and the inventory. Nothing was read or changed."
            % (", ".join(short(name, 60) for name in refused), "is" if len(refused) == 1 else "are",
               "it" if len(refused) == 1 else "them"))


def run_refusals(names, specs, fleet=None):
    """Why this run may not start at all, one message per cause (empty: it may start).

    Checked on every node before anything is read: a `_release_*` name set from outside (extra
    vars beat set_fact, so it could open a gate), a `release_*` name the role does not know (a
    misspelled input would be ignored), and for a cutover or rollback (`fleet`: {group_hosts,
    play_hosts, allow_partial, strategy}) a run on part of the release_hosts group and a fleet
    under Mitogen's strategy.
    """
    names = list(names or [])
    messages = [internal_names_message(refused_names(names)),
                unknown_names_message(unknown_names([name for name in names if str(name).startswith("release_")], specs))]
    if fleet is not None:
        messages.append(partial_fleet(fleet.get("group_hosts") or [], fleet.get("play_hosts") or [],
                                      bool(fleet.get("allow_partial")))["message"])
        messages.append(strategy_refusal(fleet.get("strategy"), fleet.get("play_hosts")))
    return [message for message in messages if message]


def fleet_refusals(hostvars, hosts, names, specs, fleet=None, current=None):
    """run_refusals for every node of the play in one pass (the INIT guard runs once for the fleet).

    `names` are the `release_*` and `_release_*` variable names the `current` host sees (query
    varnames): besides what its hostvars hold, the play's and the role's vars, which every node
    shares. Each node's own come from its hostvars (inventory, facts, extra vars). A name every
    node has is judged once, without a node's name; one only some nodes have is judged for each
    of them, prefixed by the node. The fleet's own refusals (part of the release_hosts group,
    Mitogen) follow.
    """
    hosts = list(hosts or [])
    seen = dict((host, set(_names(hostvars, host))) for host in hosts)
    shared = set(str(name) for name in names or []) - seen.get(current, set())
    for host in hosts:
        seen[host] |= shared
    common = set.intersection(*seen.values()) if seen else shared
    messages = run_refusals(sorted(common), specs)
    for host in hosts:
        messages += ["%s: %s" % (host, message) for message in run_refusals(sorted(seen[host] - common), specs)]
    return messages + (run_refusals([], specs, fleet) if fleet is not None else [])


def _names(hostvars, host):
    """The `release_*` and `_release_*` variable names of `host`'s hostvars (none when it has none)."""
    try:
        return [str(name) for name in hostvars[host] if RELEASE_NAME.match(str(name))]
    except (KeyError, TypeError):
        return []


def input_failures(inputs):
    """This node's INIT failure, as the list the node's record starts with: [] when every input is valid."""
    errors = input_errors(inputs)
    return ["INIT: invalid release inputs: " + "; ".join(errors)] if errors else []


def _host_list(hosts, most=20):
    """Host names for a message: the first `most`, shortened, then '...' when there are more."""
    more = ", ..." if len(hosts) > most else ""
    return ", ".join(short(host, 40) for host in hosts[:most]) + more


def partial_fleet(group_hosts, play_hosts, allowed=False):
    """Whether this run covers the whole release_hosts group: {partial, allowed, hosts_missing, message}.

    `group_hosts` is the inventory group (groups[release_hosts], which --limit does not shrink),
    `play_hosts` the hosts of this run (ansible_play_hosts_all, which --limit does shrink). A
    fleet moves all or nothing, so a run on part of it is refused unless `allowed`; allowed, the
    report says so first. `message` is the refusal ('' when the run may go on).
    """
    group = list(group_hosts or [])
    missing = [host for host in group if host not in set(play_hosts or [])]
    partial = bool(missing)
    allowed = bool(allowed)
    message = ""
    if partial and not allowed:
        message = ("refusing to run on part of the fleet: %d of the %d hosts of the release_hosts group are not in "
                   "this run (%s), by --limit or because they are unreachable; the fleet moves all or nothing. Run "
                   "on the whole group, or set release_allow_partial=true to move only these hosts (the report "
                   "then says so). Nothing was read or changed."
                   % (len(missing), len(group), _host_list(missing)))
    summary = ""
    if partial and allowed:
        summary = ("PARTIAL RUN (release_allow_partial): %d of the %d hosts of the release_hosts group were not "
                   "in this run (--limit, or unreachable at the start) and were not changed: %s"
                   % (len(missing), len(group), ", ".join(missing)))
    return dict(partial=partial, allowed=allowed, hosts_missing=missing, message=message, summary=summary)


def _number(errors, name, value, kind, minimum=None, above=None, maximum=None):
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError
        if isinstance(number, float) and math.isnan(number):
            raise ValueError
    except (TypeError, ValueError):
        errors.append("%s must be a%s number, got %s" % (name, "n integer" if kind is int else "", short(value)))
        return None
    if minimum is not None and number < minimum:
        errors.append("%s must be >= %s, got %s" % (name, minimum, short(value)))
    elif above is not None and number <= above:
        errors.append("%s must be > %s, got %s" % (name, above, short(value)))
    elif maximum is not None and number > maximum:
        errors.append("%s must be <= %s, got %s" % (name, maximum, short(value)))
    return number


# What one service of a release may set (release_services items); unset fields come from the
# single-key inputs (release_target, release_smoke_url, ...).
SERVICE_FIELDS = ("key", "target", "expected_current", "backends", "smoke_url", "smoke_resolve", "smoke_headers",
                  "smoke_status_codes", "smoke_bodies", "min_healthy", "smoke_send")


def services(given, defaults):
    """The run's services: each item of release_services with its unset fields from `defaults`.

    `defaults` holds the single-key inputs without their prefix, `map_key` for the key. No
    release_services: one service made of `defaults` alone, which is the single-key release.
    Items that are not dicts are kept as they are, for input_errors to name.
    """
    base = dict((name, defaults.get(name)) for name in SERVICE_FIELDS if name != "key")
    base["key"] = defaults.get("map_key")
    if given in (None, "", []):
        return [base]
    if not isinstance(given, list):
        return given
    result = []
    for item in given:
        if not isinstance(item, dict):
            result.append(item)
            continue
        service = dict(base)
        service.update((name, value) for name, value in item.items() if value is not None)
        # The single-key target and expected value belong to release_map_key, not to every service.
        for name in ("target", "expected_current"):
            service[name] = item.get(name) if item.get(name) is not None else ""
        result.append(service)
    return result


def _service_errors(errors, service, label, action):
    """The problems of one service; `label(field)` names a field in the messages."""
    backends = service.get("backends")
    if not isinstance(backends, list) or not backends or not all(isinstance(b, str) and b for b in backends):
        errors.append("%s must be a non-empty list of backend names, got %s" % (label("backends"), short(backends)))
        backends = []
    target = service.get("target")
    if not isinstance(target, str):
        errors.append("%s must be a backend name, got %s" % (label("target"), short(target)))
        target = ""
    elif not target and action == "cutover":
        errors.append("%s is empty: name the backend to make live, e.g. -e %s=backend_green"
                      % (label("target"), label("target")) if label("target") == "release_target" else
                      "%s is empty: name the backend to make live" % label("target"))
    if target and (target != target.strip() or any(c in target for c in " \t\r\n\0;#")):
        errors.append("%s %s is not a backend name (no blanks, ';' or '#')" % (label("target"), short(target)))

    # Imported here, not at the top: every task that uses any filter of this file imports the
    # file in its own worker process, and the smoke validators (with ansible's urls module)
    # would cost each of them about 0.1 s; only the input check needs them.
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import tcp_send
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import (
        ENGINE_SCHEMES,
        SmokeOptionError,
        compile_body_regex,
        parse_resolve,
        parse_url,
        validate_headers,
        validate_status_codes,
    )

    for field, check in (
        ("smoke_url", lambda: parse_url(service.get("smoke_url"), ENGINE_SCHEMES)),
        # tcp_probe's escapes, proved whatever the URL (an http service ignores it).
        ("smoke_send", lambda: tcp_send(service.get("smoke_send"))),
        ("smoke_resolve",
         lambda: service.get("smoke_resolve") in (None, "") or parse_resolve(service.get("smoke_resolve"))),
        ("smoke_status_codes", lambda: validate_status_codes(service.get("smoke_status_codes"))),
        ("smoke_headers", lambda: validate_headers(service.get("smoke_headers"))),
    ):
        try:
            if field == "smoke_status_codes" and not isinstance(service.get("smoke_status_codes"), list):
                raise SmokeOptionError("status codes must be a list, got %s" % short(service.get("smoke_status_codes")))
            if field == "smoke_headers" and not isinstance(service.get("smoke_headers") or {}, dict):
                raise SmokeOptionError("headers must be a dict, got %s" % short(service.get("smoke_headers")))
            if field == "smoke_send" and not isinstance(service.get("smoke_send"), (str, type(None))):
                raise SmokeOptionError("send must be a string, got %s" % short(service.get("smoke_send")))
            check()
        except SmokeOptionError as exc:
            errors.append("%s: %s" % (label(field), short(str(exc), 200)))

    bodies = service.get("smoke_bodies") or {}
    if not isinstance(bodies, dict):
        errors.append("%s must be a dict of backend -> regex, got %s" % (label("smoke_bodies"), short(bodies)))
        bodies = {}
    for backend in sorted(set(backends) | set(bodies) | ({target} if target else set())):
        try:
            compile_body_regex(body_regex(backend, bodies))
        except SmokeOptionError as exc:
            errors.append("%s[%s]: %s" % (label("smoke_bodies"), short(backend, 40), short(str(exc), 200)))


def _services_errors(errors, items, given):
    """Structure of release_services: a list of dicts, known fields, a key each, no key twice."""
    if given in (None, "", []):
        return True
    if not isinstance(given, list) or not isinstance(items, list):
        errors.append("release_services must be a list of services (dicts with key and target), got %s" % short(given))
        return False
    seen = set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append("release_services[%d] must be a dict with key and target, got %s" % (index, short(item)))
            continue
        unknown = sorted(set(given[index]) - set(SERVICE_FIELDS)) if isinstance(given[index], dict) else []
        if unknown:
            errors.append("release_services[%d] has unknown fields %s (known: %s)"
                          % (index, ", ".join(unknown), ", ".join(SERVICE_FIELDS)))
        key = item.get("key")
        if not isinstance(key, str) or not key or key != key.strip() or any(c in key for c in " \t\r\n\0#"):
            errors.append("release_services[%d].key must be a map key without blanks or '#', got %s"
                          % (index, short(key)))
        elif key in seen:
            errors.append("release_services: the key %s is listed twice" % short(key))
        seen.add(key)
    return not errors


def _strings(value, path=""):
    """(path, text) of every string inside `value` (nested lists and dicts; keys count too)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key, "%s key" % path)
            yield from _strings(item, "%s.%s" % (path, short(str(key), 40)))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _strings(item, "%s[%d]" % (path, index))


def _oversized_inputs(inputs):
    """Inputs no HAProxy command could carry: one message each, naming the input and its size only.

    HAProxy drops (or, on 2.6, may crash on) a command longer than tune.bufsize; the modules
    refuse anything over their command budget before connecting. Refusing here, at INIT, stops
    the run before any node is read, and the message never quotes the value.
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import COMMAND_BUDGET

    errors = []
    for name, value in sorted(inputs.items()):
        if name == "services":  # the normalized copy of given_services (or of the single-key inputs)
            continue
        label = "release_services" if name == "given_services" else "release_" + name
        for path, text in _strings(value):
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > COMMAND_BUDGET:
                errors.append("%s%s is %d bytes, more than the %d an HAProxy Runtime API command may carry "
                              "(tune.bufsize 16384 with the command around it); nothing was read or changed"
                              % (label, path, size, COMMAND_BUDGET))
    return errors


def input_errors(inputs):
    """Every problem with the run's inputs, as a list of messages (empty: all good).

    `inputs` holds the release_* variables without their prefix; `services` the normalized
    release_services (see services()) and `given_services` release_services as given. The
    smoke options are parsed and every body regex compiled with the same functions
    http_smoke uses on the node, so a typo is found before any node switches.
    """
    errors = _oversized_inputs(inputs)
    if errors:
        # Every later check would quote the value: a 100 KB input must not become the message.
        return errors
    action = inputs.get("action", "cutover")
    if inputs.get("persist") not in ("on_success", "manual"):
        errors.append("release_persist must be on_success or manual, got %s" % short(inputs.get("persist")))
    _number(errors, "release_smoke_requests", inputs.get("smoke_requests"), int, minimum=1)
    _number(errors, "release_smoke_timeout", inputs.get("smoke_timeout"), float, above=0)
    _number(errors, "release_watch_seconds", inputs.get("watch_seconds"), int, minimum=0)
    _number(errors, "release_watch_interval", inputs.get("watch_interval"), float, above=0)
    _number(errors, "release_health_wait", inputs.get("health_wait"), int, minimum=0)
    _number(errors, "release_max_error_rate", inputs.get("max_error_rate"), float, minimum=0, maximum=100)
    _number(errors, "release_min_requests", inputs.get("min_requests"), int, minimum=1)
    _number(errors, "release_clock_tolerance", inputs.get("clock_tolerance"), float, above=0)
    _number(errors, "release_switch_lead", inputs.get("switch_lead"), float, minimum=0, maximum=600)
    _number(errors, "release_drain_timeout", inputs.get("drain_timeout", 0), float, minimum=0, maximum=86400)
    if inputs.get("strategy", "bluegreen") not in ("bluegreen", "canary"):
        errors.append("release_strategy must be bluegreen or canary, got %s" % short(inputs.get("strategy")))
    elif inputs.get("strategy") == "canary":
        if action != "cutover":
            errors.append("release_strategy canary is for a cutover, not a %s" % action)
        steps = inputs.get("canary_steps")
        if isinstance(steps, list):
            # An AWX survey's multiselect answers a list of strings.
            steps = [int(step) if isinstance(step, str) and step.strip().isdigit() else step for step in steps]
        if not isinstance(steps, list) or not steps or any(isinstance(step, bool) or not isinstance(step, int)
                                                           for step in steps):
            errors.append("release_canary_steps must be a list of shares of users in %%, e.g. [5, 25, 50], got %s"
                          % short(steps))
        elif any(not 1 <= step <= 99 for step in steps) or steps != sorted(set(steps)):
            errors.append("release_canary_steps must rise from 1 to 99 %% (100 is the promotion), got %s" % short(steps))
        _number(errors, "release_canary_step_seconds", inputs.get("canary_step_seconds"), float, above=0, maximum=86400)
        if inputs.get("canary_smoke_header") not in (None, ""):
            from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import SmokeOptionError, validate_headers

            try:
                validate_headers({str(inputs["canary_smoke_header"]): "bucket"})
            except SmokeOptionError as exc:
                errors.append("release_canary_smoke_header: %s" % short(str(exc), 200))
    if inputs.get("test_listener") not in (None, ""):
        from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import SmokeOptionError, parse_resolve

        try:
            parse_resolve(inputs["test_listener"])
        except SmokeOptionError as exc:
            errors.append("release_test_listener: %s" % short(str(exc), 200))
    if "max_spread" in inputs:
        _number(errors, "release_max_spread", inputs.get("max_spread"), float, above=0)
    if "spread_action" in inputs and inputs.get("spread_action") not in ("rollback", "warn"):
        errors.append("release_spread_action must be rollback or warn, got %s" % short(inputs.get("spread_action")))
    skip = inputs.get("preflight_skip_servers", [])
    if not isinstance(skip, list) or not all(isinstance(name, str) for name in skip):
        errors.append("release_preflight_skip_servers must be a list of server names, got %s" % short(skip))

    given = inputs.get("given_services")
    items = inputs.get("services")
    if items is None:
        items = services(given, dict(inputs, map_key=inputs.get("map_key", "active")))
    if not _services_errors(errors, items, given):
        return errors
    if given in (None, "", []):
        _service_errors(errors, items[0], lambda field: "release_" + field, action)
    else:
        for item in items:
            _service_errors(errors, item, lambda field, key=item["key"]: "release_services[%s].%s" % (key, field),
                            action)
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import is_tcp

    tcp = [item for item in items if is_tcp(item.get("smoke_url"))]
    try:
        watching = float(inputs.get("watch_seconds") or 0) > 0
    except (TypeError, ValueError):
        watching = False  # named above
    if tcp and watching:
        errors.append("release_watch_seconds is %s but %s smoke-tested over tcp:// (a mode tcp service): the watch "
                      "window judges HTTP response counters (hrsp_*), which a mode tcp backend does not have; set "
                      "release_watch_seconds=0 (the smoke test after the switch still runs on every node)"
                      % (short(inputs.get("watch_seconds")), "release_smoke_url is" if given in (None, "", [])
                         else "release_services %s are" % ", ".join(short(item["key"], 40) for item in tcp)))
    if tcp and inputs.get("strategy") == "canary":
        errors.append("release_strategy is canary but %s smoke-tested over tcp:// (a mode tcp service): each canary "
                      "step is judged by HTTP response counters (hrsp_*), which a mode tcp backend does not have; "
                      "release a mode tcp service with release_strategy=bluegreen"
                      % ("release_smoke_url is" if given in (None, "", [])
                         else "release_services %s are" % ", ".join(short(item["key"], 40) for item in tcp)))
    return errors


def report_keys(services_list, multi, map_key):
    """What the report is keyed by: `map_key` for a single-key release, else the services' keys."""
    if not multi:
        return map_key
    return [item["key"] for item in services_list or [] if isinstance(item, dict) and isinstance(item.get("key"), str)]


def precheck_errors(plan, fleet_lives, map_name, allow_drift=False):
    """Why this node may not switch, per key (empty: it may). `fleet_lives` is every node's live values.

    The node's own refusals (release_steps.key_refusal, which PREPARE applies on the node), then
    the fleet's: the nodes must agree on the live value unless release_expected_current names it.
    """
    errors = []
    recovered = plan.get("recovery_previous") or {}
    for key in plan.get("targets") or {}:
        values = sorted(set(str((lives or {}).get(key, "")) for lives in fleet_lives or []))
        refusal = key_refusal(plan, key, map_name, allow_drift)
        if refusal:
            errors.append(refusal)
        elif len(values) > 1 and not plan.get("expected_current_set", {}).get(key) and key not in recovered:
            errors.append("nodes disagree on the live backend of %s (%s); set release_expected_current"
                          % (key, ", ".join(values)) if len(plan["targets"]) > 1 else
                          "nodes disagree on the live backend (%s); set release_expected_current" % ", ".join(values))
    return errors


def body_regex(backend, bodies=None):
    """The regex `backend`'s smoke answer must match (release_steps.body_regex, for Jinja)."""
    try:
        return _node_body_regex(backend, bodies)
    except SmokeBodiesError as exc:
        raise AnsibleFilterError(str(exc))


def watch_plan(services_list, targets, baselines, smoke, timeout=5, validate_certs=True):
    """haproxy_backend_traffic's input for the watch window (release_steps.watch_items), from looped results."""
    return watch_items(services_list, targets, _by_service(baselines), _by_service(smoke), timeout, validate_certs)


def failure_message(result):
    """The reason a failed task gives; for a loop over several services, each failed one's key and reason."""
    if not isinstance(result, dict):
        return short(result, 400)
    items = result.get("results")
    if isinstance(items, list):
        reasons = []
        for item in items:
            if isinstance(item, dict) and (item.get("failed") or item.get("unreachable")):
                label = _item_key(item)
                reasons.append("%s: %s" % (label, item.get("msg", "failed")) if label is not None and len(items) > 1
                               else str(item.get("msg", "failed")))
        if reasons:
            return "; ".join(reasons)
    return str(result.get("msg", "failed"))


def step_failures(result):
    """The failures a step module's failed result names, each prefixed with its stage ('SMOKE: ...').

    A step that found several (a failed watch window and the reload that caused it) lists them in
    `failures`; otherwise its `stage` prefixes its message. Any other failed task: its message.
    """
    if isinstance(result, dict) and isinstance(result.get("failures"), list) and result["failures"]:
        return [str(failure) for failure in result["failures"]]
    message = failure_message(result)
    stage = result.get("stage") if isinstance(result, dict) else None
    return ["%s: %s" % (stage, message) if stage else message]


def _hostvar(hostvars, host, name, default=None):
    try:
        node = hostvars[host]
        return node[name] if name in node else default
    except (KeyError, TypeError):
        return default


def fleet_reasons(hostvars, all_hosts, play_hosts):
    """Every node's reasons to stop the fleet, as 'host: reason' (nodes that left the play included)."""
    reasons = []
    for host in all_hosts:
        if host not in play_hosts:
            reasons.append("%s: %s" % (host, LEFT_THE_PLAY))
            continue
        for reason in _hostvar(hostvars, host, "_release_failures", []) or []:
            reasons.append("%s: %s" % (host, reason))
    return reasons


def already_live(hostvars, all_hosts, play_hosts):
    """True when every node already runs its targets at runtime and on disk and no lock is held.

    Decided from READ, before any lock is taken: such a run changes nothing, not even a lock file.
    """
    if not all_hosts or set(all_hosts) != set(play_hosts):
        return False
    for host in all_hosts:
        plan = _hostvar(hostvars, host, "_release_plan") or {}
        if plan:
            targets, lives, disks = plan.get("targets") or {}, plan.get("lives") or {}, plan.get("disks") or {}
        else:
            targets = {"": _hostvar(hostvars, host, "_release_target")}
            lives, disks = {"": _hostvar(hostvars, host, "_release_live")}, {"": _hostvar(hostvars, host, "_release_disk")}
        lock = _hostvar(hostvars, host, "_release_lock_seen", {}) or {}
        if _hostvar(hostvars, host, "_release_failures", []) or not targets or not all(targets.values()):
            return False
        if any(lives.get(key) != target or disks.get(key) != target for key, target in targets.items()):
            return False
        if isinstance(lock, dict) and lock.get("held"):
            return False
    return True


# A haproxy_map result that says it does not know what is live (a reply lost after the change,
# and the read-back failed too) read nothing, whatever its runtime_entries hold.
LIVE_UNKNOWN_FLAGS = ("runtime_unknown",)


def _read_values(result, keys):
    """{key: live value} a result read from HAProxy (None: the key is absent), only the keys it read.

    haproxy_map_info reads `entries` (a key not there is absent), also when it failed afterwards
    (reading the lock); haproxy_map reads the touched keys back into `runtime_entries` after its
    change, and when its compare-and-set refused, the values live at the refusal (failed result).
    A result without them (skipped, unreachable, failed before reading) read nothing.
    """
    if not _ran(result) or result.get("unreachable") or any(result.get(flag) for flag in LIVE_UNKNOWN_FLAGS):
        return {}
    for field in ("runtime_entries", "entries"):
        entries = result.get(field)
        if isinstance(entries, dict):
            if field == "entries":
                return dict((key, entries.get(key)) for key in keys)
            return dict((key, entries[key]) for key in keys if key in entries)
    if not result.get("failed") and "value" in result and result.get("key") in (None,) + tuple(keys):
        key = result.get("key") or keys[0]
        return {key: result.get("value")} if key in keys else {}
    return {}


def _disk_values(result, keys):
    """{key: map-file value} a result read or wrote (None: absent), only when it knows the file."""
    if not _ran(result) or result.get("unreachable"):
        return {}
    entries = result.get("disk_entries")
    if isinstance(entries, dict):
        return dict((key, entries.get(key)) for key in keys)
    if "disk_value" in result and len(keys) == 1 and result.get("key") in (None, keys[0]):
        return {keys[0]: result.get("disk_value")}
    return {}


def _may_have_moved(result):
    """Whether a haproxy_map step that read nothing back may still have changed the live map.

    The module's own failures carry `map`; without `runtime_changed` they came before any change
    (the plan, the compare-and-set). No module result at all (a lost async job, a dead worker),
    or a result that says the live state is unknown, may have switched.
    """
    if not _ran(result):
        return False
    if any(result.get(flag) for flag in LIVE_UNKNOWN_FLAGS):
        return True
    if result.get("unreachable"):
        return True
    return bool(result.get("failed")) and ("map" not in result or bool(result.get("runtime_changed")))


# The steps that read (or may change) a node's live map, in the order a run takes them. The live
# value a report gives is the last one read, unless a later step may have moved it unseen.
LIVE_STEPS = (("READ", "_release_read", False), ("SWITCH", "_release_switch", True),
              ("WATCH VERIFY", "_release_watch_verify", False), ("PERSIST", "_release_persist", True),
              ("ROLLBACK", "_release_rollback", True))
# Steps whose result holds the map file (the switch reads the file named by `map`, which may not
# be the map file of the run: release_map_file).
DISK_STEPS = ("_release_read", "_release_watch_verify", "_release_persist", "_release_rollback")


def _live_state(var, keys):
    """(live, unknown, disk) of a node from its registered results.

    `live` is {key: value} of what HAProxy last showed (None: absent), `unknown` {key: reason}
    for the keys nothing read after the last step that may have moved them (then not in
    `live`); `disk` {key: value} of the map file (None: absent or unknown).
    """
    live, unknown = {}, {}
    for phase, name, changes in LIVE_STEPS:
        result = var(name, {}) or {}
        if not _ran(result):
            continue
        read = _read_values(result, keys)
        reason = "%s: %s" % (phase, short(str(result.get("msg") or "no result came back"), 400))
        for key in keys:
            if key in read:
                live[key] = read[key]
                unknown.pop(key, None)
            elif name == "_release_read" or changes and _may_have_moved(result):
                live.pop(key, None)
                unknown[key] = reason
    for key in keys:
        if key not in live and key not in unknown:
            unknown[key] = "nothing read the live map on this node"
    disk = dict((key, None) for key in keys)
    for name in DISK_STEPS:
        disk.update(_disk_values(var(name, {}) or {}, keys))
    return live, unknown, disk


def node_outcome(node):
    """One word for what happened on a node.

    `node` keys: left (bool: not in the play any more), switched (the switch changed the
    live value), rolled_back, failures (list), fleet_failed, unchanged (value already live),
    checked (check mode), persisted (the map file was written without a switch: persist.yml),
    canary_ended (a rollback ended a canary a dead run left: the share back to 0, the live key kept).
    """
    switched = bool(node.get("switched"))
    if node.get("left"):
        return "not rolled back" if switched and not node.get("rolled_back") else \
            ("rolled back" if node.get("rolled_back") else "left the play")
    if node.get("rolled_back"):
        return "rolled back"
    if node.get("failures"):
        return "failed"
    if node.get("fleet_failed"):
        return "not rolled back" if switched else "refused"
    if node.get("checked"):
        return "checked"
    if switched:
        return "switched"
    if node.get("canary_ended"):
        return "canary ended"
    if node.get("persisted"):
        return "persisted"
    return "unchanged"


def _ran(result):
    return isinstance(result, dict) and bool(result) and not result.get("skipped")


def _ok(result):
    return _ran(result) and not result.get("failed") and not result.get("unreachable")


def _keys(key):
    return list(key) if isinstance(key, (list, tuple)) else [key]


def _collapse(values, keys):
    """One key: its value alone (the single-key report); several: key -> value."""
    return values.get(keys[0]) if len(keys) == 1 else dict((key, values.get(key)) for key in keys)


def _item_key(result):
    """The service key of one loop item's result (the item is a service, or a list starting with one)."""
    label = result.get("item") if isinstance(result, dict) else None
    if isinstance(label, (list, tuple)) and label:
        label = label[0]
    if isinstance(label, dict):
        return label.get("key")
    return label if isinstance(label, str) else None


def _by_service(result):
    """{service key: result} of a task looped over the services; {None: result} for a plain task.

    The step module's per-service results (release_step's switch: `smoke`, ...) are a list of results
    that each carry their service's `key`.
    """
    if isinstance(result, list):
        return dict((item.get("key"), item) for item in result if isinstance(item, dict))
    if not isinstance(result, dict):
        return {}
    if isinstance(result.get("results"), list):
        by_key = {}
        for item in result["results"]:
            by_key[_item_key(item)] = item
        return by_key
    return {None: result}


def _precheck_stage(precheck, stage):
    """One stage of release_precheck's result, shaped like a task looped over the services."""
    services = precheck.get("services") if isinstance(precheck, dict) else None
    return dict(results=[dict(service.get(stage) or dict(skipped=True), item=dict(key=service.get("key")))
                         for service in services or [] if isinstance(service, dict)])


def _per_service(result, keys, shape):
    """`shape(result)` of each service's result (None when it did not run), collapsed like _collapse."""
    by_key = _by_service(result)
    values = {}
    for key in keys:
        item = by_key.get(key, by_key.get(None) if len(keys) == 1 else None)
        values[key] = shape(item) if _ran(item) else None
    if len(keys) == 1:
        return values[keys[0]]
    return values if any(value is not None for value in values.values()) else None


def _health(result):
    return dict(healthy=result.get("healthy_count"), total=result.get("total")) if "total" in result else None


def _preflight(result):
    return dict(passed=result.get("passed_count"), failed=result.get("failed_servers", [])) \
        if "passed_count" in result else None


def _traffic(result):
    if "judged" not in result:
        return None
    traffic = dict((name, result.get(name)) for name in ("requests", "errors", "error_rate", "judged", "verdict"))
    # The window's smoke requests (sent by the traffic module itself) and what was not judged.
    if isinstance(result.get("smoke"), dict):
        traffic["smoke"] = _smoke_counts(result["smoke"])
    if result.get("verdict") == "insufficient":
        traffic["note"] = result.get("msg")  # "<backend>: insufficient traffic to judge: n real requests ..."
    return traffic


def _smoke_counts(result):
    return dict(passed=result.get("passed_count", 0), failed=result.get("failed_count", 0)) \
        if "passed_count" in result else None


def node_summary(hostvars, host, key, persist="on_success", check_mode=False, finished=None):
    """What happened on one node that is still in the play, from its own registered results.

    `key` is the map key, or the list of keys of a multi-service release (then every value
    in the summary is a dict of key -> value). The live values are the last ones HAProxy showed
    (READ, the switch's read-back or the values its refused compare-and-set found, WATCH VERIFY,
    PERSIST, the rollback); a key that no step read after the last step that may have moved it
    is unknown: `live_known` false, None in `live_runtime`, the reason in `live_unknown_reason`.
    """
    def var(name, default=None):
        return _hostvar(hostvars, host, name, default)

    keys = _keys(key)
    switch = var("_release_switch", {}) or {}
    failures = list(var("_release_failures", []) or [])
    switched, rolled_back = bool(var("_release_switched", False)), bool(var("_release_rolled_back", False))
    live, unknown, disk = _live_state(var, keys)
    runtime = dict((k, live.get(k)) for k in keys)
    if (persist == "on_success" or rolled_back) and switched and not check_mode:
        for k in keys:
            if k not in unknown and runtime[k] != disk[k]:
                failures.append("INVARIANT: %s%s but disk says %s; a reload would move traffic"
                                % ("" if len(keys) == 1 else k + ": ", "runtime says %s" % runtime[k], disk[k]))
    precheck = var("_release_precheck", {}) or {}
    smoke = {}
    stages = dict(PRECHECK=_precheck_stage(precheck, "current"),
                  PREVIEW=(var("_release_read", {}) or {}).get("preview") or {})
    for phase, name in (("PRECHECK", None), ("PREVIEW", None), ("SMOKE", "_release_smoke"),
                        ("WATCH", "_release_watch"), ("ROLLBACK SMOKE", "_release_rollback_smoke")):
        counts = _per_service(stages[phase] if name is None else var(name, {}) or {}, keys, _smoke_counts)
        if counts is not None and (len(keys) == 1 or any(counts.values())):
            smoke[phase] = counts
    outcome = node_outcome(dict(switched=switched, rolled_back=rolled_back, failures=failures,
                                fleet_failed=var("_release_fleet_failed", False), checked=check_mode,
                                persisted=bool((var("_release_persist", {}) or {}).get("changed")),
                                canary_ended=any(window.get("verdict") == "ended"
                                                 for step in var("_release_canary_steps", []) or [] if isinstance(step, dict)
                                                 for window in step.values() if isinstance(window, dict))))
    timings = var("_release_timings", {}) or {}
    run = var("_release_run", {}) or {}
    plan = var("_release_plan") or {}
    targets = plan.get("targets") or {keys[0]: var("_release_target")}
    previous = plan.get("lives") or {keys[0]: var("_release_live")}
    drift = dict((k, None if k in unknown or disk[k] is None else runtime[k] != disk[k]) for k in keys)
    drained = var("_release_drain") or {}
    drain = dict((k, _drain_report(drained[k])) for k in keys if isinstance(drained, dict) and isinstance(drained.get(k), dict))
    return dict(
        outcome=outcome,
        switched=switched,
        target=_collapse(targets, keys),
        previous=_collapse(previous, keys),
        live_runtime=_collapse(runtime, keys),
        live_known=not unknown,
        live_unknown_reason=_collapse(dict((k, unknown.get(k)) for k in keys), keys),
        live_disk=_collapse(disk, keys),
        drift=_collapse(drift, keys) if len(keys) == 1 else (
            None if all(value is None for value in drift.values()) else any(drift.values())),
        target_health=_per_service(_precheck_stage(precheck, "health"), keys, _health),
        preflight=_per_service(_precheck_stage(precheck, "preflight"), keys, _preflight),
        traffic=_per_service(var("_release_traffic", {}) or {}, keys, _traffic),
        smoke=smoke,
        switched_at=switch.get("switched_at") if _ran(switch) else None,
        late_by=switch.get("late_by") if _ran(switch) else None,
        # How early the node was ready for the fleet's instant (what the lead left to spare).
        waited=switch.get("waited") if _ran(switch) else None,
        # What the backends this release left still held (release_drain_timeout), None without a drain.
        drain=_collapse(drain, keys) if drain else None,
        # Each canary step's analysis window (release_strategy canary), in order; [] without a canary.
        canary_steps=[_collapse(step, keys) for step in var("_release_canary_steps", []) or [] if isinstance(step, dict)],
        failures=failures,
        timings=seconds_since(timings, run.get("started", 0), finished),
        lock_kept=False,
    )


def _drain_report(report):
    """One drained backend in the node summary: backend, sessions_left, shut_down, waited (or error)."""
    if report.get("error"):
        return dict(backend=report.get("backend"), error=report["error"], sessions_left=None, shut_down=None,
                    waited=None)
    return dict((name, report.get(name)) for name in ("backend", "sessions_left", "shut_down", "waited"))


def drain_summary(summary):
    """The fleet's drain in one sentence, None when no node drained (release_drain_timeout 0).

    "the previous version holds no session on any node", or the nodes where it still does (or
    could not be read), with the backend and the count.
    """
    reports = []
    for host, node in sorted((summary or {}).items()):
        drain = node.get("drain") if isinstance(node, dict) else None
        if not isinstance(drain, dict):
            continue
        for report in ([drain] if "backend" in drain else [item for item in drain.values() if isinstance(item, dict)]):
            reports.append((host, report))
    if not reports:
        return None
    closed = sum(int(report.get("shut_down") or 0) for _host, report in reports)
    held = ["%s: %s holds %d session%s" % (host, report["backend"], report["sessions_left"],
                                           "" if report["sessions_left"] == 1 else "s")
            for host, report in reports if report.get("sessions_left")]
    unread = ["%s: %s not read (%s)" % (host, report["backend"], report["error"])
              for host, report in reports if report.get("error")]
    if held or unread:
        return "the previous version still holds sessions: %s" % "; ".join(held + unread)
    return "the previous version holds no session on any node%s" % (
        " (%d closed by release_drain_shutdown)" % closed if closed else "")


def left_node_summary(hostvars, host, key):
    """The report of a node that left the play: what it was last seen doing."""
    keys = _keys(key)
    switch = _hostvar(hostvars, host, "_release_switch", {}) or {}
    armed = _ok(_hostvar(hostvars, host, "_release_switch_job", {}) or {})
    switched = bool(_ok(switch) and (switch.get("changed") or switch.get("switched_at") is not None))
    # Armed, and the result never came back: it may well have switched.
    unknown = armed and not _ok(switch)
    rolled_back = bool(_hostvar(hostvars, host, "_release_rolled_back", False))
    seen, not_seen, _disk = _live_state(lambda name, default=None: _hostvar(hostvars, host, name, default), keys)
    if unknown:
        # What READ saw, said to be from before the switch.
        seen = _read_values(_hostvar(hostvars, host, "_release_read", {}) or {}, keys)
    values = dict((k, seen[k] if k in seen else "unknown") for k in keys)
    live = describe(_collapse(values, keys)) if len(keys) > 1 else values[keys[0]]
    target = _hostvar(hostvars, host, "_release_target")
    locked = bool(_hostvar(hostvars, host, "_release_lock_taken", False))
    lock = "its lock is kept" if locked else "it holds no lock of this run"
    outcome = node_outcome(dict(left=True, switched=switched or unknown, rolled_back=rolled_back))
    if outcome == "not rolled back" and unknown:
        note = ("not rolled back: its switch to %s was armed and no result came back; last seen live value %s "
                "(before the switch); %s" % (target, live, lock))
    elif outcome == "not rolled back":
        note = "not rolled back: last seen live value %s; %s" % (live, lock)
    else:
        note = "left the play; last seen live value %s; %s" % (live, lock)
    return dict(outcome=outcome, switched=switched or unknown, live_runtime=None, live_known=False,
                live_unknown_reason=LEFT_THE_PLAY, live_disk=None,
                last_seen_live=live, left=True, lock_kept=locked, failures=[note], note=note,
                switched_at=switch.get("switched_at") if _ok(switch) else None)


def fleet_summary(hostvars, all_hosts, play_hosts, key, persist=None, check_mode=False, finished=None):
    """{host: node summary}: every node still in the play summarized from its own results, else what it was last seen doing.

    With `persist` (release_persist) each node in the play is summarized here (node_summary), in
    the one REPORT task; without it, from its own `_release_node` fact.
    """
    summary = {}
    for host in all_hosts:
        if host in play_hosts and persist is not None:
            node = node_summary(hostvars, host, key, persist, check_mode, finished)
        else:
            node = _hostvar(hostvars, host, "_release_node") if host in play_hosts else None
        summary[host] = dict(node) if isinstance(node, dict) else left_node_summary(hostvars, host, key)
    return summary


def _unknown_keys(node):
    """The keys whose live value a node's summary does not know: a set, or True for every key."""
    if node.get("left"):
        return True
    if node.get("live_known", True) is not False:
        return set()
    reasons = node.get("live_unknown_reason")
    if isinstance(reasons, dict):
        return set(key for key, reason in reasons.items() if reason)
    return True


def split_keys(summary):
    """{key or None: {value: [hosts]}} of every key that at least two nodes in the play READ BACK differently.

    Only values read back count: a node whose live value is unknown (not read, left the play)
    is no second value, and a None read back means the key is absent there.
    """
    seen = {}
    for host, node in sorted((summary or {}).items()):
        if not isinstance(node, dict):
            continue
        unknown = _unknown_keys(node)
        if unknown is True:
            continue
        live = node.get("live_runtime")
        values = live if isinstance(live, dict) else {None: live}
        for key, value in values.items():
            if key in unknown:
                continue
            seen.setdefault(key, {}).setdefault("absent" if value is None else str(value), []).append(host)
    return dict((key, values) for key, values in seen.items() if len(values) > 1)


def run_outcome(summary):
    """The run's outcome from the fleet summary: succeeded | unchanged | checked | failed | split.

    `split` means nodes now serve different versions: at least two nodes still in the play read
    back different live values (a node whose value could not be read is unknown, not a second
    value), or a node left the play after its switch and was not rolled back.
    """
    outcomes = [node.get("outcome") for node in summary.values()]
    if "not rolled back" in outcomes or split_keys(summary):
        return "split"
    if any(node.get("failures") for node in summary.values()):
        return "failed"
    if outcomes and all(o == "unchanged" for o in outcomes):
        return "unchanged"
    if outcomes and all(o == "checked" for o in outcomes):
        return "checked"
    return "succeeded"


def run_message(summary, action, target, previous):
    """The message a failed run ends with: what happened to the fleet, then every node's reasons.

    It says every node was rolled back only when each one was; a node that left the play after
    its switch makes the fleet split, and the message says where that node was last seen.
    """
    outcomes = dict((host, node.get("outcome")) for host, node in summary.items())
    head = "%s to %s failed" % (action, short(str(target)))
    if run_outcome(summary) == "split":
        parts = []
        for host, node in sorted(summary.items()):
            if node.get("left"):
                parts.append("%s %s" % (host, node.get("outcome")))
            elif node.get("live_known", True) is False:
                parts.append("%s %s (live value unknown)" % (host, node.get("outcome")))
            else:
                parts.append("%s %s (live %s)" % (host, node.get("outcome"), describe(node.get("live_runtime"))))
        head += "; the fleet is split: %s" % ", ".join(parts)
    elif outcomes and all(outcome == "rolled back" for outcome in outcomes.values()):
        head += "; every node was rolled back to %s" % previous
    elif "rolled back" in outcomes.values():
        head += "; %s" % ", ".join("%s %s" % (host, outcome) for host, outcome in sorted(outcomes.items()))
    elif not any(node.get("switched") for node in summary.values()):
        head += ", nothing was switched"
    unread = sorted(host for host, node in summary.items()
                    if not node.get("left") and node.get("live_known", True) is False)
    if unread and run_outcome(summary) != "split":
        head += "; live value unknown on %s" % ", ".join(unread)
    reasons = ["%s: %s" % (host, failure) for host, node in summary.items() for failure in node.get("failures") or []]
    return "%s: %s" % (head, "; ".join(reasons) if reasons else "see the report")


def node_status(map_info, key, lock_info=None, health_results=None):
    """status.yml's report of one node: values, drift, the lock, and whether the lock explains the drift.

    `map_info` is haproxy_map_info's result, also when it failed: what it read counts (a lock it
    could not read does not hide the map it did read); when it read no map, the live value is
    unknown: `runtime` None, `runtime_known` false, `unknown_reason` the module's message.
    """
    map_info = map_info if isinstance(map_info, dict) else {}
    read = _read_values(map_info, [key])
    known = key in read
    runtime = read.get(key)
    disk = _disk_values(map_info, [key]).get(key)
    error = str(map_info.get("msg") or "failed") if map_info.get("failed") or map_info.get("unreachable") else None
    drift = known and (runtime is not None and disk is not None and runtime != disk or (runtime is None) != (disk is None))
    lock_info = lock_info if isinstance(lock_info, dict) else {}
    holder = lock_info.get("holder")
    lock = dict(held=bool(lock_info.get("held")), holder=holder, age=lock_info.get("age"))
    if error and not lock_info:
        lock["error"] = error
    unknown_reason = None if known else short(error or "the live map was not read", 400)
    # A canary running here (release_strategy canary): its backend and share, None when no share is set.
    entries = map_info.get("entries") or {}
    share = entries.get(key + ".weight")
    canary = dict(backend=entries.get(key + ".canary"), weight=int(share)) \
        if isinstance(share, str) and share.isdigit() and int(share) > 0 else None
    status = dict(runtime=runtime, runtime_known=known, unknown_reason=unknown_reason,
                  disk=disk, drift=bool(drift) if known else None,
                  drift_keys=[name for name in map_info.get("drift_keys", []) if name == key],
                  lock=lock, drift_reason=None, backends={}, error=short(error, 400) if error else None, canary=canary)
    if drift and lock["held"] and isinstance(holder, dict) and holder.get("key", key) == key \
            and runtime == holder.get("target") and disk == holder.get("previous"):
        status["drift_reason"] = (
            "explained by the release lock: run %s (controller %s pid %s, phase %s) switched %s from %s to %s and "
            "did not persist it; if that run is gone, rollback.yml -e release_lock_force=true returns to %s"
            % (holder.get("owner"), holder.get("controller"), holder.get("controller_pid"), holder.get("phase"),
               key, holder.get("previous"), holder.get("target"), holder.get("previous")))
    elif drift and lock["held"]:
        status["drift_reason"] = "a release holds the lock (%s, phase %s); its record does not match this drift" % (
            (holder or {}).get("owner", "unknown owner"), (holder or {}).get("phase"))
    elif drift:
        status["drift_reason"] = "not explained by a release lock: persist.yml writes the live value, or fix the file"
    for result in health_results or []:
        backend = result.get("item")
        status["backends"][backend] = dict(
            healthy=bool(result.get("healthy", False)), healthy_count=result.get("healthy_count"),
            total=result.get("total"), unhealthy_servers=result.get("unhealthy_servers", []),
            error=result.get("msg") if result.get("failed") else None)
    return status


def fleet_status(statuses, all_hosts, play_hosts):
    """Whether the nodes run one value: {consistent, runtime: {value: [hosts]}, disk, unknown, missing, message}.

    `runtime` groups only the nodes whose live value was read; a node that could not be read is
    in `unknown` ({host: reason}), never a value of its own: the fleet is split only when values
    read back differ. `consistent` is true only when every node was read and they agree.
    """
    runtime, disk, unknown = {}, {}, {}
    for host, status in sorted((statuses or {}).items()):
        if status.get("runtime_known", True) is False:
            unknown[host] = status.get("unknown_reason") or "the live map was not read"
            continue
        runtime.setdefault(str(status.get("runtime")), []).append(host)
        disk.setdefault(str(status.get("disk")), []).append(host)
    missing = [host for host in all_hosts if host not in play_hosts]
    consistent = len(runtime) <= 1 and not missing and not unknown
    values = "; ".join("%s on %s" % (value, ", ".join(hosts)) for value, hosts in sorted(runtime.items()))
    if len(runtime) > 1:
        message = "the fleet is split: nodes disagree on the live value (%s)" % values
    elif runtime:
        message = "every node read runs %s" % values if unknown or missing else "every node runs %s" % values
    else:
        message = "no node was read"
    if unknown:
        message += "; live value unknown on %s" % "; ".join(
            "%s (%s)" % (host, short(reason, 200)) for host, reason in sorted(unknown.items()))
    if missing:
        message += "; could not read %s (left the play)" % ", ".join(missing)
    return dict(consistent=consistent, runtime=runtime, disk=disk, unknown=unknown, missing=missing, message=message)


def seconds_since(timings, started, finished=None):
    """{phase: seconds from the start of the run} for a node's epoch timestamps."""
    result = {}
    items = dict(timings or {})
    if finished is not None:
        items["finished"] = finished
    for phase, at in items.items():
        try:
            result[phase] = round(float(at) - float(started), 2)
        except (TypeError, ValueError):
            result[phase] = None
    return result


def late_nodes(switched_at, max_spread):
    """{host: seconds after the first node's switch} of the nodes that switched more than `max_spread` after it.

    `switched_at` is {host: epoch of its switch, or None when it did not switch}.
    """
    times = dict((host, float(at)) for host, at in (switched_at or {}).items() if at is not None)
    if len(times) < 2 or max_spread in (None, ""):
        return {}
    first = min(times.values())
    return dict((host, round(at - first, 3)) for host, at in sorted(times.items()) if at - first > float(max_spread))


def spread_failures(hostvars, host, play_hosts, max_spread):
    """This node's failure when it switched more than `max_spread` seconds after the fleet's first node ([] else)."""
    switched_at = dict((name, (_hostvar(hostvars, name, "_release_switch", {}) or {}).get("switched_at"))
                       for name in play_hosts or [])
    late = late_nodes(switched_at, max_spread)
    if host not in late:
        return []
    first = min((at for at in switched_at.values() if at is not None), key=float)
    first_host = sorted(name for name, at in switched_at.items() if at is not None and float(at) == float(first))[0]
    return ["the fleet did not switch at one instant: this node switched %.3fs after %s, above release_max_spread "
            "%ss (release_spread_action=warn lets such a run go on with a warning)"
            % (late[host], first_host, float(max_spread))]


def switch_spread(summary, max_spread=None, action="rollback"):
    """{nodes, first, last, spread_ms}: when the nodes switched, from each node's `switched_at`.

    With `max_spread` (seconds) also `max_spread_ms`, `late` ({host: seconds after the first
    node}) and `warning`: a sentence when the spread is above it (None otherwise), so a late
    node is never only a number in a field. `action` is release_spread_action.
    """
    times = sorted(float(node["switched_at"]) for node in summary.values()
                   if isinstance(node, dict) and node.get("switched_at") is not None)
    if not times:
        spread = dict(nodes=0, first=None, last=None, spread_ms=None)
    else:
        spread = dict(nodes=len(times), first=times[0], last=times[-1],
                      spread_ms=round((times[-1] - times[0]) * 1000, 1))
    if max_spread in (None, ""):
        return spread
    late = late_nodes(dict((host, node.get("switched_at")) for host, node in summary.items()
                           if isinstance(node, dict)), max_spread)
    spread.update(max_spread_ms=round(float(max_spread) * 1000, 1), late=late, warning=None)
    if late:
        spread["warning"] = (
            "the fleet did not switch at one instant: spread %.0f ms, above release_max_spread %ss; %s%s"
            % (spread["spread_ms"], float(max_spread),
               ", ".join("%s switched %.3fs after the first node" % (host, seconds) for host, seconds in late.items()),
               " (release_spread_action=rollback failed the run)" if action == "rollback" else
               " (release_spread_action=warn: the run went on)"))
    return spread


# How the switch lead is estimated (see switch_lead). Arming a batch costs about twice what the
# same batch's lock module runs cost: the async wrapper is one more Python process per node, and
# each armed module starts and does its reads in the background while the next ones are armed
# (measured on 2 cores, 4 and 10 nodes at forks 2, 5 and 10: 1.5-2.5 times).
ARM_COST_RATIO = 2.0
# Each node run at once beyond the controller's cores adds this share of a core's worth of time.
OVERSUBSCRIPTION_SHARE = 0.125
# Arming against the PREPARE phase measured at the same forks on the same controller (its
# contention is in it already). The first batch arms in about its PREPARE time; every later batch
# is armed while the one before starts its modules in the background, and costs LATER_BATCH_ARM_COST
# times its PREPARE time. Measured on 2 cores from the arming task's duration: 10 and 20 nodes at
# forks = nodes (one batch) 1.0-1.05x the phase; 10 nodes at forks 5 (two batches) 1.27x; 20 at
# forks 5 (four) 1.54x (this model: 1.0, 1.4, 1.6). After the last arming, the last batch's modules
# still start: 0.55-0.7 of the slowest PREPARE module run (10 and 20 nodes, forks 5 and = nodes);
# the lead gives them one whole run. (The earlier model, 1.25x the phase plus two runs with more
# than one batch, left every node of 10 at forks 5 waiting 2.6-2.9 s on a quiet machine.)
# A fleet in one batch (nodes <= forks) runs its step as a plain module run: the task ends only
# with the step, so the arming is the modules' own start, inside the batch's share of the phase,
# and no module run is added (10 nodes at forks 10: every node ready 2.6 s after the instant was
# chosen, against a phase of 3.35 s; the one-run lead left each waiting 4.6-5.0 s).
LATER_BATCH_ARM_COST = 1.8
# A module run is never assumed cheaper than this (a run without a lock measured nothing).
MIN_MODULE_SECONDS = 0.3
# Seconds to spare.
LEAD_MARGIN = 0.5


def arming_phase(runs, batches):
    """(module_seconds, phase_seconds) for switch_lead from PREPARE's module runs.

    `runs` are each host's {started, seconds, work} (controller times from the release_step
    action, `work` the node's own waits and requests). A module run without its work is what
    arming one costs; the phase is the first run's start to the last one's end without its work,
    less the work of every batch before the last (batches run one after the other), so it holds
    the workers' staggered starts on a busy controller, not the health waits.
    """
    runs = [run for run in runs or [] if isinstance(run, dict) and float(run.get("started") or 0) > 0]
    if not runs:
        return 0.0, 0.0
    overheads = [max(0.0, float(run["seconds"]) - float(run.get("work") or 0)) for run in runs]
    work = max(float(run.get("work") or 0) for run in runs)
    ends = [float(run["started"]) + overhead for run, overhead in zip(runs, overheads)]
    phase = max(ends) - min(float(run["started"]) for run in runs) - max(0, int(batches) - 1) * work
    overhead = max(overheads)
    return overhead, max(overhead, phase)


def switch_lead(hosts, forks, configured=0, module_seconds=0, cores=None, phase_seconds=0, runs=None):
    """Seconds between choosing the switch instant and the instant itself.

    Every node's switch must be armed, and its armed module started and done with its reads,
    before the instant. Arming runs in batches of `forks` nodes. With a measured phase
    (`phase_seconds`: the first PREPARE module run's start to the last one's end, controller
    times from the step's action plugin, at this forks setting), the first batch costs its share
    of the phase and every later batch LATER_BATCH_ARM_COST times it. Without one, a batch costs
    ARM_COST_RATIO times `module_seconds`, and when more nodes run at once than the controller
    has `cores` (os.cpu_count() by default), every node beyond them adds OVERSUBSCRIPTION_SHARE
    per core. Then the last batch's armed modules start: one module run (`module_seconds`, the
    slowest host's), except in one measured batch, whose plain module runs start within its
    share. Plus LEAD_MARGIN. The estimate grows with the batches, not their square
    (the PREPARE phase already holds every batch). `configured` above 0 (release_switch_lead)
    wins. With `runs` (PREPARE's module runs, see arming_phase) both are estimated from them.
    """
    if configured and float(configured) > 0:
        return float(configured)
    hosts = max(1, int(hosts))
    forks = max(1, int(forks or 5))
    cores = max(1, int(cores or os.cpu_count() or 1))
    batches = int(math.ceil(hosts / float(forks)))
    if runs:
        module_seconds, phase_seconds = arming_phase(runs, batches)
    module_seconds = max(MIN_MODULE_SECONDS, float(module_seconds or 0))
    phase_seconds = float(phase_seconds or 0)
    if phase_seconds > 0:
        # A measured phase ran at this forks setting on this controller: its contention is in it.
        per_batch = max(MIN_MODULE_SECONDS, phase_seconds / batches)
        if batches == 1:
            # The plain run of one batch: its modules start within the batch's share.
            return round(LEAD_MARGIN + per_batch, 1)
        arming = per_batch * (1 + LATER_BATCH_ARM_COST * (batches - 1))
        return round(LEAD_MARGIN + arming + module_seconds, 1)
    parallel = min(forks, hosts)
    contention = 1.0 + OVERSUBSCRIPTION_SHARE * max(0, parallel - cores) / float(cores)
    return round(LEAD_MARGIN + batches * module_seconds * ARM_COST_RATIO * contention + module_seconds, 1)


def controller(_value=None):
    """{controller, controller_pid}: this controller's name and the ansible-playbook process.

    Templating runs in a forked worker; its parent is the ansible-playbook process, which
    lives as long as the run does (a module's pid does not).
    """
    parent = multiprocessing.parent_process()
    return dict(controller=socket.getfqdn(), controller_pid=parent.pid if parent is not None else os.getpid())


def clock_offset(clock, tolerance):
    """Why a node's clock is refused ('' when it agrees), from the release_step action's `clock`.

    `clock` is {offset, error, readings}: the node's offset from the controller's clock and the
    error bound of that measurement (plugins/plugin_utils/clock.py). The node may be off by as much
    as |offset| + error, so it is refused when that exceeds `tolerance`; a clock that could not be
    read is refused too. The message names the offset and the error, and what to fix: a node that
    reads off by more than the tolerance needs NTP; one that reads within it, but whose every
    reading took too long to tell, was measured on a busy controller or over a slow connection.
    """
    clock = clock if isinstance(clock, dict) else {}
    tolerance = float(tolerance)
    if clock.get("offset") is None or clock.get("error") is None:
        return ("could not be compared with the controller's (%s), so it may be off by more than "
                "release_clock_tolerance %ss" % (short(clock.get("problem") or "no clock reading", 200), tolerance))
    offset, error = float(clock["offset"]), float(clock["error"])
    if abs(offset) + error <= tolerance:
        return ""
    side = "ahead of" if offset > 0 else "behind"
    if abs(offset) > tolerance:
        return ("is %.3fs %s the controller's, measured to within %.3fs: up to %.3fs off, above release_clock_tolerance "
                "%ss; fix its time (NTP) or raise release_clock_tolerance"
                % (abs(offset), side, error, abs(offset) + error, tolerance))
    return ("could not be measured precisely enough: it reads %.3fs %s the controller's, but the best of %s readings "
            "is only good to within %.3fs, so it may be up to %.3fs off, above release_clock_tolerance %ss; the "
            "controller or the connection answered too slowly to tell (or its date has no %%N): run again when it is "
            "quieter, or raise release_clock_tolerance" % (abs(offset), side, clock.get("readings") or "its", error,
                                                           abs(offset) + error, tolerance))


def prepared_failures(hostvars, host, play_hosts, map_name, allow_drift=False, clock_tolerance=0.5):
    """This node's failures once every node ran PREPARE: the ones it had, then its clock, then the fleet's live value.

    A node that already failed (INIT, or its PREPARE step: the rescue recorded why) keeps its
    failures. Otherwise its clock must agree with the controller's (the fleet switches at one
    instant of each node's clock), and, when it has something to switch, every key's live value
    must agree with what the other nodes run (or release_expected_current) - the one question no
    node can answer alone. Every node's PREPARE result is its registered `_release_prepared`.
    """
    failures = list(_hostvar(hostvars, host, "_release_failures", []) or [])
    prepared = _hostvar(hostvars, host, "_release_prepared", {}) or {}
    if failures or prepared.get("failed") or prepared.get("skipped"):
        return failures
    if prepared.get("clock") is not None:
        refusal = clock_offset(prepared["clock"], clock_tolerance)
        if refusal:
            return ["LOCK: the clock of %s %s (the fleet switches at one instant of each node's clock)" % (host, refusal)]
    plan = prepared.get("plan") or {}
    if prepared.get("already_live") or not plan:
        return failures
    fleet_lives = []
    for other in play_hosts or []:
        other_plan = (_hostvar(hostvars, other, "_release_prepared", {}) or {}).get("plan")
        if isinstance(other_plan, dict) and "lives" in other_plan:
            fleet_lives.append(other_plan["lives"])
    return ["PRECHECK: " + error for error in precheck_errors(plan, fleet_lives, map_name, allow_drift)]


def strategy_refusal(configured_strategy, play_hosts, loaded_modules=None):
    """The refusal of a fleet run under Mitogen ('' when the run may go on).

    A fleet's switch is an async task armed for one instant; under Mitogen's strategies the
    forked async child deadlocks importing this collection's module_utils (measured with
    mitogen 0.3.54 and ansible-core 2.19: every node's switch timed out, nothing switched), so
    such a run is refused at INIT, before anything is read. Mitogen is detected from the
    configured strategy (ANSIBLE_STRATEGY, ansible.cfg) and from its strategy being loaded in
    this controller process, which also catches a play's `strategy:` keyword.
    `loaded_modules` (sys.modules by default) is a parameter so tests need no Mitogen.
    """
    import sys

    modules = sys.modules if loaded_modules is None else loaded_modules
    configured = str(configured_strategy or "")
    loaded = sorted(name for name in modules if name == "ansible_mitogen" or name.startswith("ansible_mitogen."))
    if not configured.startswith("mitogen") and not loaded:
        return ""
    hosts = list(play_hosts or [])
    if len(hosts) < 2:
        return ""  # one node switches in a plain synchronous module run, which works under Mitogen
    strategy = configured if configured.startswith("mitogen") else "a Mitogen strategy (ansible_mitogen is loaded)"
    return ("this run uses %s on a fleet of %d nodes: the fleet's switch is an async task armed for one instant, "
            "and under Mitogen its forked async child deadlocks importing this collection's module_utils, so "
            "every switch would time out; nothing was read or changed. Run with the linear strategy "
            "(ANSIBLE_STRATEGY=linear, or strategy = linear in ansible.cfg, and no strategy: mitogen_* on the play)"
            % (strategy, len(hosts)))


# What the role may call through bluegreen.haproxy._release: the engine's steps by name.
STEPS = {
    "partial_fleet": partial_fleet,
    "services": services,
    "describe": describe,
    "fleet_refusals": fleet_refusals,
    "input_failures": input_failures,
    "prepared_failures": prepared_failures,
    "report_keys": report_keys,
    "step_failures": step_failures,
    "fleet_reasons": fleet_reasons,
    "already_live": already_live,
    "fleet_summary": fleet_summary,
    "run_outcome": run_outcome,
    "run_message": run_message,
    "node_status": node_status,
    "fleet_status": fleet_status,
    "switch_spread": switch_spread,
    "drain_summary": drain_summary,
    "spread_failures": spread_failures,
    "switch_lead": switch_lead,
    "controller": controller,
}
