# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lock file on each HAProxy node, so two releases of one map cannot interleave.

Creation is link(2) of a fully written temporary file to the lock's name,
which the kernel makes atomic and exclusive: of two runs racing for the same
node exactly one creates the lock, and the lock never exists without its
whole record (an O_EXCL create would show an empty file until the creator has
written and synced, which a busy machine can stretch to seconds). The file holds the run's record
(who, from which controller, since when, how far it got, what it switches),
so a refusal can tell the operator whom to ask, and after a crash the record
says what the dead run was doing. Every rewrite of an existing record goes to
a temporary file in the same directory that is renamed over the lock, so a
reader sees the old record or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import time

# Fields of the record that only taking the lock sets; an update by the owner
# keeps them, so `details` can never hand the lock to someone else.
OWNERSHIP_FIELDS = ("owner", "acquired", "acquired_epoch")

# The run facts a caller may record, in the order they are written. Anything
# else comes from `details`.
RUN_FIELDS = ("controller", "controller_pid", "started", "phase", "map", "key", "previous", "target")


def lock_argument_spec():
    """Which lock and how a held one may be taken over (path, owner, force, stale_after): release_lock's
    options and release_step's `lock` suboptions. Each module sets what it requires (release_lock: the owner)."""
    return dict(
        path=dict(type="path", required=True),
        owner=dict(type="str"),
        force=dict(type="bool", default=False),
        stale_after=dict(type="int", default=0),
    )


class LockError(Exception):
    """Base class: the lock could not be taken, updated or released."""


class LockHeldError(LockError):
    """Another owner holds the lock (or its record cannot be read); nothing was changed."""

    def __init__(self, path, holder, action="take"):
        self.path = path
        self.holder = holder
        super(LockHeldError, self).__init__(
            "release lock %s is held by %s since %s (%s ago)%s: another release of this map is in progress, "
            "so the lock cannot be %s. If that run is gone, %s with force (playbooks: "
            "-e release_lock_force=true) or remove the file"
            % (path, describe_owner(holder), holder.get("acquired", "an unknown time"), describe_age(holder),
               describe_run(holder), _PAST[action], "release it" if action == "release" else "take it over")
        )


_PAST = dict(take="taken", release="released", update="updated")


class LockOptionError(LockError, ValueError):
    """An option cannot be used (e.g. `details` trying to set the owner); nothing was changed."""


def describe_owner(holder):
    owner = holder.get("owner")
    return short(owner) if owner else "an unknown owner (unreadable lock record)"


def short(value, limit=80):
    """At most `limit` characters of a value, for messages."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + "..."


def describe_run(holder):
    """' (controller ctl1 pid 4242, phase SWITCH)': what the record says about the run, if anything."""
    parts = []
    if holder.get("controller"):
        pid = holder.get("controller_pid")
        parts.append("controller %s%s" % (short(holder["controller"], 40), "" if pid is None else " pid %s" % pid))
    if holder.get("phase"):
        parts.append("phase %s" % short(holder["phase"], 40))
    return " (%s)" % ", ".join(parts) if parts else ""


def describe_age(holder, now=None):
    age = lock_age(holder, now)
    if age is None:
        return "unknown time"
    minutes, seconds = divmod(int(max(0, age)), 60)
    hours, minutes = divmod(minutes, 60)
    return "%dh%02dm%02ds" % (hours, minutes, seconds)


def lock_age(holder, now=None):
    """Seconds since the lock was taken; None when the record does not say."""
    try:
        return (time.time() if now is None else now) - float(holder["acquired_epoch"])
    except (KeyError, TypeError, ValueError):
        return None


def is_stale(holder, stale_after, now=None):
    """Whether a lock is older than `stale_after` seconds (0: never stale).

    A record without a readable age is not stale: nothing proves its run is gone.
    """
    if not stale_after or stale_after <= 0:
        return False
    age = lock_age(holder, now)
    return age is not None and age > stale_after


def read_lock(path):
    """The holder record, {} for an unreadable record, None when there is no lock."""
    try:
        with open(path) as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def run_fields(fields=None, details=None):
    """The run facts to record: `details` first, then the named fields that were given.

    A detail may not set an ownership field: the lock changes hands only by
    being taken (create, force or stale_after).
    """
    details = dict(details or {})
    reserved = sorted(name for name in details if name in OWNERSHIP_FIELDS)
    if reserved:
        raise LockOptionError("details cannot set %s: ownership changes only by taking the lock"
                              % ", ".join(reserved))
    record = {}
    record.update(details)
    for name, value in (fields or {}).items():
        if value is not None:
            record[name] = value
    return record


def new_record(owner, facts, now=None):
    """The record a run writes when it takes the lock."""
    now = time.time() if now is None else now
    record = dict(owner=owner, acquired=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                  acquired_epoch=now)
    record.update(facts)
    record.setdefault("started", record["acquired"])
    return _ordered(record)


def updated_record(previous, facts):
    """The owner's record with `facts` applied; ownership fields kept as they were."""
    record = dict(previous)
    record.update(facts)
    for name in OWNERSHIP_FIELDS:
        if name in previous:
            record[name] = previous[name]
    return _ordered(record)


def _ordered(record):
    order = ("owner",) + RUN_FIELDS[:3] + ("acquired", "acquired_epoch") + RUN_FIELDS[3:]
    ordered = dict((name, record[name]) for name in order if name in record)
    ordered.update((name, value) for name, value in record.items() if name not in ordered)
    return ordered


def _write_temp(path, record):
    """A synced temporary file holding `record`, beside `path` (same filesystem)."""
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(descriptor, "w") as handle:
            json.dump(record, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_path, 0o644)
    except BaseException:
        _unlink_quietly(temp_path)
        raise
    return temp_path


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def create_lock(path, record):
    """Create the lock holding `record`; False when it already exists.

    link(2) fails with EEXIST when the name exists, and checks and creates in
    one step in the kernel: without that two racing runs would both 'create'
    the lock. Linking a finished file means a reader never sees the lock
    without its record.
    """
    temp_path = _write_temp(path, record)
    try:
        os.link(temp_path, path)
    except FileExistsError:
        return False
    finally:
        _unlink_quietly(temp_path)
    return True


def replace_lock(path, record):
    """Write a record beside the lock and rename it over the lock (atomic for readers)."""
    temp_path = _write_temp(path, record)
    try:
        os.rename(temp_path, path)
    except BaseException:
        _unlink_quietly(temp_path)
        raise


def _same_holder(a, b):
    return (a or {}).get("owner") == (b or {}).get("owner") and \
        (a or {}).get("acquired_epoch") == (b or {}).get("acquired_epoch")


def acquire(path, owner, facts=None, force=False, stale_after=0, check_mode=False, now=None):
    """Take the lock, or update the record when `owner` already holds it.

    Returns dict(changed, holder, previous_holder, taken_over). Raises
    LockHeldError when another owner holds it (unless force or stale_after
    allow a take-over), changing nothing.
    """
    if not owner:
        raise LockOptionError("owner must name the run taking the lock, got an empty string")
    facts = facts or {}
    previous = read_lock(path)
    if previous is not None and previous.get("owner") == owner:
        record = updated_record(previous, facts)
        changed = record != previous
        if changed and not check_mode:
            # Someone may have forced the lock away since we read it; never
            # write our record over theirs.
            if not _same_holder(read_lock(path), previous):
                raise LockHeldError(path, read_lock(path) or {}, action="update")
            replace_lock(path, record)
        return dict(changed=changed, holder=record, previous_holder=previous, taken_over=False)

    if previous is not None and not (force or is_stale(previous, stale_after, now)):
        raise LockHeldError(path, previous)
    record = new_record(owner, facts, now)
    if not check_mode:
        if previous is None:
            if not create_lock(path, record):
                # Another run created it between our read and our create;
                # its record is already whole (see create_lock).
                raise LockHeldError(path, read_lock(path) or {})
        else:
            replace_lock(path, record)
    return dict(changed=True, holder=record, previous_holder=previous, taken_over=previous is not None)


def record_phase(path, owner, phase):
    """The holder records the phase it reached, right before a change it guards.

    Unlike acquire, this never takes a lock: LockHeldError when another owner holds it, or
    when nobody does any more (it was removed or forced away), so the guarded change is refused.
    """
    holder = read_lock(path)
    if holder is None or holder.get("owner") != owner:
        raise LockHeldError(path, holder or dict(owner="nobody (the lock is gone)"), action="update")
    return acquire(path, owner, dict(phase=phase))


def release(path, owner, force=False, check_mode=False):
    """Remove the lock if `owner` holds it (or with force). No lock: nothing to do.

    Returns dict(changed, holder=None, previous_holder, taken_over=False);
    raises LockHeldError when another owner holds it, changing nothing.
    """
    previous = read_lock(path)
    if previous is None:
        return dict(changed=False, holder=None, previous_holder=None, taken_over=False)
    if previous.get("owner") != owner and not force:
        raise LockHeldError(path, previous, action="release")
    if not check_mode:
        current = read_lock(path)
        # The owner releases only the record it read: a run that forced the
        # lock away in the meantime keeps it.
        if not force and current is not None and not _same_holder(current, previous):
            raise LockHeldError(path, current, action="release")
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return dict(changed=True, holder=None, previous_holder=previous, taken_over=False)


def lock_info(path, now=None):
    """dict(held, holder, age) for release_lock_info; holder {} when the record is unreadable."""
    holder = read_lock(path)
    if holder is None:
        return dict(held=False, holder=None, age=None)
    age = lock_age(holder, now)
    return dict(held=True, holder=holder, age=None if age is None else round(max(0.0, age), 3))
