# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release engine's steps on one node (private to the release role).

PREPARE is one module run per node (plugins/modules/release_step.py, step=prepare): read every key of the
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
import time

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


# A service of the run as the step module (release_step) takes it (its `services` option).
SERVICE_SPEC = dict(
    key=dict(type="str", required=True, no_log=False),
    target=dict(type="str", default=""),
    backends=dict(type="list", elements="str", default=[]),
    expected_current=dict(type="str", default=""),
    smoke_url=dict(type="str", required=True),
    smoke_resolve=dict(type="str"),
    smoke_headers=dict(type="dict", default={}),
    smoke_status_codes=dict(type="list", elements="int", default=[200]),
    smoke_bodies=dict(type="dict", default={}),
    smoke_send=dict(type="str"),
    min_healthy=dict(type="raw"),
)


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
    persist = run.get("action") == "persist"
    for service in services_list:
        key, live = service["key"], lives[service["key"]]
        other = [backend for backend in service.get("backends") or [] if backend != live]
        if persist:
            # Persist writes what is live; release_target only names what must be live.
            targets[key] = live
            currents[key] = service.get("target") or service.get("expected_current") or live
            continue
        targets[key] = service.get("target") or previous.get(key) or \
            (other[0] if other and run.get("action") == "rollback" else "")
        currents[key] = service.get("expected_current") or live
    expected = dict((service["key"], bool(service.get("expected_current"))) for service in services_list)
    return dict(lives=lives, disks=disks, targets=targets, currents=currents, recovery=recovery,
                recovery_previous=previous, recovery_targets=recovery_targets, expected_current_set=expected,
                persist=persist)


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
    # Drift is what persist is for: it writes the live value to the disk.
    if not (allow_drift or plan.get("persist") or disk == live or explained):
        return ("drift: %s is %s at runtime but %s on disk, so a reload would move traffic; persist or "
                "fix it first (status.yml shows it, persist.yml writes the live value) or set "
                "release_allow_drift" % (key, live, disk or "absent"))
    if live != current and key not in recovered:
        if plan.get("persist"):
            return "refusing to persist: %s is %s here but release_target is %s; nothing was written" % (key, live, current)
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
            send=service.get("smoke_send"),
            headers=service.get("smoke_headers") or {}, status_code=service.get("smoke_status_codes") or [200],
            body_regex=body_regex(targets[key], service.get("smoke_bodies")),
            current_body_regex=body_regex(currents[key], service.get("smoke_bodies")),
            min_healthy=service.get("min_healthy") if service.get("min_healthy") not in ("", None) else None,
            preflight=bool(preflight) and moves, current=bool(smoke_current) and moves))
    return checked


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


def watch_items(services_list, targets, baseline_by_key, smoke_by_key, timeout=5, validate_certs=True):
    """haproxy_backend_traffic's input for the watch window, one item per service, in their order.

    `baseline_by_key` holds each service's baseline result (its `counters`).

    The engine's own smoke requests reach the target backend through the same listener as
    real users, so the gate subtracts them exactly: the SMOKE requests (`smoke_by_key`, each
    service's http_smoke result; all answered before the watch starts) as `own_requests`, and the
    window's smoke requests, which the traffic module sends itself between its reads. A backend
    that several services target is watched once (its first service's item, with every one of
    their smoke requests and the earliest baseline); the others have watch false, since a
    second watch of it would count the first one's smoke requests as users.
    """
    plan, seen = [], set()
    for service in services_list or []:
        backend = (targets or {}).get(service["key"])
        item = dict(key=service["key"], backend=backend, watch=backend not in seen, baseline=None,
                    own_requests={}, smoke=[], shared_with=[])
        seen.add(backend)
        plan.append(item)
        if not item["watch"]:
            continue
        sharing = [other for other in services_list if (targets or {}).get(other["key"]) == backend]
        item["shared_with"] = [other["key"] for other in sharing if other["key"] != service["key"]]
        read = [(baseline_by_key.get(other["key"]) or {}).get("counters") for other in sharing]
        read = [counters for counters in read if isinstance(counters, dict)]
        if read:
            item["baseline"] = min(read, key=lambda counters: float(counters.get("read_at") or 0))
        for other in sharing:
            sent = ((smoke_by_key.get(other["key"]) or {}).get("summary") or {}).get("status_counts") or {}
            for status, count in sent.items():
                item["own_requests"][str(status)] = item["own_requests"].get(str(status), 0) + int(count)
            item["smoke"].append(dict(
                url=other.get("smoke_url"), resolve=other.get("smoke_resolve") or None, send=other.get("smoke_send"),
                headers=other.get("smoke_headers") or {}, status_code=other.get("smoke_status_codes") or [200],
                body_regex=body_regex(backend, other.get("smoke_bodies")),
                timeout=float(timeout), validate_certs=bool(validate_certs)))
    return plan


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


class StepFailed(Exception):
    """A stage of a step failed on this node; `stage` names it (READ, LOCK, PRECHECK, SWITCH, SMOKE...)."""

    def __init__(self, stage, message):
        super(StepFailed, self).__init__(message)
        self.stage = stage


PREVIEW_SUFFIX = ".preview"


def preview_key(key):
    """The map key a test listener routes by for `key` (`active.preview`, `shop.example.com.preview`)."""
    return key + PREVIEW_SUFFIX


def preview(client, map_name, services, targets, lives, listener, smoke):
    """PREVIEW: the new version through HAProxy itself, before any user: each moving key's
    `<key>.preview` entry is set to its target at runtime, each service's smoke test is sent
    to the node's test listener (`listener`, host:port), then the entries are removed again,
    whatever happened (they are runtime only; a reload drops them too).

    Returns each service's smoke result (with `key`, as the SMOKE stage has them), None when
    no key moves. A target that answers its servers' preflight but not through HAProxy (a
    rewrite, an ACL, a header rule) fails here, while users still reach the old version.
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke as http
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_change import MapStepError, change_map

    moving = [service for service in services if targets[service["key"]] != lives[service["key"]]]
    if not moving:
        return None
    base = dict(map=map_name, map_file=None, persist=False, backup=False, switch_at=None, expected_value=None,
                entries=None, expected_entries=None, release_lock=None)
    added, errors = [], []
    try:
        for service in moving:
            key = preview_key(service["key"])
            try:
                change_map(client, dict(base, key=key, value=targets[service["key"]], state="present"))
            except MapStepError as exc:
                raise StepFailed("PRECHECK", "test listener: cannot set %s: %s" % (key, exc))
            added.append(key)
        return _smoke_services(http.run_smoke, [dict(service, smoke_resolve=listener) for service in moving],
                               targets, smoke)
    finally:
        for key in added:
            try:
                change_map(client, dict(base, key=key, value=None, state="absent"))
            except MapStepError as exc:
                errors.append("%s: %s" % (key, exc))
        if errors:
            raise StepFailed("PRECHECK", "test listener: cannot remove %s (only the test listener routes by it)"
                             % "; ".join(errors))


def prepare(client, map_name, disk_text, services, run, lock=None, allow_drift=False, check_mode=False,
            precheck=None, disk_error=None, test_listener=None, canary=False):
    """PREPARE on this node; returns the result, with `failed`, `stage` and `msg` when a stage refused.

    `services` are the run's services (key, target, backends, expected_current, smoke_*,
    min_healthy); `run` the run's record (owner, action, controller, controller_pid,
    started_at); `lock` {path, force, stale_after} or None when the run takes no lock;
    `precheck` the precheck's options (run_precheck's keywords plus `preflight` and
    `smoke_current`). `disk_text` is the map file's text, None when it cannot be read
    (`disk_error` says why when that matters). With `test_listener` (host:port of this node's
    test listener), a passed precheck is followed by the PREVIEW (not in check mode: it sets
    runtime entries). With `canary` (release_strategy canary) the canary keys are read too: the
    plan's `weights` are each key's `<key>.weight` now, and a canary already running (a weight
    above 0) is refused.
    """
    precheck = dict(precheck or {})
    preflight, smoke_current = precheck.pop("preflight", True), precheck.pop("smoke_current", True)
    result = dict(changed=False, lock_acquired=False, lock_taken=False, already_live=False, holder=None,
                  precheck=None, stage=None)
    try:
        if disk_error:
            raise StepFailed("READ", disk_error)
        keys = [service["key"] for service in services]
        try:
            result.update(read_map_info(client, map_name, disk_text,
                                        keys + ([canary_keys(key)[1] for key in keys] if canary else [])))
        except RuntimeAPIError as exc:
            raise StepFailed("READ", str(exc))
        try:
            result["lock"] = lock_info(lock["path"]) if lock else {}
        except OSError as exc:
            raise StepFailed("READ", "cannot read release lock %s: %s (run as a user that may read it)"
                             % (lock["path"], exc))
        plan = read_plan(result, result["lock"], services, run, bool(lock and lock.get("force")))
        result["plan"] = plan
        if canary:
            plan["weights"] = dict((key, (result.get("entries") or {}).get(canary_keys(key)[1], "")) for key in keys)
            running = ["%s is %s" % (canary_keys(key)[1], weight) for key, weight in sorted(plan["weights"].items())
                       if weight not in ("", "0")]
            if running and run.get("action") == "rollback":
                # A canary left by a run that died mid-step: going back means ending the canary, the
                # live key stays where it is (every other user is already on it).
                plan["targets"] = dict((key, plan["lives"][key] if plan["weights"][key] not in ("", "0") else target)
                                       for key, target in plan["targets"].items())
                plan["end_canary"] = True
            elif running:
                raise StepFailed("PRECHECK", "a canary is already running here (%s): end it first (rollback.yml ends "
                                             "it) - then start this release" % ", ".join(running))
        if already_live(plan, result["lock"]) and not plan.get("end_canary"):
            result["already_live"] = True
            return result
        refusals = node_refusals(plan, map_name, allow_drift)
        if refusals:
            raise StepFailed("PRECHECK", "; ".join(refusals))
        try:
            checked = prepare_services(precheck_services(services, plan["targets"], plan["currents"], plan["lives"],
                                                         preflight, smoke_current))
        except (PrecheckOptionError, SmokeBodiesError) as exc:
            raise StepFailed("PRECHECK", str(exc))
        if lock:
            try:
                taken = acquire(lock["path"], run["owner"], lock_record(plan, services, run, map_name),
                                force=bool(lock.get("force")), stale_after=int(lock.get("stale_after") or 0),
                                check_mode=check_mode)
            except LockHeldError as exc:
                result["holder"] = exc.holder
                raise StepFailed("LOCK", str(exc))
            except LockError as exc:
                raise StepFailed("LOCK", str(exc))
            except OSError as exc:
                raise StepFailed("LOCK", "cannot change release lock %s: %s (is its directory writable by this "
                                         "user?)" % (lock["path"], exc))
            result.update(lock_acquired=True, lock_taken=not check_mode, holder=taken["holder"],
                          taken_over=taken["taken_over"], changed=taken["changed"] and not check_mode)
        if plan["persist"]:
            # Persist writes values that are live already: no backend changes, nothing to prove.
            result["msg"] = "prepared: %s is live, to be written to disk" % describe(plan["targets"])
            return result
        checks = run_precheck(client, checked, **precheck)
        result["precheck"] = checks
        if checks["failed"]:
            raise StepFailed("PRECHECK", checks["msg"])
        if test_listener and not check_mode:
            smoke = dict(requests=precheck.get("requests"), timeout=precheck.get("request_timeout"),
                         validate_certs=precheck.get("validate_certs", True))
            result["preview"] = preview(client, map_name, services, plan["targets"], plan["lives"], test_listener, smoke)
            failed = [(item["key"], item) for item in result["preview"] or [] if not item["passed"]]
            if failed:
                keys = [service["key"] for service in services]
                raise StepFailed("PRECHECK", "test listener %s: %s; no user was sent there"
                                 % (test_listener, _service_message(failed, keys)))
    except StepFailed as exc:
        result.update(failed=True, stage=exc.stage, msg=str(exc))
        return result
    result["msg"] = "prepared: %s" % checks["msg"]
    return result


# -- SWITCH AND PROVE ---------------------------------------------------------------------------

INSUFFICIENT_HINT = ("Fewer real requests than release_min_requests (%s) reached the new version in the watch window, "
                     "so its error rate was not judged: lengthen release_watch_seconds, lower release_min_requests, "
                     "or set release_insufficient_traffic=pass to accept a release nobody used")


def _service_message(items, keys):
    """'key: msg; ...' of the failed items (the message alone for a single service)."""
    return "; ".join("%s: %s" % (key, item["msg"]) if len(keys) > 1 else item["msg"]
                     for key, item in items)


def _smoke_services(run_smoke, services, values, smoke):
    """Each service's smoke test of `values` (key -> backend) through this node's listener, as a list with `key`."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke as http

    smoke = dict(smoke or {})
    tls = http.LazyTLSContext(bool(smoke.get("validate_certs", True)))
    checks = []
    for service in services:
        target = http.parse_url(service["smoke_url"], http.ENGINE_SCHEMES)
        connect, resolve_text = http.resolve_address(service["smoke_resolve"], target) \
            if service.get("smoke_resolve") else (None, None)
        tcp = dict(tcp_send=service.get("smoke_send") or None) if target.scheme == "tcp" else {}
        checks.append(dict(run_smoke(
            target.url, requests=int(smoke.get("requests") or 1), resolve_text=resolve_text,
            headers=http.validate_headers(service.get("smoke_headers") or {}),
            status_codes=http.validate_status_codes(service.get("smoke_status_codes") or [200]),
            body_regex=http.compile_body_regex(body_regex(values[service["key"]], service.get("smoke_bodies"))),
            timeout=float(smoke.get("timeout") or 5), connect_address=connect,
            validate_certs=bool(smoke.get("validate_certs", True)), follow_redirects="none", use_proxy=True,
            tls_context=tls, **tcp), key=service["key"]))
    for check in checks:
        check["failed"] = not check["passed"]  # as http_smoke's task result says it
    return checks


def _prove(client, result, services, targets, baselines, smoke, watch):
    """The new version's smoke test through this node's listener, then the watch window (`watch`, or None)."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke as http
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import traffic

    keys = [service["key"] for service in services]
    timeout = float(smoke.get("timeout") or 5)
    result["smoke"] = _smoke_services(http.run_smoke, services, targets, smoke)
    checks = dict((item["key"], item) for item in result["smoke"])
    failed = [(key, checks[key]) for key in keys if not checks[key]["passed"]]
    if failed:
        raise StepFailed("SMOKE", _service_message(failed, keys))
    if watch is None:
        return
    watched, failed, insufficient = {}, [], []
    for item in watch_items(services, targets, baselines, checks, timeout, smoke.get("validate_certs", True)):
        if not item["watch"]:
            continue
        try:
            watched[item["key"]] = traffic.watch_backend(
                client, item["backend"], baseline=traffic.normalize_baseline(item["baseline"])
                if item["baseline"] else None, duration=float(watch["seconds"]),
                interval=min(float(watch.get("interval") or 1), 1.0),
                max_error_rate=float(watch.get("max_error_rate", 1.0)), min_requests=int(watch.get("min_requests", 20)),
                retry_for=timeout, own=traffic.own_counters(item["own_requests"]),
                smoke=traffic.smoke_sender(item["smoke"]) if item["smoke"] else None,
                smoke_interval=float(watch.get("interval") or 1), insufficient_traffic="pass")
        except (RuntimeAPIError, traffic.TrafficOptionError) as exc:
            watched[item["key"]] = dict(passed=False, msg=str(exc), backend=item["backend"])
        outcome = watched[item["key"]]
        if outcome.get("verdict") == "insufficient":
            insufficient.append(outcome["msg"])
        elif not outcome.get("passed"):
            failed.append((item["key"], outcome))
    # Each as haproxy_backend_traffic's task result says it (failed unless it passed).
    result["traffic"] = [dict(watched[key], key=key, failed=not watched[key].get("passed"))
                         for key in keys if key in watched]
    if failed:
        raise StepFailed("SMOKE", _service_message(failed, keys))
    if insufficient and watch.get("insufficient_traffic", "fail") != "pass":
        raise StepFailed("SMOKE", "%s. %s" % ("; ".join(insufficient), INSUFFICIENT_HINT % watch.get("min_requests", 20)))


def switch_and_prove(client, map_name, targets, lives, services, bulk=False, switch_at=None, lock=None,
                     smoke=None, watch=None, disk_text=None, canary_weight=None):
    """SWITCH AND PROVE on this node; returns the result, `failed`/`stage`/`msg` when a stage failed.

    The compare-and-set switch from `lives` to `targets` (armed for `switch_at`, judged at the
    instant, read back), recording the phase `switching` in the lock first; the live-traffic
    baseline of each target; the new version's smoke test through this node's listener, every
    service; then, when `watch` asks for seconds, the watch window judging real users' requests
    (the engine's own smoke requests taken out) and a last read of the live map (a reload during
    the window would have put the disk's values back). `smoke` holds requests, timeout and
    validate_certs; `watch` seconds, interval, max_error_rate, min_requests and
    insufficient_traffic; `services` the run's services (key, smoke_*). After a canary,
    `canary_weight` (the last step's weight) promotes: the same commit sets every moving key's
    `<key>.weight` back to 0, a compare-and-set on that weight too.
    """
    # Imported here: a run that fails before its smoke test needs no HTTP client.
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke as http
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import traffic

    from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_change import MapStepError, change_map

    smoke, watch = dict(smoke or {}), dict(watch or {})
    keys = [service["key"] for service in services]
    watching = float(watch.get("seconds") or 0) > 0
    result = dict(changed=False, switched=False, switch=None, baseline=None, smoke=None, traffic=None,
                  watch_verify=None, stage=None, warnings=[])
    params = dict(map=map_name, map_file=None, persist=False, backup=False, switch_at=switch_at, state="present",
                  key=None, value=None, expected_value=None, entries=None, expected_entries=None,
                  release_lock=dict(path=lock["path"], owner=lock["owner"], phase="switching") if lock else None)
    if canary_weight is not None:
        # Promote: the new live value and the end of the canary share, one atomic commit.
        params.update(entries=dict(targets, **canary_entries(services, targets, lives, 0)),
                      expected_entries=dict(lives, **dict((canary_keys(key)[1], str(int(canary_weight)))
                                                          for key in keys if targets[key] != lives[key])))
    elif bulk:
        params.update(entries=dict(targets), expected_entries=dict(lives))
    else:
        params.update(key=keys[0], value=targets[keys[0]], expected_value=lives[keys[0]])
    try:
        refusal = None
        try:
            switch = change_map(client, params, warn=result["warnings"].append)
        except MapStepError as exc:
            switch, refusal = exc.result, str(exc)
        # Whatever happened, the report needs what HAProxy serves now (a refusal: what it held).
        result["switch"] = switch
        result["switched"] = switch.get("switched_at") is not None or bool(switch.get("changed"))
        result["changed"] = result["switched"]
        if refusal:
            raise StepFailed("SWITCH", refusal)
        errors = readback_errors(targets, switch)
        if errors:
            raise StepFailed("SWITCH", "; ".join(errors))

        timeout = float(smoke.get("timeout") or 5)
        baselines = {}
        if watching:
            for service in services:
                try:
                    baselines[service["key"]] = traffic.watch_backend(client, targets[service["key"]],
                                                                      retry_for=timeout)
                except RuntimeAPIError as exc:
                    raise StepFailed("SWITCH", "%s: %s" % (service["key"], exc) if len(keys) > 1 else str(exc))
            result["baseline"] = [dict(baselines[key], key=key) for key in keys]

        failures = []
        try:
            _prove(client, result, services, targets, baselines, smoke, watch if watching else None)
        except StepFailed as exc:
            failures.append((exc.stage, str(exc)))
        except (http.SmokeOptionError, SmokeBodiesError) as exc:
            failures.append(("SMOKE", str(exc)))
        if watching:
            # Also after a failed window: a reload during it (the disk's values back) is its own finding.
            try:
                result["watch_verify"] = read_map_info(client, map_name, disk_text, keys)
                moved = watch_errors(targets, result["watch_verify"])
                if moved:
                    failures.append(("WATCH VERIFY", "; ".join(moved)))
            except RuntimeAPIError as exc:
                result["watch_verify"] = dict(failed=True, msg=str(exc))
                failures.append(("WATCH VERIFY", str(exc)))
        if failures:
            result["failures"] = ["%s: %s" % failure for failure in failures]
            raise StepFailed(failures[0][0], failures[0][1] if len(failures) == 1 else "; ".join(result["failures"]))
    except StepFailed as exc:
        result.update(failed=True, stage=exc.stage, msg=str(exc))
        result.setdefault("failures", ["%s: %s" % (exc.stage, exc)])
        return result
    result["msg"] = "switched to %s, the new version answers" % describe(targets)
    return result


# -- FINISH -------------------------------------------------------------------------------------


def drain_previous(client, keys, targets, previous, drain, now=None):
    """DRAIN: wait until the backends this release left hold no session, up to `drain['until']`.

    `drain` holds `until` (epoch seconds: the fleet's verdict plus release_drain_timeout, so
    nodes that reach FINISH later in the batches of forks wait less, and every node's wait ends
    at the same instant) and `shutdown` (then close what is left: `shutdown sessions server`).
    A backend that stays a target of another key of the release is not drained. Returns
    {key: report} (module_utils/drain.py's report, or `error`), None when nothing was left.
    A drain never fails the release: the new version is live and persisted, and the report says
    what the old one still holds.
    """

    from ansible_collections.bluegreen.haproxy.plugins.module_utils.drain import DrainOptionError, drain_backends

    left = dict((key, previous[key]) for key in keys
                if previous.get(key) and previous[key] != targets.get(key) and previous[key] not in targets.values())
    if not left:
        return None
    timeout = max(0.0, float(drain.get("until") or 0) - (time.time() if now is None else now))
    try:
        reports = drain_backends(client, list(left.values()), timeout, shutdown=bool(drain.get("shutdown")))
    except (DrainOptionError, RuntimeAPIError) as exc:
        return dict((key, dict(backend=backend, error=str(exc))) for key, backend in left.items())
    by_backend = dict((report["backend"], report) for report in reports)
    return dict((key, by_backend[backend]) for key, backend in left.items())


def finish(client, map_name, map_file, services, outcome, targets, previous, switched=False, persist=True, bulk=False,
           lock=None, smoke=None, backup=None, module=None, drain=None):
    """FINISH on this node; returns the result, `failed`/`stage`/`msg` when a stage failed.

    `outcome` is the fleet's verdict: `persist` (every node passed: write `targets` to the map
    file, a compare-and-set that never moves traffic, unless `persist` is false), `rollback`
    (a node failed: when this node `switched`, put `previous` back at runtime and on disk, read
    it back and smoke-test the old version), or `release` (nothing to change). The release lock
    is released last in every case, also after a failure (the report says what is live).
    `module` (the AnsibleModule) commits the map file through atomic_move. With `drain`
    (release_drain_timeout), a persisted release then drains the backends it left
    (drain_previous), before the lock is released.
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke as http
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import release as release_lock
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_change import MapStepError, change_map

    keys = [service["key"] for service in services]
    result = dict(changed=False, persist=None, rollback=None, rollback_smoke=None, rolled_back=False, drain=None,
                  unlocked=False, stage=None, warnings=[])
    base = dict(map=map_name, map_file=map_file, persist=True, backup=bool(backup), switch_at=None, state="present",
                key=None, value=None, expected_value=None, entries=None, expected_entries=None, release_lock=None)

    def change(values, expected, phase=None):
        params = dict(base, release_lock=dict(path=lock["path"], owner=lock["owner"], phase=phase)
                      if lock and phase else None)
        if bulk:
            params.update(entries=dict(values), expected_entries=dict(expected) if expected else None)
        else:
            params.update(key=keys[0], value=values[keys[0]], expected_value=expected[keys[0]] if expected else None)
        return change_map(client, params, backup=backup, warn=result["warnings"].append, module=module)

    try:
        if outcome == "persist" and persist:
            # The values are live already: a compare-and-set on them writes the file and never moves traffic.
            try:
                result["persist"] = change(targets, targets)
            except MapStepError as exc:
                result["persist"] = exc.result
                raise StepFailed("PERSIST", str(exc))
            result["changed"] = bool(result["persist"].get("changed"))
        elif outcome == "rollback" and switched:
            try:
                result["rollback"] = change(previous, None, phase="rolling back")
            except MapStepError as exc:
                result["rollback"] = exc.result
                raise StepFailed("ROLLBACK", str(exc))
            result["changed"] = True
            errors = readback_errors(previous, result["rollback"], "ROLLBACK VERIFY", "after the rollback")
            if errors:
                raise StepFailed("ROLLBACK", "; ".join(errors))
            result["rolled_back"] = True
            try:
                result["rollback_smoke"] = _smoke_services(http.run_smoke, services, previous, smoke)
            except (http.SmokeOptionError, SmokeBodiesError) as exc:
                raise StepFailed("ROLLBACK", str(exc))
            failed = [(item["key"], item) for item in result["rollback_smoke"] if not item["passed"]]
            if failed:
                raise StepFailed("ROLLBACK", _service_message(failed, keys))
        if outcome == "persist" and drain:
            result["drain"] = drain_previous(client, keys, targets, previous, drain)
            for report in (result["drain"] or {}).values():
                if report.get("error"):
                    result["warnings"].append("DRAIN: %s: %s" % (report["backend"], report["error"]))
    except StepFailed as exc:
        result.update(failed=True, stage=exc.stage, msg=str(exc))
    if lock:
        try:
            release_lock(lock["path"], lock["owner"])
            result["unlocked"] = True
        except (LockError, OSError) as exc:
            if not result.get("failed"):
                result.update(failed=True, stage="UNLOCK", msg="cannot release lock %s: %s" % (lock["path"], exc))
    if not result.get("failed"):
        result["msg"] = {"persist": "persisted %s" % describe(targets) if persist else "live %s, not persisted (release_persist)" % describe(targets),
                         "rollback": "rolled back to %s" % describe(previous) if switched else "nothing to roll back here",
                         "release": "nothing changed"}.get(outcome, outcome)
    return result


# -- A FLEET OF ONE NODE --------------------------------------------------------------------------

def _failures(result):
    """A failed step's failures, each prefixed with its stage (release_engine.step_failures on the controller)."""
    if result.get("failures"):
        return list(result["failures"])
    return ["%s: %s" % (result["stage"], result.get("msg", "failed")) if result.get("stage") else
            str(result.get("msg", "failed"))]


def single(prepared, switch, finish_step, check_mode=False, drain_seconds=None, now=None):
    """The three steps in one module run, for a fleet of one node: no other node to wait for at a gate.

    `prepared` is PREPARE's result on this node. The gates a fleet would pass between the steps
    judge this node alone here, exactly as the role's gates would: SWITCH AND PROVE runs only
    when PREPARE passed with something to switch (not in check mode, not a node already live,
    not the end of a canary a dead run left, which the role's CANARY phase runs); FINISH then
    persists when the switch passed and rolls back when it failed (releasing the lock either
    way), and a persist that failed after the switch is rolled back like the role's second
    FINISH does for a fleet. `switch(locked)` and `finish_step(outcome, switched, locked, drain_until)`
    run those steps with the run's options (the module binds them); `locked` says whether this
    run still holds the release lock. With `drain_seconds`, a persisted release drains the backends it left until
    that long after the switch passed.

    Returns PREPARE's result with `switch_step` and `finish_step` (the last FINISH) when they ran,
    and the last FINISH's `msg`; `failed`, `stage`, `msg` and every step's `failures` when one failed. A result without them
    is PREPARE's alone: the role goes on with its phases as for any fleet.
    """
    plan = prepared.get("plan") or {}
    nothing_to_switch = prepared.get("already_live") or not plan.get("targets") or plan.get("end_canary")
    if prepared.get("failed") or check_mode or nothing_to_switch:
        return prepared
    result = dict(prepared)
    locked = bool(prepared.get("lock_taken"))
    result["switch_step"] = switched_result = switch(locked)
    passed = not switched_result.get("failed")
    drain_until = ((now or time.time)() + float(drain_seconds)) if passed and drain_seconds else None
    finished = finish_step("persist" if passed else "rollback", bool(switched_result.get("switched")), locked, drain_until)
    failures = [] if passed else _failures(switched_result)
    stage = switched_result.get("stage") if not passed else finished.get("stage")
    if finished.get("failed"):
        failures += _failures(finished)
        if passed and switched_result.get("switched") and not finished.get("rolled_back"):
            # The persist failed on a node that moved: back to the previous values (the lock is released).
            finished = finish_step("rollback", True, locked and not finished.get("unlocked"), None)
            if finished.get("failed"):
                failures += _failures(finished)
    result["finish_step"] = finished
    result["msg"] = finished.get("msg") or result.get("msg")
    result["changed"] = any(step.get("changed") for step in (prepared, switched_result, finished))
    result["warnings"] = [warning for step in (prepared, switched_result, finished) for warning in step.get("warnings") or []]
    if failures:
        result.update(failed=True, stage=stage, msg="; ".join(failures), failures=failures)
    return result


# -- STATUS -------------------------------------------------------------------------------------


def status(client, map_name, disk_text, keys, lock_path=None, backends=(), allow_no_check=False, disk_error=None):
    """status.yml's read of this node, read-only: every key live and on disk, the release lock, each backend's health.

    Never fails as a whole: what could not be read is a failed part (`map`: failed and msg;
    `health` items: failed and msg), so the report shows every node, the unreadable ones as
    unknown with the reason. `map` is what haproxy_map_info returns, `lock` release_lock_info's,
    `health` haproxy_backend_health's result for each backend (with `item`, as a loop has it).
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (
        HealthOptionError,
        parse_min_healthy,
        query_backend_servers,
        wait_for_health,
    )

    result = dict(changed=False, map=None, lock={}, health=[])
    try:
        if disk_error:
            raise RuntimeAPIError(disk_error)
        result["map"] = read_map_info(client, map_name, disk_text, keys)
    except RuntimeAPIError as exc:
        result["map"] = dict(failed=True, msg=str(exc))
    if lock_path:
        try:
            result["lock"] = lock_info(lock_path)
        except OSError as exc:
            # As haproxy_map_info says it: the map it read still counts, the lock is unknown.
            result["map"].update(failed=True, msg="cannot read release lock %s: %s (run as a user that may read it)"
                                 % (lock_path, exc))
    for backend in backends or []:
        try:
            health = wait_for_health(lambda name=backend: query_backend_servers(client, name), backend,
                                     parse_min_healthy(None), allow_no_check=allow_no_check)
        except (HealthOptionError, RuntimeAPIError) as exc:
            health = dict(failed=True, msg=str(exc), backend=backend, healthy=False)
        result["health"].append(dict(health, item=backend))
    read = "read" if not result["map"].get("failed") else "not read (%s)" % result["map"]["msg"]
    result["msg"] = "map %s %s; %d backend(s) checked" % (map_name, read, len(result["health"]))
    return result


# -- CANARY -------------------------------------------------------------------------------------

CANARY_SUFFIX = ".canary"
WEIGHT_SUFFIX = ".weight"


def canary_keys(key):
    """The map keys of `key`'s canary: the backend that gets the canary share, and the share (0-100)."""
    return key + CANARY_SUFFIX, key + WEIGHT_SUFFIX


def canary_bucket(sample):
    """The bucket (0-99) HAProxy's `<sample>,crc32(1),mod(100)` gives this text: the bucket of the
    README's canary lines. crc32(1) is CRC-32 with HAProxy's full_hash avalanche (Bob Jenkins'
    integer hash, then times 3221225473), all in 32 bits."""
    import zlib

    mask = 0xFFFFFFFF
    value = zlib.crc32(sample.encode("utf-8")) & mask
    value = ((value + 0x7ED55D16) + (value << 12)) & mask
    value = ((value ^ 0xC761C23C) ^ (value >> 19)) & mask
    value = ((value + 0x165667B1) + (value << 5)) & mask
    value = ((value + 0xD3A2646C) ^ (value << 9)) & mask
    value = ((value + 0xFD7046C5) + (value << 3)) & mask
    value = ((value ^ 0xB55A4F09) ^ (value >> 16)) & mask
    return ((value * 3221225473) & mask) % 100


def canary_sample(weight, prefix="bluegreen-canary-smoke-"):
    """A sample whose bucket is in the canary's share `weight` (1-100): the first `prefix<n>` there."""
    number = 0
    while canary_bucket("%s%d" % (prefix, number)) >= int(weight):
        number += 1
    return "%s%d" % (prefix, number)


def canary_entries(services, targets, lives, weight, weights=None):
    """{key.canary: target, key.weight: weight} of every service that moves; weight 0 (the end of a
    canary): the weights alone, of every key that moves or whose share `weights` says is set."""
    entries = {}
    for service in services:
        key = service["key"]
        share_set = not weight and (weights or {}).get(key) not in (None, "", "0")
        if targets[key] == lives[key] and not share_set:
            continue
        canary, share = canary_keys(key)
        if weight:
            entries[canary] = targets[key]
        entries[share] = str(int(weight))
    return entries


def canary_share_errors(services, targets, lives, weight, live):
    """What the read of the live map at the end of a step's window (`live`: {key: value}, one
    `show map`) finds: {key: {verdict, msg}} of every moving service whose share is not the step's any
    more. A share gone (`<key>.weight` absent or 0) is what a reload does: the new worker loads the
    map file, which never holds a share, so the canary ended there (safe: every user is on the
    stable version) and the step cannot be judged."""
    errors = {}
    for service in services:
        key = service["key"]
        if targets[key] == lives[key]:
            continue
        canary, share = canary_keys(key)
        seen = dict((name, live.get(name)) for name in (key, canary, share))
        if seen[share] in (None, "0"):
            errors[key] = dict(verdict="share gone", msg=(
                "the canary share is gone: %s is %s at runtime, expected %d; did HAProxy reload? (a reload loads the "
                "map file, which never holds a share: the canary ended on this node, every user is on %s)"
                % (share, seen[share] or "absent", int(weight), seen[key] or "absent")))
        elif seen[share] != str(int(weight)) or seen[canary] != targets[key] or seen[key] != lives[key]:
            moved = ["%s is %s at runtime, expected %s" % (name, seen[name] or "absent", value)
                     for name, value in ((key, lives[key]), (canary, targets[key]), (share, str(int(weight))))
                     if seen[name] != value]
            errors[key] = dict(verdict="moved", msg="the canary moved during its window: %s; another hand changed the map"
                               % ", ".join(moved))
    return errors


def shares_gone(keys, live):
    """The keys whose canary share is already gone at runtime (`<key>.weight` absent or 0 in `live`):
    nothing to end there (a reload during the canary, or another run ended it)."""
    return [key for key in keys if live.get(canary_keys(key)[1]) in (None, "0")]


def _step_verdict(target, stable, min_requests, insufficient_traffic):
    """A canary step's verdict from its two windows: (verdict, message or None)."""
    if target["verdict"] == "failed":
        return "failed", target["msg"]
    if stable.get("verdict") == "failed":
        return "failed", "the stable backend failed while the canary ran: %s" % stable["msg"]
    if target["requests"] == 0 and stable.get("requests", 0) >= min_requests:
        return "does not route", (
            "the canary does not route: %s got no request while %s got %d real requests; the configuration does not "
            "read the weight (see the README's \"Canary routing\")"
            % (target["backend"], stable["backend"], stable["requests"]))
    if target["verdict"] == "insufficient":
        if insufficient_traffic == "pass":
            return "insufficient", None
        return "insufficient", "%s. %s" % (target["msg"], INSUFFICIENT_HINT % min_requests)
    return "passed", None


def canary_step(client, map_name, services, targets, lives, weight, weights, switch_at=None, lock=None, watch=None,
                smoke=None, clock=None, smoke_header=None):
    """One CANARY step on this node; returns the result, `failed`/`stage`/`msg` when it failed.

    Every moving service's `<key>.canary` = its target and `<key>.weight` = `weight` in one
    prepare/commit (armed for `switch_at`, a compare-and-set on the stable values `lives` and on
    the weights the step before left, `weights`), read back; then the step's analysis window
    (`watch`: seconds, max_error_rate, min_requests, insufficient_traffic): real users' requests
    to the canary backend from HAProxy's counters, and the stable backend's too, so a canary that
    breaks something shared is caught. A canary backend that gets no request while the stable
    one gets real traffic is "the canary does not route". `weight` 0 ends the canary (abort):
    the weights go back to 0 at the instant, read back, and the stable version is smoke-tested
    (`smoke`) through this node's listener. With `smoke_header` (the request header the
    configuration hashes the bucket from), each step first smoke-tests the canary through this
    node's listener: the smoke requests carry a value whose bucket is in the step's share, so
    HAProxy itself must send them to the target. Returns per service key `canary_step`
    ({weight, requests, errors, error_rate, verdict, started, ended, stable}).
    """
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import traffic
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_change import MapStepError, change_map
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import runtime_values

    now = clock or time.time
    watch = dict(watch or {})
    keys = [service["key"] for service in services]
    entries = canary_entries(services, targets, lives, weight, weights)
    expected = dict((key, lives[key]) for key in keys if canary_keys(key)[1] in entries)
    ending = [key for key in keys if key in expected]
    for key in list(expected):
        before = (weights or {}).get(key)
        if before not in (None, ""):
            expected[canary_keys(key)[1]] = str(before)
    result = dict(changed=False, weight=int(weight), switch=None, canary_step=None, canary_verify=None, smoke=None,
                  stage=None, warnings=[])
    gone = []
    if not weight and ending:
        # The end: a share already gone (a reload during the canary) is ended there, not a
        # compare-and-set refusal; one `show map` says which.
        try:
            gone = shares_gone(ending, runtime_values(client, map_name))
        except RuntimeAPIError as exc:
            result.update(failed=True, stage="CANARY", msg=str(exc))
            return result
        for key in gone:
            for name in (key,) + canary_keys(key):
                entries.pop(name, None)
                expected.pop(name, None)
    params = dict(map=map_name, map_file=None, persist=False, backup=False, switch_at=switch_at, state="present",
                  key=None, value=None, expected_value=None, entries=entries, expected_entries=expected,
                  release_lock=dict(path=lock["path"], owner=lock["owner"], phase="canary %d%%" % int(weight))
                  if lock else None)
    try:
        try:
            # Nothing to write when every share is gone already.
            switch = change_map(client, params, warn=result["warnings"].append) if entries else dict(changed=False)
        except MapStepError as exc:
            result["switch"] = exc.result
            raise StepFailed("CANARY", str(exc))
        result.update(switch=switch, changed=bool(switch.get("changed")))
        errors = readback_errors(entries, switch, "CANARY", "after the step")
        if errors:
            raise StepFailed("CANARY", "; ".join(errors))
        if not weight:
            # Ended: every user is on the stable version again; prove it answers.
            ended = round(now(), 3)
            result["canary_step"] = dict((key, dict(weight=0, backend=lives[key], verdict="ended", started=ended,
                                                    ended=ended, switched_at=switch.get("switched_at")))
                                         for key in ending)
            for key in gone:
                result["canary_step"][key]["note"] = ("the share was already gone at runtime (%s absent or 0): "
                                                      "did HAProxy reload?" % canary_keys(key)[1])
            result["smoke"] = _smoke_services(_run_smoke(), services, lives, smoke)
            failed = [(item["key"], item) for item in result["smoke"] if not item["passed"]]
            if failed:
                raise StepFailed("CANARY", "the stable version after the canary ended: %s" % _service_message(failed, keys))
            result["msg"] = "canary ended: %s%s" % (describe(dict((key, lives[key]) for key in ending)),
                                                    "; the share was already gone at runtime for %s (did HAProxy reload?)"
                                                    % ", ".join(gone) if gone else "")
            return result
        moving = [service for service in services if targets[service["key"]] != lives[service["key"]]]
        if smoke_header:
            # Before the baselines: the window counts real users only.
            sample = canary_sample(weight)
            probes = [dict(service, smoke_headers=dict(service.get("smoke_headers") or {}, **{smoke_header: sample}))
                      for service in moving]
            result["smoke"] = _smoke_services(_run_smoke(), probes, targets, smoke)
            failed = [(item["key"], item) for item in result["smoke"] if not item["passed"]]
            if failed:
                raise StepFailed("CANARY", "at %d%%: the canary through this node's listener (%s: %s): %s"
                                 % (int(weight), smoke_header, sample, _service_message(failed, keys)))
        started = now()
        retry = float((smoke or {}).get("timeout") or 5)
        baselines = {}
        for service in moving:
            for backend in (targets[service["key"]], lives[service["key"]]):
                if backend not in baselines:
                    baselines[backend] = traffic.watch_backend(client, backend, retry_for=retry)["counters"]
        windows, failures, window_error = {}, [], None
        try:
            for index, service in enumerate(moving):
                key = service["key"]
                min_requests = int(watch.get("min_requests", 20))
                target = traffic.watch_backend(
                    client, targets[key], baseline=baselines[targets[key]],
                    duration=float(watch.get("seconds") or 0) if index == 0 else 0.0,
                    interval=min(float(watch.get("interval") or 1), 1.0),
                    max_error_rate=float(watch.get("max_error_rate", 1.0)),
                    min_requests=min_requests, retry_for=retry, insufficient_traffic="pass")
                stable = traffic.watch_backend(client, lives[key], baseline=baselines[lives[key]],
                                               max_error_rate=float(watch.get("max_error_rate", 1.0)),
                                               min_requests=min_requests, retry_for=retry, insufficient_traffic="pass")
                verdict, message = _step_verdict(target, stable, min_requests, watch.get("insufficient_traffic", "fail"))
                windows[key] = dict(weight=int(weight), backend=targets[key], switched_at=switch.get("switched_at"),
                                    requests=target["requests"],
                                    errors=target["errors"], error_rate=target["error_rate"], verdict=verdict,
                                    started=round(started, 3), ended=round(now(), 3),
                                    stable=dict(backend=lives[key], requests=stable["requests"], errors=stable["errors"],
                                                error_rate=stable["error_rate"], verdict=stable["verdict"]))
                if message:
                    failures.append((key, dict(msg=message)))
        except RuntimeAPIError as exc:
            window_error = str(exc)
        # The end of the window reads the live map once, also after a failed window: a reload
        # during it ended the canary on this node (the map file holds no share), and that is
        # the finding, before whatever the counters said.
        try:
            live = runtime_values(client, map_name)
        except RuntimeAPIError as exc:
            result["canary_verify"] = dict(failed=True, msg=str(exc))
            moved = {}
            failures.insert(0, (keys[0], dict(msg="the live map could not be read after the window: %s" % exc)))
        else:
            result["canary_verify"] = dict((name, live.get(name)) for service in moving
                                           for name in (service["key"],) + canary_keys(service["key"]))
            moved = canary_share_errors(services, targets, lives, weight, live)
        for key in moved:
            # Also when the window itself could not be read (the reload took the socket away).
            windows.setdefault(key, dict(weight=int(weight), backend=targets[key], switched_at=switch.get("switched_at"),
                                         started=round(started, 3), ended=round(now(), 3)))
            windows[key]["verdict"] = moved[key]["verdict"]
        failures = [(key, moved[key]) for key in keys if key in moved] + \
            [(key, item) for key, item in failures if key not in moved]
        if window_error and not moved:
            failures.append((keys[0], dict(msg=window_error)))
        result["canary_step"] = windows
        if failures:
            raise StepFailed("CANARY", "at %d%%: %s" % (int(weight), _service_message(failures, keys)))
    except RuntimeAPIError as exc:
        result.update(failed=True, stage="CANARY", msg=str(exc))
        return result
    except StepFailed as exc:
        result.update(failed=True, stage=exc.stage, msg=str(exc))
        return result
    verdicts = dict((key, "%s %s" % (item["backend"], item["verdict"])) for key, item in windows.items())
    result["msg"] = "canary at %d%%: %s" % (int(weight), describe(verdicts))
    return result


def _run_smoke():
    from ansible_collections.bluegreen.haproxy.plugins.module_utils import smoke as http

    return http.run_smoke
