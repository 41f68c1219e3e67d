# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data shaping for the release role, on the controller.

The release playbooks decide with these filters instead of long Jinja: which inputs
are wrong, which internal names an extra var tries to set, every node's verdict
after a phase, each node's outcome, the run's outcome and its message. They are
pure functions of what the playbook hands them, so they are unit tested in
tests/unit/plugins/filter/test_release.py.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
import socket

from ansible.errors import AnsibleFilterError


# Facts and registered results the engine used before its internal state moved to
# `_release_*`. Passed as extra vars they would override the engine's own verdicts
# (extra vars beat set_fact), so a run that sets one is refused.
OLD_INTERNAL_NAMES = frozenset((
    "release_failures", "release_fleet_failed", "release_fleet_reasons", "release_fleet_live",
    "release_switched", "release_switch", "release_rolled_back", "release_rollback", "release_persisted",
    "release_persist_result", "release_current", "release_live_before", "release_disk_before",
    "release_map_before", "release_drift_check", "release_current_check", "release_health",
    "release_smoke", "release_smoke_before", "release_watch", "release_smoke_counts", "release_verify",
    "release_verify_check", "release_final", "release_node_summary", "release_summary", "release_timings",
    "release_run_owner", "release_run_started", "release_disk_path", "release_lock_file",
    "release_lock_taken", "release_lock_result", "release_status", "release_status_map",
    "release_status_health", "release_persist_live", "release_rollback_live", "release_gate_phase",
    "release_verify_phase", "release_verify_value", "release_smoke_phase", "release_smoke_backend",
    "release_smoke_watch", "release_persist_phase", "release_persist_value", "release_step",
))

INTERNAL_PREFIX = "_release_"
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


def default_body_regex(backend):
    """What a backend answers when release_smoke_bodies does not name it: version=<name without backend_>."""
    return "version=" + re.escape(re.sub(r"^backend_", "", str(backend)))


def body_regex(backend, bodies=None):
    """The regex `backend`'s smoke answer must match."""
    bodies = bodies or {}
    if not isinstance(bodies, dict):
        raise AnsibleFilterError("release_smoke_bodies must be a dict of backend -> regex, got %s" % short(bodies))
    if backend in bodies and bodies[backend] not in (None, ""):
        return str(bodies[backend])
    return default_body_regex(backend)


def precheck_services(services, targets, currents, lives, preflight=True, smoke_current=True):
    """release_precheck's `services`: each service with its target, and what its current path answers.

    A service whose target is already live has nothing to prove by preflight or current path
    (the health gate still runs: the target must be there and healthy).
    """
    checked = []
    for service in services:
        key = service["key"]
        moves = targets[key] != lives[key]
        checked.append(dict(
            key=key, backend=targets[key], url=service["smoke_url"], resolve=service.get("smoke_resolve") or None,
            headers=service.get("smoke_headers") or {}, status_code=service.get("smoke_status_codes") or [200],
            body_regex=body_regex(targets[key], service.get("smoke_bodies")),
            current_body_regex=body_regex(currents[key], service.get("smoke_bodies")),
            min_healthy=service.get("min_healthy") if service.get("min_healthy") not in ("", None) else None,
            preflight=bool(preflight) and moves, current=bool(smoke_current) and moves))
    return checked


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
                  "smoke_status_codes", "smoke_bodies", "min_healthy")


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
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import (
        SmokeOptionError,
        compile_body_regex,
        parse_resolve,
        parse_url,
        validate_headers,
        validate_status_codes,
    )

    for field, check in (
        ("smoke_url", lambda: parse_url(service.get("smoke_url"))),
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


def input_errors(inputs):
    """Every problem with the run's inputs, as a list of messages (empty: all good).

    `inputs` holds the release_* variables without their prefix; `services` the normalized
    release_services (see services()) and `given_services` release_services as given. The
    smoke options are parsed and every body regex compiled with the same functions
    http_smoke uses on the node, so a typo is found before any node switches.
    """
    errors = []
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
    return errors


def report_keys(services_list, multi, map_key):
    """What the report is keyed by: `map_key` for a single-key release, else the services' keys."""
    if not multi:
        return map_key
    return [item["key"] for item in services_list or [] if isinstance(item, dict) and isinstance(item.get("key"), str)]


def describe(values):
    """A dict of key -> value for messages: the value alone for one key, 'key=value, ...' for more."""
    if not isinstance(values, dict):
        return "" if values is None else str(values)
    if len(values) == 1:
        return str(next(iter(values.values())))
    return ", ".join("%s=%s" % (key, value) for key, value in sorted(values.items()))


def _recorded_value(record):
    """Whether a lock record (or one key's entry in it) names a previous value to return to."""
    return isinstance(record, dict) and isinstance(record.get("previous"), str) and bool(record["previous"])


def read_plan(read, lock_seen, services_list, run, lock_force=False):
    """From READ's results: every key's live and disk value, its target and compare-and-set source.

    `read` is haproxy_map_info's result for every service key, `lock_seen` release_lock_info's,
    `run` the run's record (owner, action). A rollback with `lock_force` after a run died
    returns each key to the `previous` value that run's lock records (for several keys, its
    details.entries).
    """
    read = read if isinstance(read, dict) else {}
    runtime = read.get("entries") or {}
    disk = read.get("disk_entries") or {}
    keys = [service["key"] for service in services_list]
    holder = (lock_seen or {}).get("holder") if isinstance(lock_seen, dict) else None
    recovery, previous, recovery_targets = {}, {}, {}
    if run.get("action") == "rollback" and lock_force and isinstance(holder, dict) \
            and holder.get("owner", "") != run.get("owner"):
        details = holder.get("details") if isinstance(holder.get("details"), dict) else {}
        recorded = details.get("entries") if isinstance(details.get("entries"), dict) else {}
        if recorded:
            previous = dict((key, entry["previous"]) for key, entry in recorded.items()
                            if key in keys and _recorded_value(entry))
            recovery_targets = dict((key, entry.get("target", "")) for key, entry in recorded.items() if key in previous)
        elif _recorded_value(holder) and len(keys) == 1 and holder.get("key", keys[0]) == keys[0]:
            previous = {keys[0]: holder["previous"]}
            recovery_targets = {keys[0]: holder.get("target", "")}
        if previous:
            recovery = holder
    lives = dict((key, runtime.get(key, "")) for key in keys)
    disks = dict((key, disk.get(key, "")) for key in keys)
    targets, currents = {}, {}
    for service in services_list:
        key, live = service["key"], lives[service["key"]]
        other = [backend for backend in service.get("backends") or [] if backend != live]
        targets[key] = service.get("target") or previous.get(key) or \
            (other[0] if other and run.get("action") == "rollback" else "")
        currents[key] = service.get("expected_current") or live
    expected = dict((service["key"], bool(service.get("expected_current"))) for service in services_list)
    return dict(lives=lives, disks=disks, targets=targets, currents=currents, recovery=recovery,
                recovery_previous=previous, recovery_targets=recovery_targets, expected_current_set=expected)


def lock_entries(previous, targets):
    """{key: {previous, target}} of a multi-service run, for its lock record (read back by read_plan)."""
    return dict((key, dict(previous=(previous or {}).get(key, ""), target=target))
                for key, target in sorted((targets or {}).items()))


def precheck_errors(plan, fleet_lives, map_name, allow_drift=False):
    """Why this node may not switch, per key (empty: it may). `fleet_lives` is every node's live values."""
    errors = []
    recovered = plan.get("recovery_previous") or {}
    for key in plan.get("targets") or {}:
        target, live = plan["targets"][key], plan["lives"].get(key, "")
        disk, current = plan["disks"].get(key, ""), plan["currents"].get(key, "")
        explained = key in recovered and disk == recovered[key] and \
            live in ((plan.get("recovery_targets") or {}).get(key, ""), recovered[key])
        values = sorted(set(str((lives or {}).get(key, "")) for lives in fleet_lives or []))
        if not target:
            errors.append("no target: name the backend to make live (release_target)")
        elif not live:
            errors.append("key %s is not in the live map %s" % (key, map_name))
        elif not (allow_drift or disk == live or explained):
            errors.append("drift: %s is %s at runtime but %s on disk, so a reload would move traffic; persist or "
                          "fix it first (status.yml shows it, persist.yml writes the live value) or set "
                          "release_allow_drift" % (key, live, disk or "absent"))
        elif live != current and key not in recovered:
            errors.append("%s is %s here, expected %s" % (key, live, current))
        elif len(values) > 1 and not plan.get("expected_current_set", {}).get(key) and key not in recovered:
            errors.append("nodes disagree on the live backend of %s (%s); set release_expected_current"
                          % (key, ", ".join(values)) if len(plan["targets"]) > 1 else
                          "nodes disagree on the live backend (%s); set release_expected_current" % ", ".join(values))
    return errors


def readback_errors(expected, result, phase="VERIFY", what="after the switch"):
    """Keys whose value a haproxy_map result read back differs from `expected` (key -> value)."""
    entries = (result or {}).get("runtime_entries") or {} if isinstance(result, dict) else {}
    errors = []
    for key, value in sorted((expected or {}).items()):
        seen = entries.get(key)
        if seen is None and isinstance(result, dict) and result.get("key") == key:
            seen = result.get("value")
        if seen != value:
            errors.append("%s: %s is %s at runtime %s, expected %s" % (phase, key, seen or "absent", what, value))
    return errors


def watch_errors(targets, info):
    """Keys that left their target during the watch window (haproxy_map_info's result), and whether a reload did it."""
    info = info if isinstance(info, dict) else {}
    runtime, disk = info.get("entries") or {}, info.get("disk_entries") or {}
    errors = []
    for key, target in sorted((targets or {}).items()):
        live = runtime.get(key, "absent")
        if live == target:
            continue
        reload_hint = " (the disk says %s too: did HAProxy reload?)" % live if live == disk.get(key, "absent") else ""
        errors.append("%s is %s at runtime, expected %s%s" % (key, live, target, reload_hint))
    return errors


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


def live_from(result, key):
    """The runtime value of `key` a haproxy_map or haproxy_map_info result shows, or None."""
    if not isinstance(result, dict) or result.get("failed") or result.get("skipped"):
        return None
    for field in ("runtime_entries", "entries"):
        entries = result.get(field)
        if isinstance(entries, dict) and key in entries:
            return entries[key]
    if "value" in result and result.get("key") in (None, key):
        return result.get("value")
    return None


def disk_from(result, key):
    """The map-file value of `key` a haproxy_map or haproxy_map_info result shows, or None."""
    if not isinstance(result, dict) or result.get("failed") or result.get("skipped"):
        return None
    entries = result.get("disk_entries")
    if isinstance(entries, dict):
        return entries.get(key)
    if "disk_value" in result:
        return result.get("disk_value")
    return None


def node_outcome(node):
    """One word for what happened on a node.

    `node` keys: left (bool: not in the play any more), switched (the switch changed the
    live value), rolled_back, failures (list), fleet_failed, unchanged (value already live),
    checked (check mode).
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
    """{service key: result} of a task looped over the services; {None: result} for a plain task."""
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
    return dict((name, result.get(name)) for name in ("requests", "errors", "error_rate", "judged")) \
        if "judged" in result else None


def _smoke_counts(result):
    return dict(passed=result.get("passed_count", 0), failed=result.get("failed_count", 0)) \
        if "passed_count" in result else None


def node_summary(hostvars, host, key, persist="on_success", check_mode=False, finished=None):
    """What happened on one node that is still in the play, from its own registered results.

    `key` is the map key, or the list of keys of a multi-service release (then every value
    in the summary is a dict of key -> value). The live and disk values come from the last
    step that wrote or read them: the rollback, else PERSIST, else the switch (the disk then
    still has the old value), else READ.
    """
    def var(name, default=None):
        return _hostvar(hostvars, host, name, default)

    keys = _keys(key)
    read, switch = var("_release_read", {}) or {}, var("_release_switch", {}) or {}
    persisted, rollback = var("_release_persist", {}) or {}, var("_release_rollback", {}) or {}
    failures = list(var("_release_failures", []) or [])
    switched, rolled_back = bool(var("_release_switched", False)), bool(var("_release_rolled_back", False))
    runtime = dict((k, live_from(read, k)) for k in keys)
    disk = dict((k, disk_from(read, k)) for k in keys)
    if _ok(switch):
        runtime = dict((k, live_from(switch, k)) for k in keys)
    for result in (persisted, rollback):
        if _ok(result):
            runtime = dict((k, live_from(result, k)) for k in keys)
            disk = dict((k, disk_from(result, k)) for k in keys)
    if (persist == "on_success" or rolled_back) and switched and not check_mode:
        for k in keys:
            if runtime[k] != disk[k]:
                failures.append("INVARIANT: %s%s but disk says %s; a reload would move traffic"
                                % ("" if len(keys) == 1 else k + ": ", "runtime says %s" % runtime[k], disk[k]))
    precheck = var("_release_precheck", {}) or {}
    smoke = {}
    for phase, name in (("PRECHECK", None), ("SMOKE", "_release_smoke"),
                        ("WATCH", "_release_watch"), ("ROLLBACK SMOKE", "_release_rollback_smoke")):
        counts = _per_service(_precheck_stage(precheck, "current") if name is None else var(name, {}) or {},
                              keys, _smoke_counts)
        if counts is not None and (len(keys) == 1 or any(counts.values())):
            smoke[phase] = counts
    outcome = node_outcome(dict(switched=switched, rolled_back=rolled_back, failures=failures,
                                fleet_failed=var("_release_fleet_failed", False), checked=check_mode))
    timings = var("_release_timings", {}) or {}
    run = var("_release_run", {}) or {}
    plan = var("_release_plan") or {}
    targets = plan.get("targets") or {keys[0]: var("_release_target")}
    previous = plan.get("lives") or {keys[0]: var("_release_live")}
    drift = dict((k, None if runtime[k] is None or disk[k] is None else runtime[k] != disk[k]) for k in keys)
    return dict(
        outcome=outcome,
        switched=switched,
        target=_collapse(targets, keys),
        previous=_collapse(previous, keys),
        live_runtime=_collapse(runtime, keys),
        live_disk=_collapse(disk, keys),
        drift=_collapse(drift, keys) if len(keys) == 1 else (
            None if all(value is None for value in drift.values()) else any(drift.values())),
        target_health=_per_service(_precheck_stage(precheck, "health"), keys, _health),
        preflight=_per_service(_precheck_stage(precheck, "preflight"), keys, _preflight),
        traffic=_per_service(var("_release_traffic", {}) or {}, keys, _traffic),
        smoke=smoke,
        switched_at=switch.get("switched_at") if _ran(switch) else None,
        late_by=switch.get("late_by") if _ran(switch) else None,
        failures=failures,
        timings=seconds_since(timings, run.get("started", 0), finished),
        lock_kept=False,
    )


def left_node_summary(hostvars, host, key):
    """The report of a node that left the play: what it was last seen doing."""
    keys = _keys(key)
    switch = _hostvar(hostvars, host, "_release_switch", {}) or {}
    armed = _ok(_hostvar(hostvars, host, "_release_switch_job", {}) or {})
    switched = bool(_ok(switch) and (switch.get("changed") or switch.get("switched_at") is not None))
    # Armed, and the result never came back: it may well have switched.
    unknown = armed and not _ok(switch)
    rolled_back = bool(_hostvar(hostvars, host, "_release_rolled_back", False))

    def last_live(k):
        live = live_from(_hostvar(hostvars, host, "_release_rollback", {}), k) if rolled_back else None
        if live is None:
            live = live_from(switch, k) if _ok(switch) else live_from(_hostvar(hostvars, host, "_release_read", {}), k)
        return live

    live = describe(_collapse(dict((k, last_live(k)) for k in keys), keys)) if len(keys) > 1 else last_live(keys[0])
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
    return dict(outcome=outcome, switched=switched or unknown, live_runtime=None, live_disk=None,
                last_seen_live=live, left=True, lock_kept=locked, failures=[note], note=note,
                switched_at=switch.get("switched_at") if _ok(switch) else None)


def fleet_summary(hostvars, all_hosts, play_hosts, key):
    """{host: node summary}: the node's own `_release_node` when it reported, else what it was last seen doing."""
    summary = {}
    for host in all_hosts:
        node = _hostvar(hostvars, host, "_release_node") if host in play_hosts else None
        summary[host] = dict(node) if isinstance(node, dict) else left_node_summary(hostvars, host, key)
    return summary


def _lives(summary):
    return set(describe(node.get("live_runtime")) if isinstance(node.get("live_runtime"), dict)
               else node.get("live_runtime") for node in summary.values() if not node.get("left"))


def run_outcome(summary):
    """The run's outcome from the fleet summary: succeeded | unchanged | checked | failed | split.

    `split` means the nodes may serve different versions now: a node that left the play after
    its switch, or final live values that differ across the nodes still in the play.
    """
    outcomes = [node.get("outcome") for node in summary.values()]
    if "not rolled back" in outcomes or len(_lives(summary)) > 1:
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
    head = "%s to %s failed" % (action, target)
    if run_outcome(summary) == "split":
        parts = []
        for host, node in sorted(summary.items()):
            if node.get("left"):
                parts.append("%s %s" % (host, node.get("outcome")))
            else:
                parts.append("%s %s (live %s)" % (host, node.get("outcome"), describe(node.get("live_runtime"))))
        head += "; the fleet is split: %s" % ", ".join(parts)
    elif outcomes and all(outcome == "rolled back" for outcome in outcomes.values()):
        head += "; every node was rolled back to %s" % previous
    elif "rolled back" in outcomes.values():
        head += "; %s" % ", ".join("%s %s" % (host, outcome) for host, outcome in sorted(outcomes.items()))
    elif not any(node.get("switched") for node in summary.values()):
        head += ", nothing was switched"
    reasons = ["%s: %s" % (host, failure) for host, node in summary.items() for failure in node.get("failures") or []]
    return "%s: %s" % (head, "; ".join(reasons) if reasons else "see the report")


def node_status(map_info, key, lock_info=None, health_results=None):
    """status.yml's report of one node: values, drift, the lock, and whether the lock explains the drift."""
    runtime, disk = live_from(map_info, key), disk_from(map_info, key)
    drift = runtime is not None and disk is not None and runtime != disk or (runtime is None) != (disk is None)
    lock_info = lock_info if isinstance(lock_info, dict) else {}
    holder = lock_info.get("holder")
    lock = dict(held=bool(lock_info.get("held")), holder=holder, age=lock_info.get("age"))
    status = dict(runtime=runtime, disk=disk, drift=bool(drift), drift_keys=(map_info or {}).get("drift_keys", []),
                  lock=lock, drift_reason=None, backends={})
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
    """Whether the nodes run one value: {consistent, runtime: {value: [hosts]}, disk: {...}, missing, message}."""
    runtime, disk = {}, {}
    for host, status in sorted((statuses or {}).items()):
        runtime.setdefault(str(status.get("runtime")), []).append(host)
        disk.setdefault(str(status.get("disk")), []).append(host)
    missing = [host for host in all_hosts if host not in play_hosts]
    consistent = len(runtime) <= 1 and not missing
    if len(runtime) > 1:
        message = "the fleet is split: nodes disagree on the live value (%s)" % "; ".join(
            "%s on %s" % (value, ", ".join(hosts)) for value, hosts in sorted(runtime.items()))
    elif missing:
        message = "could not read %s: the fleet may be split" % ", ".join(missing)
    else:
        message = "every node runs %s" % (next(iter(runtime)) if runtime else "nothing")
    return dict(consistent=consistent, runtime=runtime, disk=disk, missing=missing, message=message)


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


def switch_spread(summary):
    """{first, last, spread_ms, late_ms}: when the nodes switched, from each node's `switched_at`."""
    times = sorted(float(node["switched_at"]) for node in summary.values()
                   if isinstance(node, dict) and node.get("switched_at") is not None)
    if not times:
        return dict(nodes=0, first=None, last=None, spread_ms=None)
    return dict(nodes=len(times), first=times[0], last=times[-1], spread_ms=round((times[-1] - times[0]) * 1000, 1))


def switch_lead(hosts, forks, configured=0, module_seconds=0):
    """Seconds between choosing the switch instant and the instant itself.

    Every node's switch must be armed before the instant. Arming runs in batches of `forks`
    nodes, each about as long as one module run (`module_seconds`, measured when the lock was
    taken; at least half a second), with half a second to spare.
    """
    if configured and float(configured) > 0:
        return float(configured)
    batches = max(1, int(math.ceil(max(1, int(hosts)) / float(max(1, int(forks or 5))))))
    per_batch = max(0.5, 1.5 * float(module_seconds or 0))
    return round(0.5 + batches * per_batch, 1)


def controller(_value=None):
    """{controller, controller_pid}: this controller's name and the ansible-playbook process.

    Templating runs in a forked worker; its parent is the ansible-playbook process, which
    lives as long as the run does (a module's pid does not).
    """
    parent = multiprocessing.parent_process()
    return dict(controller=socket.getfqdn(), controller_pid=parent.pid if parent is not None else os.getpid())


def clock_offset(node_epoch, before, after, tolerance):
    """None when the node's clock reading lies in [before, after] give or take `tolerance`; else the offset."""
    node_epoch, before, after = float(node_epoch), float(before), float(after)
    if node_epoch < before - float(tolerance):
        return round(node_epoch - before, 3)
    if node_epoch > after + float(tolerance):
        return round(node_epoch - after, 3)
    return None


class FilterModule(object):
    def filters(self):
        return {
            "release_refused_names": refused_names,
            "release_body_regex": body_regex,
            "release_input_errors": input_errors,
            "release_services": services,
            "release_describe": describe,
            "release_report_keys": report_keys,
            "release_read_plan": read_plan,
            "release_lock_entries": lock_entries,
            "release_precheck_errors": precheck_errors,
            "release_precheck_services": precheck_services,
            "release_readback_errors": readback_errors,
            "release_failure_message": failure_message,
            "release_watch_errors": watch_errors,
            "release_fleet_reasons": fleet_reasons,
            "release_already_live": already_live,
            "release_live_from": live_from,
            "release_disk_from": disk_from,
            "release_node_outcome": node_outcome,
            "release_fleet_summary": fleet_summary,
            "release_node_summary": node_summary,
            "release_run_outcome": run_outcome,
            "release_run_message": run_message,
            "release_seconds_since": seconds_since,
            "release_node_status": node_status,
            "release_fleet_status": fleet_status,
            "release_switch_spread": switch_spread,
            "release_switch_lead": switch_lead,
            "release_controller": controller,
            "release_clock_offset": clock_offset,
        }
