# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A lock file on each HAProxy node, so two releases of one map cannot interleave.

Creation uses O_EXCL, which the kernel makes atomic: of two runs racing for
the same node exactly one creates the file. The file says who holds it and
since when, so a refusal can tell the operator whom to ask and how old it is.
"""

from __future__ import annotations

import json
import os
import tempfile
import time


class LockHeldError(Exception):
    def __init__(self, path, holder):
        self.path = path
        self.holder = holder
        super(LockHeldError, self).__init__(
            "release lock %s is held by %s since %s (%s ago); another release of this map is in "
            "progress. If that run is gone, release the lock with force (playbooks: "
            "-e release_lock_force=true) or remove the file"
            % (path, holder.get("owner", "an unknown owner"), holder.get("acquired", "an unknown time"),
               describe_age(holder))
        )


def describe_age(holder):
    age = lock_age(holder)
    if age is None:
        return "unknown time"
    minutes, seconds = divmod(int(age), 60)
    hours, minutes = divmod(minutes, 60)
    return "%dh%02dm%02ds" % (hours, minutes, seconds)


def lock_age(holder, now=None):
    try:
        return (now or time.time()) - float(holder["acquired_epoch"])
    except (KeyError, TypeError, ValueError):
        return None


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


def holder_record(owner, details=None):
    now = time.time()
    record = dict(owner=owner, acquired_epoch=now,
                  acquired=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), pid=os.getpid())
    record.update(details or {})
    return record


def create_lock(path, record):
    """Create the lock; False when it already exists."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    return True


def replace_lock(path, record):
    """Take over an existing lock: write the new record beside it and rename over it."""
    descriptor, temp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path),
                                             dir=os.path.dirname(os.path.abspath(path)))
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
    os.chmod(temp_path, 0o644)
    os.rename(temp_path, path)
