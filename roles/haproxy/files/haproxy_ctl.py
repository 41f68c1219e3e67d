#!/usr/bin/python3
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start, reload and confirm HAProxy in master-worker mode (role bluegreen.haproxy.haproxy).

The one place where the role talks to a running HAProxy. Python 3 standard
library only: it runs on the HAProxy node, which may carry nothing else
(no socat). Every action prints one JSON object on stdout and exits 0 on
success, 1 on failure (the JSON then has "failed": true and "msg").

Actions
  status            is HAProxy running; master and worker PIDs; version.
  start             start HAProxy when it is not running (master-worker,
                    daemon, master CLI on --master-socket) and wait for a
                    worker. "changed" is true only when it started it.
  ensure            start, or reload when the master says the last reload
                    failed (`[failed: N]`, the file on disk is not running).
  reload            reload without dropping in-flight requests and CONFIRM
                    that the new configuration runs, else fail:
                      * HAProxy 2.7+: the master CLI `reload` answers
                        `Success=1` (or `Success=0` and the startup logs);
                      * HAProxy 2.6: `reload` answers nothing and closes;
                        poll `show proc` until the master counted the
                        reload, `[failed: 0]`, and a worker PID that was not
                        there before serves;
                      * systemd (--manager systemd): `systemctl reload`, then
                        the same `show proc` confirmation.
                    Starts HAProxy instead when it is not running.
                    Runtime values of the --map files survive the reload:
                    a reload re-reads maps from disk, which would silently
                    undo a runtime-only `set map` (a cutover in progress), so
                    entries whose runtime value differed from what the new
                    worker loaded are set back right after it started.
  add-missing-keys  add to the running worker every key of the --map files
                    that the file has and the runtime map lacks (new
                    services), leaving existing keys alone.

All Runtime API traffic goes through the master CLI (`@1` = current worker,
`@!<pid>` = one given worker), which is root-only and reaches exactly the
worker we mean, even while an old one drains.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import time

DEFAULTS = {
    "haproxy": "/usr/sbin/haproxy",
    "config": "/etc/haproxy/haproxy.cfg",
    "master_socket": "/run/haproxy-master.sock",
    "pidfile": "/run/haproxy.pid",
    "service": "haproxy",
}

# Characters HAProxy's CLI tokenizer treats specially (see the runtime API notes, section 2).
_ESCAPED = frozenset("\\; \t<#")


class CtlError(Exception):
    """A failure to report to the caller (exit status 1)."""

    def __init__(self, msg, **details):
        super().__init__(msg)
        self.msg = msg
        self.details = details


# ---------------------------------------------------------------------------
# Pure helpers (no I/O): unit-testable with captured HAProxy output.
# ---------------------------------------------------------------------------

def escape_argument(value):
    text = str(value)
    for char, name in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if char in text:
            raise CtlError("%r contains %s, which the HAProxy CLI cannot carry" % (text, name))
    if not text:
        raise CtlError("an empty argument cannot be sent to the HAProxy CLI")
    return "".join("\\" + c if c in _ESCAPED else c for c in text)


_FAILED_RE = re.compile(r"\[failed:\s*(\d+)\]")


def parse_show_proc(text):
    """Parse the master CLI's `show proc` (2.6 .. 3.x).

    Returns {"master": {"pid", "reloads", "failed", "version"} or None,
             "workers": [{"pid", "reloads", "version"}], "old_workers": [...]}.
    """
    result = {"master": None, "workers": [], "old_workers": []}
    section = "master"
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            if title.startswith("<pid>"):
                continue
            if title == "workers":
                section = "workers"
            elif title == "old workers":
                section = "old_workers"
            else:  # "programs", "old programs", or anything newer
                section = "other"
            continue
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        failed = _FAILED_RE.search(line)
        entry = {
            "pid": int(fields[0]),
            "type": fields[1],
            "reloads": int(fields[2]) if fields[2].isdigit() else None,
            "version": fields[-1],
        }
        if fields[1] == "master":
            entry["failed"] = int(failed.group(1)) if failed else 0
            result["master"] = entry
        elif section in ("workers", "old_workers") and fields[1] == "worker":
            result[section].append(entry)
    return result


def parse_reload_reply(text):
    """Interpret the master CLI's answer to `reload`.

    Returns (status, detail): status True for `Success=1` (2.7+), False for
    `Success=0`, None when there is no status line (2.6 answers nothing; the
    caller must confirm with `show proc`).
    """
    match = re.search(r"^Success=([01])\s*$", text, re.MULTILINE)
    if not match:
        return None, text.strip()
    detail = text.partition("--")[2]
    return match.group(1) == "1", detail.strip()


def parse_map_list(text):
    """`show map` -> list of map file names loaded by the worker."""
    names = []
    for line in text.splitlines():
        match = re.match(r"^\s*\d+\s+\((.*)\)\s", line + " ")
        if match:
            names.append(match.group(1))
    return names


def parse_map_entries(text):
    """`show map <map>` -> ordered dict key -> value (first occurrence wins)."""
    entries = {}
    for line in text.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("0x"):
            continue
        key = parts[1]
        value = parts[2] if len(parts) > 2 else ""
        entries.setdefault(key, value)
    return entries


def parse_map_file(text):
    """A map file -> ordered dict key -> value, as HAProxy reads it.

    Blank lines and lines starting with `#` are skipped; the key is the first
    word, the value the rest of the line with surrounding blanks removed.
    """
    entries = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split(None, 1)
        entries.setdefault(parts[0], parts[1].strip() if len(parts) > 1 else "")
    return entries


def reload_confirmed(before, after):
    """Decide from two `show proc` snapshots whether a reload succeeded (2.6 path).

    Returns True (confirmed), False (HAProxy reports the reload failed) or
    None (not decided yet: keep polling).
    """
    master_before, master_after = before.get("master") or {}, after.get("master")
    if not master_after:
        return None
    reloads_before = master_before.get("reloads")
    reloads_after = master_after.get("reloads")
    failed_before = master_before.get("failed", 0)
    failed_after = master_after.get("failed", 0)
    if reloads_before is not None and reloads_after is not None:
        if reloads_after <= reloads_before:
            return None  # the master has not re-executed yet
        if failed_after > 0:
            return False  # a successful reload resets the counter to 0
    elif failed_after > failed_before:
        return False
    old_pids = {w["pid"] for w in before.get("workers", [])}
    if any(w["pid"] not in old_pids for w in after.get("workers", [])):
        return True
    return None


def children_of(pid):
    """PIDs of the live processes whose parent is `pid` (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 1 and fields[1] == str(pid) and fields[0] not in ("Z", "X"):
            found.add(int(entry))
    return found


# ---------------------------------------------------------------------------
# Master CLI
# ---------------------------------------------------------------------------

def cli(path, line, timeout=5.0, half_close=True):
    """Send one command line to a unix socket and read the reply to EOF."""
    if any(c in line for c in "\r\n\0"):
        raise CtlError("refusing to send a command line with CR, LF or NUL")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(line.encode("utf-8") + b"\n")
        if half_close:
            # The 2.6 master CLI keeps the connection open until it sees EOF.
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout()
            sock.settimeout(remaining)
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")
    finally:
        sock.close()


class HAProxy:
    def __init__(self, args):
        self.args = args
        self.timeout = float(args.timeout)

    # -- state ------------------------------------------------------------

    def master(self, line, timeout=None):
        return cli(self.args.master_socket, line, timeout or min(self.timeout, 10.0))

    def show_proc(self):
        """`show proc`, or None when the master CLI does not answer."""
        try:
            reply = self.master("show proc")
        except (OSError, socket.timeout):
            return None
        proc = parse_show_proc(reply)
        return proc if proc["master"] else None

    def wait_show_proc(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            proc = self.show_proc()
            if proc is not None or time.monotonic() >= deadline:
                return proc
            time.sleep(0.2)

    def pidfile_pid(self):
        try:
            with open(self.args.pidfile) as handle:
                pid = int(handle.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        try:
            with open("/proc/%d/stat" % pid) as handle:
                stat = handle.read()
        except OSError:
            return None
        # "pid (comm) S ..." - a zombie (Z) or dead (X) process is not running.
        state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
        comm = stat[stat.find("(") + 1:stat.rfind(")")]
        if state in ("Z", "X") or "haproxy" not in comm:
            return None
        return pid

    def use_systemd(self):
        if self.args.manager == "systemd":
            return True
        if self.args.manager == "direct":
            return False
        return os.path.isdir("/run/systemd/system")

    def systemctl(self, *words):
        return subprocess.run(["systemctl"] + list(words) + [self.args.service],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=self.timeout + 30, check=False)

    def status(self):
        proc = self.show_proc()
        if proc is not None:
            return {"running": True, "master_cli": True, "proc": proc}
        if self.use_systemd():
            active = self.systemctl("is-active", "--quiet").returncode == 0
            return {"running": active, "master_cli": False, "proc": None}
        pid = self.pidfile_pid()
        return {"running": pid is not None, "master_cli": False, "proc": None, "pidfile_pid": pid}

    # -- maps -------------------------------------------------------------

    def loaded_maps(self, target):
        return parse_map_list(self.master("%s show map" % target))

    def runtime_map(self, target, path):
        reply = self.master("%s show map %s" % (target, escape_argument(path)))
        if reply.strip().startswith("Unknown map identifier"):
            return None
        return parse_map_entries(reply)

    def snapshot_maps(self, target="@1"):
        """Runtime entries of every --map the worker has loaded."""
        snapshot = {}
        if not self.args.map:
            return snapshot
        loaded = self.loaded_maps(target)
        for path in self.args.map:
            if path in loaded:
                entries = self.runtime_map(target, path)
                if entries is not None:
                    snapshot[path] = entries
        return snapshot

    def map_command(self, target, verb, path, key, value):
        line = "%s %s %s %s %s" % (target, verb, escape_argument(path),
                                   escape_argument(key), escape_argument(value))
        reply = self.master(line)
        if reply.strip():
            raise CtlError("HAProxy refused '%s': %s" % (line, reply.strip().splitlines()[0]))

    def restore_maps(self, snapshot, worker_pid):
        """Put back runtime values a reload replaced with the file's values."""
        target = "@!%d" % worker_pid
        restored = []
        for path, before in snapshot.items():
            after = self.runtime_map(target, path)
            if after is None:
                continue  # the new configuration no longer loads this map
            for key, value in before.items():
                if key not in after:
                    self.map_command(target, "add map", path, key, value)
                elif after[key] != value:
                    self.map_command(target, "set map", path, key, value)
                else:
                    continue
                restored.append({"map": path, "key": key, "value": value,
                                 "file_value": after.get(key)})
        return restored

    # -- actions ----------------------------------------------------------

    def start(self):
        state = self.status()
        if state["running"]:
            return dict(changed=False, action="none", msg="HAProxy is already running",
                        **self.describe(state.get("proc")))
        if self.use_systemd():
            result = self.systemctl("start")
            if result.returncode != 0:
                raise CtlError("systemctl start %s failed: %s" % (self.args.service, result.stdout.strip()))
            proc = self.wait_show_proc(self.timeout)
            return dict(changed=True, action="started", manager="systemd", **self.describe(proc))
        if state.get("pidfile_pid"):
            raise CtlError(
                "HAProxy (pid %d from %s) runs but its master CLI %s does not answer; "
                "restart it in master-worker mode with -S %s"
                % (state["pidfile_pid"], self.args.pidfile, self.args.master_socket, self.args.master_socket))
        command = [self.args.haproxy, "-W", "-D", "-S", "%s,mode,600" % self.args.master_socket,
                   "-p", self.args.pidfile, "-f", self.args.config]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, timeout=self.timeout + 30, check=False)
        if result.returncode != 0:
            raise CtlError("starting HAProxy failed (exit %d): %s"
                           % (result.returncode, result.stdout.strip()), command=command)
        deadline = time.monotonic() + self.timeout
        while True:
            proc = self.show_proc()
            if proc and proc["workers"]:
                return dict(changed=True, action="started", manager="direct", command=command,
                            **self.describe(proc))
            if time.monotonic() >= deadline:
                raise CtlError("HAProxy was started but no worker answered on the master CLI %s within %ss"
                               % (self.args.master_socket, self.timeout), command=command)
            time.sleep(0.2)

    def reload(self):
        state = self.status()
        if not state["running"]:
            result = self.start()
            result["msg"] = "HAProxy was not running; started it"
            return result
        before = state["proc"]
        if self.use_systemd():
            return self.reload_systemd(before)
        if not state["master_cli"]:
            raise CtlError(
                "HAProxy runs but its master CLI %s does not answer, so a reload cannot be confirmed; "
                "run it in master-worker mode with -S %s" % (self.args.master_socket, self.args.master_socket))
        snapshot = self.snapshot_maps("@1")
        reply = self.send_reload()
        status, detail = parse_reload_reply(reply)
        if status is False:
            raise CtlError("HAProxy refused the new configuration (master CLI reload: Success=0); "
                           "the previous workers keep serving. %s" % detail, reply=reply)
        if status is True:
            after = self.wait_show_proc(self.timeout)
            how = "master CLI reload: Success=1"
        else:
            after = self.confirm_by_show_proc(before)
            how = "master CLI reload; new worker in show proc"
        return self.finish_reload(before, after, snapshot, how)

    def reload_systemd(self, before):
        snapshot = self.snapshot_maps("@1") if before else {}
        main_pid = self.systemd_main_pid()
        children_before = children_of(main_pid) if main_pid else set()
        result = self.systemctl("reload")
        if result.returncode != 0:
            raise CtlError("systemctl reload %s failed: %s" % (self.args.service, result.stdout.strip()))
        if before:
            after = self.confirm_by_show_proc(before)
            return self.finish_reload(before, after, snapshot, "systemctl reload; new worker in show proc")
        # No master CLI: a new worker is a new child of the unit's main (master) process.
        if not main_pid:
            raise CtlError("systemctl reload %s returned but the unit has no main PID to confirm the "
                           "reload with; give HAProxy a master CLI (-S %s)"
                           % (self.args.service, self.args.master_socket))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            new = children_of(main_pid) - children_before
            if new:
                return dict(changed=True, action="reloaded", manager="systemd",
                            confirmed_by="systemctl reload; new child of the master process",
                            master_pid=main_pid, workers=sorted(new),
                            previous_workers=sorted(children_before), restored_runtime_map_entries=[])
            time.sleep(0.2)
        raise CtlError("could not confirm the reload within %ss: the master (pid %d) started no new "
                       "worker; HAProxy probably rejected the new configuration (see journalctl -u %s)"
                       % (self.timeout, main_pid, self.args.service))

    def systemd_main_pid(self):
        result = subprocess.run(["systemctl", "show", "--property=MainPID", "--value", self.args.service],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                universal_newlines=True, timeout=30, check=False)
        text = result.stdout.strip()
        return int(text) if text.isdigit() and int(text) > 0 else None

    def finish_reload(self, before, after, snapshot, how):
        if not after or not after["workers"]:
            raise CtlError("HAProxy reloaded but no current worker is listed by show proc")
        old_pids = {w["pid"] for w in before["workers"]}
        new_pids = [w["pid"] for w in after["workers"] if w["pid"] not in old_pids]
        new_pid = new_pids[0] if new_pids else after["workers"][-1]["pid"]
        restored = self.restore_maps(snapshot, new_pid) if snapshot else []
        return dict(changed=True, action="reloaded", confirmed_by=how,
                    manager="systemd" if self.use_systemd() else "direct",
                    previous_workers=[w["pid"] for w in before["workers"]],
                    restored_runtime_map_entries=restored, **self.describe(after))

    def ensure(self):
        """Start HAProxy when it is not running; reload it when its last reload failed.

        After a failed reload the old workers keep serving the old configuration while
        the file on disk is newer: `[failed: N]` (N > 0) in `show proc` says so, and a
        re-run must not report success until the file on disk really runs.
        """
        state = self.status()
        if not state["running"]:
            return self.start()
        proc = state.get("proc")
        if proc and proc["master"].get("failed", 0) > 0:
            failed = proc["master"]["failed"]
            result = self.reload()
            result["msg"] = ("the last reload had failed ([failed: %d] in show proc); reloaded "
                             "so that the configuration on disk runs" % failed)
            return result
        return dict(changed=False, action="none", msg="HAProxy runs and its last reload succeeded",
                    **self.describe(proc))

    def send_reload(self):
        """Send `reload`; 2.7+ answers after the reload, 2.6 closes at once."""
        try:
            return self.master("reload", timeout=self.timeout)
        except socket.timeout:
            raise CtlError("the master CLI did not answer `reload` within %ss" % self.timeout)

    def confirm_by_show_proc(self, before):
        deadline = time.monotonic() + self.timeout
        last = None
        while time.monotonic() < deadline:
            proc = self.show_proc()
            if proc is not None:
                last = proc
                verdict = reload_confirmed(before, proc)
                if verdict is True:
                    return proc
                if verdict is False:
                    raise CtlError(
                        "HAProxy reports the reload failed ([failed: %d] in show proc); the previous "
                        "workers keep serving the previous configuration. %s"
                        % (proc["master"]["failed"], self.config_check()), show_proc=proc)
            time.sleep(0.2)
        raise CtlError("could not confirm the reload within %ss: no new worker appeared in show proc"
                       % self.timeout, show_proc=last, show_proc_before=before)

    def config_check(self):
        """HAProxy's own words about the configuration on disk (for failure messages)."""
        try:
            result = subprocess.run([self.args.haproxy, "-c", "-f", self.args.config],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    universal_newlines=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return "(could not run haproxy -c: %s)" % exc
        return "haproxy -c -f %s (exit %d): %s" % (self.args.config, result.returncode, result.stdout.strip())

    def add_missing_keys(self):
        """Add keys the file has and the worker lacks; with --key, only those keys."""
        state = self.status()
        if not state["running"] or not state["master_cli"]:
            return dict(changed=False, added=[], msg="HAProxy is not running; nothing to add at runtime")
        loaded = self.loaded_maps("@1")
        wanted = set(self.args.key or [])
        added = []
        for path in self.args.map or []:
            if path not in loaded:
                continue  # loaded with its file at the next start or reload
            with open(path) as handle:
                in_file = parse_map_file(handle.read())
            runtime = self.runtime_map("@1", path) or {}
            for key, value in in_file.items():
                if wanted and key not in wanted:
                    continue
                if key not in runtime:
                    self.map_command("@1", "add map", path, key, value)
                    added.append({"map": path, "key": key, "value": value})
        return dict(changed=bool(added), added=added)

    def describe(self, proc):
        if not proc or not proc.get("master"):
            return {}
        return {
            "master_pid": proc["master"]["pid"],
            "workers": [w["pid"] for w in proc["workers"]],
            "old_workers": [w["pid"] for w in proc["old_workers"]],
            "reloads": proc["master"]["reloads"],
            "failed_reloads": proc["master"]["failed"],
            "version": proc["master"]["version"],
        }


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["status", "start", "ensure", "reload", "add-missing-keys"])
    parser.add_argument("--haproxy", default=DEFAULTS["haproxy"], help="haproxy binary")
    parser.add_argument("--config", default=DEFAULTS["config"])
    parser.add_argument("--master-socket", default=DEFAULTS["master_socket"])
    parser.add_argument("--pidfile", default=DEFAULTS["pidfile"])
    parser.add_argument("--service", default=DEFAULTS["service"], help="systemd unit name")
    parser.add_argument("--manager", choices=["auto", "systemd", "direct"], default="auto",
                        help="auto: systemd when /run/systemd/system exists, else direct")
    parser.add_argument("--map", action="append", default=[],
                        help="map file whose runtime values must survive a reload (repeatable)")
    parser.add_argument("--key", action="append", default=[],
                        help="add-missing-keys: only these keys (repeatable)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for HAProxy to start or confirm a reload")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    haproxy = HAProxy(args)
    try:
        if args.action == "status":
            state = haproxy.status()
            result = dict(changed=False, running=state["running"], master_cli=state["master_cli"],
                          **haproxy.describe(state.get("proc")))
        elif args.action == "start":
            result = haproxy.start()
        elif args.action == "ensure":
            result = haproxy.ensure()
        elif args.action == "reload":
            result = haproxy.reload()
        else:
            result = haproxy.add_missing_keys()
    except CtlError as exc:
        result = dict(failed=True, changed=False, msg=exc.msg, **exc.details)
        print(json.dumps(result, sort_keys=True))
        sys.stderr.write("haproxy_ctl %s: %s\n" % (args.action, exc.msg))
        return 1
    except (OSError, subprocess.SubprocessError) as exc:
        result = dict(failed=True, changed=False, msg="%s: %s" % (type(exc).__name__, exc))
        print(json.dumps(result, sort_keys=True))
        sys.stderr.write("haproxy_ctl %s: %s\n" % (args.action, result["msg"]))
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
