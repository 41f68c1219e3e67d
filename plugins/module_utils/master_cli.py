# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The master CLI of master-worker HAProxy: `show proc` and `reload`, across versions.

The one place where 2.6 and 2.7+ differ for a reload: 2.6 answers `reload`
with nothing and closes at once, so success is read from two `show proc`
snapshots; 2.7+ answers `Success=1|0` after the reload finished.
"""

from __future__ import annotations

import re

_FAILED = re.compile(r"\[failed:\s*(\d+)\]")
_RELOAD_STATUS = re.compile(r"^Success=([01])\s*$", re.MULTILINE)


def parse_show_proc(text):
    """`show proc` -> {"master": {...} or None, "workers": [...], "old_workers": [...]}.

    Each process is {"pid", "type", "reloads", "version"}; the master also has
    "failed", the count of consecutive failed reloads (`[failed: N]`, 0 if absent).
    """
    result = {"master": None, "workers": [], "old_workers": []}
    section = "master"
    for raw_line in text.split("\n"):  # LF only, as HAProxy ends lines (not U+2028, U+0085...)
        line = raw_line.strip()
        if not line:
            continue
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            if title.startswith("<pid>"):
                continue
            section = {"workers": "workers", "old workers": "old_workers"}.get(title, "other")
            continue
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        entry = {
            "pid": int(fields[0]),
            "type": fields[1],
            "reloads": int(fields[2]) if fields[2].isdigit() else None,
            "version": fields[-1],
        }
        if fields[1] == "master":
            failed = _FAILED.search(line)
            entry["failed"] = int(failed.group(1)) if failed else 0
            result["master"] = entry
        elif section in ("workers", "old_workers") and fields[1] == "worker":
            result[section].append(entry)
    return result


def parse_reload_reply(text):
    """(status, detail) of the master's answer to `reload`.

    status is True for `Success=1` (2.7+), False for `Success=0`, None when
    there is no status line (2.6 answers nothing: confirm with `show proc`).
    """
    match = _RELOAD_STATUS.search(text)
    if not match:
        return None, text.strip()
    return match.group(1) == "1", text.partition("--")[2].strip()


def reload_confirmed(before, after):
    """Whether two `show proc` snapshots prove a reload: True, False (it failed), None (not yet)."""
    master_before, master_after = before.get("master") or {}, after.get("master")
    if not master_after:
        return None
    reloads_before, reloads_after = master_before.get("reloads"), master_after.get("reloads")
    if reloads_before is not None and reloads_after is not None:
        if reloads_after <= reloads_before:
            return None
        # A successful reload resets the failure counter to 0.
        if master_after.get("failed", 0) > 0:
            return False
    elif master_after.get("failed", 0) > master_before.get("failed", 0):
        return False
    old_pids = {worker["pid"] for worker in before.get("workers", [])}
    if any(worker["pid"] not in old_pids for worker in after.get("workers", [])):
        return True
    return None


def describe_processes(proc):
    """The facts about HAProxy's processes a task result reports."""
    if not proc or not proc.get("master"):
        return {}
    return dict(
        master_pid=proc["master"]["pid"],
        workers=[worker["pid"] for worker in proc["workers"]],
        old_workers=[worker["pid"] for worker in proc["old_workers"]],
        reloads=proc["master"]["reloads"],
        failed_reloads=proc["master"]["failed"],
        version=proc["master"]["version"],
    )
