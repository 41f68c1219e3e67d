# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release engine's steps on one node (private to the release role).

PREPARE is one module run per node (plugins/modules/release_prepare.py): read every key of the
run live and on disk with the release lock, decide each key's target, refuse what cannot be
switched here (no target, the key missing, drift, another live value than expected), take the
lock recording the run, then the precheck (health gate, per-server preflight, the current path
through this node's listener). A node that already runs every target at runtime and on disk,
with no lock held, has nothing to change: it is neither locked nor checked.

The pure parts (the plan from a read, the node's own refusals, the precheck's services) are
also the controller's: plugins/plugin_utils/release_engine.py imports them from here, so the
rules are written once.
"""

from __future__ import annotations

import re

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import (
    LockError,
    LockHeldError,
    acquire,
    lock_info,
    run_fields,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import read_map_info
from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import (
    PrecheckOptionError,
    prepare_services,
    run_precheck,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIError


class SmokeBodiesError(ValueError):
    """release_smoke_bodies is not a dict of backend -> regex."""


def default_body_regex(backend):
    """What a backend answers when release_smoke_bodies does not name it: version=<name without backend_>."""
    return "version=" + re.escape(re.sub(r"^backend_", "", str(backend)))


def body_regex(backend, bodies=None):
    """The regex `backend`'s smoke answer must match."""
    bodies = bodies or {}
    if not isinstance(bodies, dict):
        text = str(bodies)
        raise SmokeBodiesError("release_smoke_bodies must be a dict of backend -> regex, got %s"
                               % (text if len(text) <= 80 else text[:77] + "..."))
    if backend in bodies and bodies[backend] not in (None, ""):
        return str(bodies[backend])
    return default_body_regex(backend)


def describe(values):
    """A dict of key -> value for messages: the value alone for one key, 'key=value, ...' for more."""
    if not isinstance(values, dict):
        return "" if values is None else str(values)
    if len(values) == 1:
        return str(next(iter(values.values())))
    return ", ".join("%s=%s" % (key, value) for key, value in sorted(values.items()))


def lock_entries(previous, targets):
    """{key: {previous, target}} of a multi-service run, for its lock record (read back by read_plan)."""
    return dict((key, dict(previous=(previous or {}).get(key, ""), target=target))
                for key, target in sorted((targets or {}).items()))


def _recorded_value(record):
    """Whether a lock record (or one key's entry in it) names a previous value to return to."""
    return isinstance(record, dict) and isinstance(record.get("previous"), str) and bool(record["previous"])


def read_plan(read, lock_seen, services_list, run, lock_force=False):
    """From the read: every key's live and disk value, its target and compare-and-set source.

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


def key_refusal(plan, key, map_name, allow_drift=False):
    """Why this node may not switch `key`, from its own read alone; None when it may."""
    recovered = plan.get("recovery_previous") or {}
    target, live = plan["targets"][key], plan["lives"].get(key, "")
    disk, current = plan["disks"].get(key, ""), plan["currents"].get(key, "")
    explained = key in recovered and disk == recovered[key] and \
        live in ((plan.get("recovery_targets") or {}).get(key, ""), recovered[key])
    if not target:
        return "no target: name the backend to make live (release_target)"
    if not live:
        return "key %s is not in the live map %s" % (key, map_name)
    if not (allow_drift or disk == live or explained):
        return ("drift: %s is %s at runtime but %s on disk, so a reload would move traffic; persist or "
                "fix it first (status.yml shows it, persist.yml writes the live value) or set "
                "release_allow_drift" % (key, live, disk or "absent"))
    if live != current and key not in recovered:
        return "%s is %s here, expected %s" % (key, live, current)
    return None


def node_refusals(plan, map_name, allow_drift=False):
    """Why this node may not switch, per key, from its own read alone (empty: it may).

    Whether the nodes agree on the live value is the fleet's question (release_engine.precheck_errors).
    """
    refusals = (key_refusal(plan, key, map_name, allow_drift) for key in plan.get("targets") or {})
    return [refusal for refusal in refusals if refusal]


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


def already_live(plan, lock_seen):
    """Whether this node runs every target at runtime and on disk, with no release lock held."""
    targets = plan.get("targets") or {}
    if not targets or not all(targets.values()) or (lock_seen or {}).get("held"):
        return False
    return all(plan["lives"].get(key) == target and plan["disks"].get(key) == target for key, target in targets.items())


def lock_record(plan, services, run, map_name):
    """What the lock records about this run on this node (release_lock_info and status.yml read it)."""
    keys = [service["key"] for service in services]
    details = {"entries": lock_entries(plan["currents"], plan["targets"])} if len(keys) > 1 else {}
    fields = dict(controller=run.get("controller"), controller_pid=run.get("controller_pid"),
                  started=run.get("started_at"), phase="precheck", map=map_name, key=",".join(keys),
                  previous=describe(plan["currents"]), target=describe(plan["targets"]))
    return run_fields(fields, details)


class PrepareFailed(Exception):
    """A stage of PREPARE refused this node; `stage` names it (READ, LOCK, PRECHECK)."""

    def __init__(self, stage, message):
        super(PrepareFailed, self).__init__(message)
        self.stage = stage


def prepare(client, map_name, disk_text, services, run, lock=None, allow_drift=False, check_mode=False,
            precheck=None, disk_error=None):
    """PREPARE on this node; returns the result, with `failed`, `stage` and `msg` when a stage refused.

    `services` are the run's services (key, target, backends, expected_current, smoke_*,
    min_healthy); `run` the run's record (owner, action, controller, controller_pid,
    started_at); `lock` {path, force, stale_after} or None when the run takes no lock;
    `precheck` the precheck's options (run_precheck's keywords plus `preflight` and
    `smoke_current`). `disk_text` is the map file's text, None when it cannot be read
    (`disk_error` says why when that matters).
    """
    precheck = dict(precheck or {})
    preflight, smoke_current = precheck.pop("preflight", True), precheck.pop("smoke_current", True)
    result = dict(changed=False, lock_acquired=False, lock_taken=False, already_live=False, holder=None,
                  precheck=None, stage=None)
    try:
        if disk_error:
            raise PrepareFailed("READ", disk_error)
        try:
            result.update(read_map_info(client, map_name, disk_text, [service["key"] for service in services]))
        except RuntimeAPIError as exc:
            raise PrepareFailed("READ", str(exc))
        try:
            result["lock"] = lock_info(lock["path"]) if lock else {}
        except OSError as exc:
            raise PrepareFailed("READ", "cannot read release lock %s: %s (run as a user that may read it)"
                                % (lock["path"], exc))
        plan = read_plan(result, result["lock"], services, run, bool(lock and lock.get("force")))
        result["plan"] = plan
        if already_live(plan, result["lock"]):
            result["already_live"] = True
            return result
        refusals = node_refusals(plan, map_name, allow_drift)
        if refusals:
            raise PrepareFailed("PRECHECK", "; ".join(refusals))
        try:
            checked = prepare_services(precheck_services(services, plan["targets"], plan["currents"], plan["lives"],
                                                         preflight, smoke_current))
        except (PrecheckOptionError, SmokeBodiesError) as exc:
            raise PrepareFailed("PRECHECK", str(exc))
        if lock:
            try:
                taken = acquire(lock["path"], run["owner"], lock_record(plan, services, run, map_name),
                                force=bool(lock.get("force")), stale_after=int(lock.get("stale_after") or 0),
                                check_mode=check_mode)
            except LockHeldError as exc:
                result["holder"] = exc.holder
                raise PrepareFailed("LOCK", str(exc))
            except LockError as exc:
                raise PrepareFailed("LOCK", str(exc))
            except OSError as exc:
                raise PrepareFailed("LOCK", "cannot change release lock %s: %s (is its directory writable by this "
                                            "user?)" % (lock["path"], exc))
            result.update(lock_acquired=True, lock_taken=not check_mode, holder=taken["holder"],
                          taken_over=taken["taken_over"], changed=taken["changed"] and not check_mode)
        checks = run_precheck(client, checked, **precheck)
        result["precheck"] = checks
        if checks["failed"]:
            raise PrepareFailed("PRECHECK", checks["msg"])
    except PrepareFailed as exc:
        result.update(failed=True, stage=exc.stage, msg=str(exc))
        return result
    result["msg"] = "prepared: %s" % checks["msg"]
    return result
