# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start and reload a master-worker HAProxy, and prove the new configuration runs.

Every conversation goes through the master CLI (`@1` = the current worker,
`@!<pid>` = one given worker), which reaches exactly the worker meant even
while an old one drains. A reload re-reads map files, which would silently
undo a runtime-only `set map` (a cutover in progress); the runtime values of
the maps named in `preserve_maps` are read before and set back right after.
"""

from __future__ import annotations

import os
import subprocess
import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import map_text_values, read_map_file
from ansible_collections.bluegreen.haproxy.plugins.module_utils.master_cli import (
    describe_processes,
    parse_reload_reply,
    parse_show_proc,
    reload_confirmed,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    entries_to_dict,
    parse_map_entries,
    parse_map_list,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    RuntimeAPITimeoutError,
)

POLL_SECONDS = 0.2


class ServiceError(Exception):
    def __init__(self, msg, **details):
        super(ServiceError, self).__init__(msg)
        self.msg = msg
        self.details = details


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


class HAProxyService(object):
    """One HAProxy on this host, as the `haproxy_service` module's options describe it."""

    def __init__(self, binary, config, master_socket, pidfile, service_name, manager, preserve_maps, timeout):
        self.binary = binary
        self.config = config
        self.master_socket = master_socket
        self.pidfile = pidfile
        self.service_name = service_name
        self.manager = manager
        self.preserve_maps = preserve_maps or []
        self.timeout = float(timeout)
        self.master = RuntimeAPIClient(master_socket, min(self.timeout, 10.0))

    # -- state ------------------------------------------------------------

    def use_systemd(self):
        if self.manager in ("systemd", "direct"):
            return self.manager == "systemd"
        return os.path.isdir("/run/systemd/system")

    def show_proc(self):
        """`show proc`, or None when the master CLI does not answer."""
        try:
            proc = parse_show_proc(self.master.raw("show proc"))
        except RuntimeAPIError:
            return None
        return proc if proc["master"] else None

    def wait_show_proc(self, until=lambda proc: True):
        deadline = time.monotonic() + self.timeout
        while True:
            proc = self.show_proc()
            if (proc is not None and until(proc)) or time.monotonic() >= deadline:
                return proc
            time.sleep(POLL_SECONDS)

    def pidfile_pid(self):
        """The PID in the pidfile when it is a live haproxy process."""
        try:
            with open(self.pidfile) as handle:
                pid = int(handle.read().split()[0])
            with open("/proc/%d/stat" % pid) as handle:
                stat = handle.read()
        except (OSError, ValueError, IndexError):
            return None
        state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
        command = stat[stat.find("(") + 1:stat.rfind(")")]
        return pid if state not in ("Z", "X") and "haproxy" in command else None

    def systemctl(self, *words):
        return subprocess.run(["systemctl"] + list(words) + [self.service_name], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=self.timeout + 30,
                              check=False)

    def systemd_main_pid(self):
        result = self.systemctl("show", "--property=MainPID", "--value")
        text = result.stdout.strip()
        return int(text) if text.isdigit() and int(text) > 0 else None

    def status(self):
        proc = self.show_proc()
        if proc is not None:
            return dict(running=True, master_cli=True, proc=proc)
        if self.use_systemd():
            return dict(running=self.systemctl("is-active", "--quiet").returncode == 0, master_cli=False, proc=None)
        pid = self.pidfile_pid()
        return dict(running=pid is not None, master_cli=False, proc=None, pidfile_pid=pid)

    def config_check(self):
        """HAProxy's own words about the configuration on disk, for failure messages."""
        try:
            result = subprocess.run([self.binary, "-c", "-f", self.config], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, universal_newlines=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            return "(could not run haproxy -c: %s)" % exc
        return "haproxy -c -f %s (exit %d): %s" % (self.config, result.returncode, result.stdout.strip())

    # -- maps -------------------------------------------------------------

    def runtime_map(self, target, path):
        """{key: value} of a map in one worker, None when that worker has not loaded it."""
        if path not in [loaded["name"] for loaded in parse_map_list(self.master.run("%s show map" % target))]:
            return None
        return entries_to_dict(parse_map_entries(self.master.run("%s show map" % target, path)))

    def snapshot_maps(self):
        snapshot = {}
        for path in self.preserve_maps:
            entries = self.runtime_map("@1", path)
            if entries is not None:
                snapshot[path] = entries
        return snapshot

    def put_map_value(self, target, path, key, value, key_exists):
        verb = "set map" if key_exists else "add map"
        self.master.run("%s %s" % (target, verb), path, key, value, expect_empty=True)

    def restore_maps(self, snapshot, worker_pid):
        """Put back the runtime values the reload replaced with the files' values."""
        target = "@!%d" % worker_pid
        restored = []
        for path, before in snapshot.items():
            after = self.runtime_map(target, path)
            if after is None:
                continue
            for key, value in before.items():
                if after.get(key) == value:
                    continue
                self.put_map_value(target, path, key, value, key_exists=key in after)
                restored.append(dict(map=path, key=key, value=value, file_value=after.get(key)))
        return restored

    def add_missing_keys(self, check_mode=False):
        """Add to the running worker the keys its map files have and its maps lack (new services)."""
        if self.show_proc() is None:
            return []
        added = []
        for path in self.preserve_maps:
            runtime = self.runtime_map("@1", path)
            if runtime is None:
                continue
            for key, value in map_text_values(read_map_file(path)).items():
                if key not in runtime:
                    if not check_mode:
                        self.put_map_value("@1", path, key, value, key_exists=False)
                    added.append(dict(map=path, key=key, value=value))
        return added

    # -- actions ----------------------------------------------------------

    def start(self, check_mode=False):
        state = self.status()
        if state["running"]:
            return dict(changed=False, action="none", msg="HAProxy is already running",
                        **describe_processes(state.get("proc")))
        if check_mode:
            return dict(changed=True, action="started", msg="HAProxy is not running; it would be started")
        if self.use_systemd():
            result = self.systemctl("start")
            if result.returncode != 0:
                raise ServiceError("systemctl start %s failed: %s" % (self.service_name, result.stdout.strip()))
            return dict(changed=True, action="started", manager="systemd",
                        **describe_processes(self.wait_show_proc(lambda proc: proc["workers"])))
        if state.get("pidfile_pid"):
            raise ServiceError(
                "HAProxy (pid %d from %s) runs but its master CLI %s does not answer; restart it in "
                "master-worker mode with -S %s" % (state["pidfile_pid"], self.pidfile, self.master_socket,
                                                   self.master_socket))
        command = [self.binary, "-W", "-D", "-S", "%s,mode,600" % self.master_socket, "-p", self.pidfile,
                   "-f", self.config]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True, timeout=self.timeout + 30, check=False)
        if result.returncode != 0:
            raise ServiceError("starting HAProxy failed (exit %d): %s" % (result.returncode, result.stdout.strip()),
                               command=command)
        proc = self.wait_show_proc(lambda proc: proc["workers"])
        if not proc or not proc["workers"]:
            raise ServiceError("HAProxy was started but no worker answered on the master CLI %s within %ss"
                               % (self.master_socket, self.timeout), command=command)
        return dict(changed=True, action="started", manager="direct", command=command, **describe_processes(proc))

    def reload(self, check_mode=False):
        state = self.status()
        if not state["running"]:
            result = self.start(check_mode)
            result["msg"] = "HAProxy was not running; %s it" % ("would start" if check_mode else "started")
            return result
        if check_mode:
            return dict(changed=True, action="reloaded", msg="HAProxy would be reloaded",
                        **describe_processes(state.get("proc")))
        before = state["proc"]
        if self.use_systemd():
            return self.reload_systemd(before)
        if not state["master_cli"]:
            raise ServiceError(
                "HAProxy runs but its master CLI %s does not answer, so a reload cannot be confirmed; run it "
                "in master-worker mode with -S %s" % (self.master_socket, self.master_socket))
        snapshot = self.snapshot_maps()
        status, detail = parse_reload_reply(self.send_reload())
        if status is False:
            raise ServiceError("HAProxy refused the new configuration (master CLI reload: Success=0); the "
                               "previous workers keep serving. %s" % detail)
        if status is True:
            return self.finish_reload(before, self.wait_show_proc(), snapshot, "master CLI reload: Success=1")
        return self.finish_reload(before, self.confirm_by_show_proc(before), snapshot,
                                  "master CLI reload; new worker in show proc")

    def reload_systemd(self, before):
        snapshot = self.snapshot_maps() if before else {}
        main_pid = self.systemd_main_pid()
        children_before = children_of(main_pid) if main_pid else set()
        result = self.systemctl("reload")
        if result.returncode != 0:
            raise ServiceError("systemctl reload %s failed: %s" % (self.service_name, result.stdout.strip()))
        if before:
            return self.finish_reload(before, self.confirm_by_show_proc(before), snapshot,
                                      "systemctl reload; new worker in show proc")
        # Without a master CLI a new worker shows as a new child of the unit's main process.
        if not main_pid:
            raise ServiceError("systemctl reload %s returned but the unit has no main PID to confirm it with; "
                               "give HAProxy a master CLI (-S %s)" % (self.service_name, self.master_socket))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            new = children_of(main_pid) - children_before
            if new:
                return dict(changed=True, action="reloaded", manager="systemd", master_pid=main_pid,
                            confirmed_by="systemctl reload; new child of the master process",
                            workers=sorted(new), previous_workers=sorted(children_before),
                            restored_runtime_map_entries=[])
            time.sleep(POLL_SECONDS)
        raise ServiceError("could not confirm the reload within %ss: the master (pid %d) started no new worker; "
                           "HAProxy probably rejected the new configuration (see journalctl -u %s)"
                           % (self.timeout, main_pid, self.service_name))

    def send_reload(self):
        """`reload`: 2.7+ answers once the reload finished, 2.6 closes at once."""
        reloader = RuntimeAPIClient(self.master_socket, self.timeout)
        try:
            return reloader.raw("reload")
        except RuntimeAPITimeoutError:
            raise ServiceError("the master CLI did not answer `reload` within %ss" % self.timeout)

    def confirm_by_show_proc(self, before):
        verdicts = {}

        def decided(proc):
            verdicts["last"] = reload_confirmed(before, proc)
            return verdicts["last"] is not None

        proc = self.wait_show_proc(decided)
        if verdicts.get("last") is True:
            return proc
        if verdicts.get("last") is False:
            raise ServiceError("HAProxy reports the reload failed ([failed: %d] in show proc); the previous "
                               "workers keep serving the previous configuration. %s"
                               % (proc["master"]["failed"], self.config_check()), show_proc=proc)
        raise ServiceError("could not confirm the reload within %ss: no new worker appeared in show proc"
                           % self.timeout, show_proc=proc, show_proc_before=before)

    def finish_reload(self, before, after, snapshot, confirmed_by):
        if not after or not after["workers"]:
            raise ServiceError("HAProxy reloaded but show proc lists no current worker")
        old_pids = {worker["pid"] for worker in before["workers"]}
        new_pids = [worker["pid"] for worker in after["workers"] if worker["pid"] not in old_pids]
        new_pid = new_pids[0] if new_pids else after["workers"][-1]["pid"]
        restored = self.restore_maps(snapshot, new_pid) if snapshot else []
        return dict(changed=True, action="reloaded", confirmed_by=confirmed_by,
                    manager="systemd" if self.use_systemd() else "direct",
                    previous_workers=sorted(old_pids), restored_runtime_map_entries=restored,
                    **describe_processes(after))

    def ensure_started(self, check_mode=False):
        """Start HAProxy when it is not running; reload it when its last reload failed.

        After a failed reload the old workers keep serving an older configuration
        than the file (`[failed: N]` in `show proc`); a re-run must not pass until
        the file on disk really runs.
        """
        state = self.status()
        if not state["running"]:
            return self.start(check_mode)
        proc = state.get("proc")
        if proc and proc["master"].get("failed", 0) > 0:
            failed = proc["master"]["failed"]
            result = self.reload(check_mode)
            result["msg"] = ("the last reload had failed ([failed: %d] in show proc); reloaded so that the "
                             "configuration on disk runs" % failed)
            return result
        return dict(changed=False, action="none", msg="HAProxy runs and its last reload succeeded",
                    **describe_processes(proc))
