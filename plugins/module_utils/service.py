# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Start and reload a master-worker HAProxy, and prove the new configuration runs.

Every conversation goes through the master CLI (`@1` = the current worker,
`@!<pid>` = one given worker), which reaches exactly the worker meant even
while an old one drains.

A reload re-reads map files, which would silently undo a runtime-only
`set map` (a cutover in its smoke window, or one persisted by hand later).
Setting the values back on the new worker after the reload is too late: that
worker serves requests from the moment it is forked, with the file's values
(measured on 2.6: 1-72 requests went to the other version). So the new worker
is made to *load* the live values instead:

  1. take the release lock of every preserved map (`<map>.lock`, created exclusively): a
     release that holds it refuses the reload; a release that starts during
     it is refused until the reload is done;
  2. read the runtime values of the current worker;
  3. for each map whose runtime differs from its file: save the file as a
     backup beside it, write the runtime values into the file (atomically:
     temp file, fsync, rename), and note the backup in the lock record;
  4. reload and confirm (the new worker parsed the staged file);
  5. put the file back to exactly what it said before (atomically), so a
     deliberate drift stays as the release owner left it; drop the backup;
  6. compare the new worker's values with step 2 (set back any difference)
     and release the lock.

Crash points (process killed, host rebooted) and what they leave:
  - before 3: nothing changed except the lock, held by a dead process;
  - between 3 and 5: the map file holds the values that were live, so the
    next reload, by anyone, serves what was live: no traffic moves; the
    original file is in the backup named in the lock record;
  - after 5: the file is as before, the lock is left held.
The lock record names this module and its process (pid and start time). The
next run of this module on the host sees that the process is gone, restores
the file from the backup (when there is one), removes the backup and the
lock, and reports it (`recovered_reload`). A release meanwhile is refused by
the lock, so nothing can persist a value that the recovery would overwrite.
A reload that cannot be confirmed within the timeout is treated like a crash
between 3 and 5 (the master may still be reading the file): the file keeps
the live values and the lock stays, until the next run recovers it.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import subprocess
import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import (
    create_lock,
    describe_age,
    read_lock,
    replace_lock,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    map_text_values,
    read_map_file,
    remove_map_text_key,
    set_map_text_value,
    write_map_file_atomic,
)
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

# The owner this module writes into a release lock while it reloads; a release
# that finds it is refused, and the role lets this module deal with it.
RELOAD_LOCK_OWNER = "bluegreen.haproxy.haproxy_service reload"


class ServiceError(Exception):
    def __init__(self, msg, **details):
        super(ServiceError, self).__init__(msg)
        self.msg = msg
        self.details = details


class ReloadUnconfirmedError(ServiceError):
    """The reload was sent but neither success nor failure was seen in time."""


class ReleaseLockHeldError(ServiceError):
    """A release (or another reload) holds a map's lock; nothing was changed."""


def short(value, limit=80):
    text = "%s" % (value,)
    return text if len(text) <= limit else text[:limit] + "..."


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


def process_start_time(pid):
    """The kernel's start time of a live process (field 22 of /proc/<pid>/stat), None if gone.

    With the PID it names one process for good: a PID reused after a crash has
    another start time.
    """
    try:
        with open("/proc/%d/stat" % int(pid)) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError, TypeError, ValueError):
        return None
    if not fields or fields[0] in ("Z", "X") or len(fields) < 20:
        return None
    return fields[19]


def process_started_epoch(pid):
    """When a live process started, in epoch seconds (to within a second: /proc/stat's btime), None if gone."""
    start = process_start_time(pid)
    if start is None:
        return None
    try:
        with open("/proc/stat") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot + int(start) / float(os.sysconf("SC_CLK_TCK"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def reload_holder_alive(holder):
    """Whether the process named by one of this module's lock records still runs."""
    start = process_start_time(holder.get("module_pid"))
    return start is not None and start == holder.get("module_pid_start")


def lock_holder_description(path, holder):
    """"'awx-job-42' since 2026-... (0h01m02s ago, phase SWITCH)" for messages."""
    if not holder:
        return "an unknown owner (the lock record %s is empty or unreadable; a run may be writing it)" % path
    facts = ["%s ago" % describe_age(holder)]
    if holder.get("phase"):
        facts.append("phase %s" % short(holder["phase"], 60))
    if holder.get("controller"):
        facts.append("controller %s" % short(holder["controller"], 40))
    if holder.get("module_pid"):
        facts.append("pid %s on %s" % (holder["module_pid"], short(holder.get("host") or "this host", 40)))
    owner = short(holder.get("owner") or "an unknown owner", 60)
    return "%r since %s (%s)" % (owner, holder.get("acquired", "an unknown time"), ", ".join(facts))


def release_lock_refusal(path, holder):
    if (holder or {}).get("owner") == RELOAD_LOCK_OWNER:
        return ReleaseLockHeldError(
            "HAProxy was not reloaded: lock %s is held by %s: another reload of this HAProxy by "
            "haproxy_service is in progress on this host. Nothing was changed; run again when it finished."
            % (path, lock_holder_description(path, holder)), lock_path=path, lock_holder=holder)
    return ReleaseLockHeldError(
        "HAProxy was not reloaded and no map was touched: release lock %s is held by %s; a release of this "
        "map is in progress and a reload now could move its traffic. Wait until the release finished and "
        "run again. If that run is gone, recover it as the release role documents (the rollback or persist "
        "playbook with -e release_lock_force=true), which releases the lock."
        % (path, lock_holder_description(path, holder)), lock_path=path, lock_holder=holder)


def backup_path_of(map_path):
    """Where the map file's own text waits while the file holds the runtime values."""
    directory, name = os.path.split(map_path)
    return os.path.join(directory, ".%s.before-reload" % name)


def staged_map_text(file_text, runtime_values):
    """The map file's text with the runtime values, so a worker loading it serves what is live.

    Only the lines of keys whose value differs are rewritten (comments, order,
    line endings kept); keys the runtime lacks are dropped, keys only the
    runtime has are appended.
    """
    text = file_text
    file_values = map_text_values(file_text)
    for key in file_values:
        if key not in runtime_values:
            text = remove_map_text_key(text, key)
    for key, value in runtime_values.items():
        if file_values.get(key) != value:
            text = set_map_text_value(text, key, value)
    return text


def drift_entries(file_values, runtime_values):
    """[{key, runtime_value, disk_value}] for every key where the runtime and the file differ."""
    keys = list(runtime_values) + [key for key in file_values if key not in runtime_values]
    return [dict(key=key, runtime_value=runtime_values.get(key), disk_value=file_values.get(key))
            for key in keys if runtime_values.get(key) != file_values.get(key)]


class CommandResult(object):
    """What a command did: its exit status and its output (stdout, then stderr)."""

    def __init__(self, returncode, stdout):
        self.returncode = returncode
        self.stdout = stdout


# Exit status of coreutils' timeout when it had to stop the command.
TIMEOUT_EXIT = 124


def run_bounded(command, timeout, module=None):
    """Run `command` (a list) for at most `timeout` seconds: a CommandResult.

    With `module` (the AnsibleModule) through `module.run_command`, so the command gets the
    environment, locale and logging of every other module; run_command has no timeout, so
    coreutils' `timeout` bounds it where installed. Without a module, through subprocess.
    A program that does not exist raises FileNotFoundError either way.
    """
    if module is None:
        completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   universal_newlines=True, timeout=timeout, check=False)
        return CommandResult(completed.returncode, completed.stdout)
    program = command[0]
    found = os.access(program, os.X_OK) if os.sep in program else module.get_bin_path(program) is not None
    if not found:  # run_command would fail_json; the caller decides (as with subprocess)
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)
    timeout_program = module.get_bin_path("timeout")
    seconds = "%d" % max(1, math.ceil(timeout))
    bounded = [timeout_program, "--kill-after=5", seconds] + list(command) if timeout_program else list(command)
    returncode, out, err = module.run_command(bounded, check_rc=False)
    output = (out or "") + (err or "")
    if timeout_program and returncode == TIMEOUT_EXIT:
        output = ("%s did not finish within %s s and was stopped. %s" % (" ".join(command), seconds, output)).strip()
    return CommandResult(returncode, output)


class ReloadLock(object):
    """The release locks of the preserved maps, held by this module for one reload or map change."""

    def __init__(self, paths, maps, module=None):
        self.paths = paths
        self.maps = maps
        self.module = module
        self.records = {}
        self.recovered = []
        self.keep = False

    def __enter__(self):
        try:
            for path in self.paths:
                self.take(path)
        except BaseException:
            self.release()
            raise
        return self

    def __exit__(self, exc_type, exc, traceback):
        if not self.keep:
            self.release()
        return False

    def take(self, path):
        now = time.time()
        record = dict(owner=RELOAD_LOCK_OWNER, host=socket.gethostname(),
                      acquired=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)), acquired_epoch=now,
                      phase="RELOAD: reading the runtime maps", maps=list(self.maps),
                      module_pid=os.getpid(), module_pid_start=process_start_time(os.getpid()), backups={})
        for attempt in range(3):
            try:
                if create_lock(path, record):
                    self.records[path] = record
                    return
            except OSError as exc:
                raise ServiceError("cannot create the lock %s (%s); the map's directory must be writable by "
                                   "this module's user" % (path, exc), lock_path=path)
            holder = read_lock(path)
            if holder is None:
                continue  # released between our create and our read
            if holder.get("owner") == RELOAD_LOCK_OWNER and not reload_holder_alive(holder):
                self.recover(path, holder)
                continue
            raise release_lock_refusal(path, holder)
        raise release_lock_refusal(path, read_lock(path))

    def recover(self, path, holder):
        """Finish what a reload that died left: the files back from their backups, then its lock off."""
        restored = []
        for map_path, backup in sorted((holder.get("backups") or {}).items()):
            if not os.path.exists(backup):
                continue
            original = read_map_file(backup)
            write_map_file_atomic(map_path, original, module=self.module)
            os.unlink(backup)
            restored.append(map_path)
        current = read_lock(path)
        if current == holder:
            os.unlink(path)
        self.recovered.append(dict(lock_path=path, holder=holder, restored_map_files=restored))

    def set_phase(self, phase, backups=None):
        for path, record in self.records.items():
            updated = dict(record, phase=phase)
            if backups is not None:
                updated["backups"] = dict(backups)
            if read_lock(path) != record:
                raise ServiceError("lock %s was taken over during the reload (now held by %s); stopped"
                                   % (path, lock_holder_description(path, read_lock(path))), lock_path=path)
            replace_lock(path, updated)
            self.records[path] = updated

    def release(self):
        for path, record in list(self.records.items()):
            # Only our own record: someone who forced the lock away keeps it.
            if read_lock(path) == record:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            del self.records[path]


class HAProxyService(object):
    """One HAProxy on this host, as the `haproxy_service` module's options describe it."""

    def __init__(self, binary, config, master_socket, pidfile, service_name, manager, preserve_maps, timeout,
                 release_lock_path=None, module=None):
        # With `module` (the AnsibleModule): commands through module.run_command and map files
        # committed through module.atomic_move; without it, subprocess and a plain rename.
        self.module = module
        self.binary = binary
        self.config = config
        self.master_socket = master_socket
        self.pidfile = pidfile
        self.service_name = service_name
        self.manager = manager
        self.preserve_maps = preserve_maps or []
        self.release_lock_path = release_lock_path
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
        return run_bounded(["systemctl"] + list(words) + [self.service_name], self.timeout + 30, self.module)

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
            result = run_bounded([self.binary, "-c", "-f", self.config], 60, self.module)
        except (OSError, subprocess.SubprocessError) as exc:
            return "(could not run haproxy -c: %s)" % exc
        return "haproxy -c -f %s (exit %d): %s" % (self.config, result.returncode, result.stdout.strip())

    # -- locks ------------------------------------------------------------

    def lock_paths(self):
        """The release locks guarding the preserved maps: `<map>.lock` each, or the one given."""
        if not self.preserve_maps:
            return []
        if self.release_lock_path:
            return [self.release_lock_path]
        return [path + ".lock" for path in self.preserve_maps]

    def reload_lock(self):
        return ReloadLock(self.lock_paths(), self.preserve_maps, module=self.module)

    def check_locks(self):
        """Read-only (check mode): refuse as the real run would while a live holder has a lock."""
        for path in self.lock_paths():
            holder = read_lock(path)
            if holder is None:
                continue
            if holder.get("owner") == RELOAD_LOCK_OWNER and not reload_holder_alive(holder):
                continue  # a dead reload: the real run recovers it
            raise release_lock_refusal(path, holder)

    def recover_abandoned(self, check_mode=False):
        """Finish what a run of this module that died left: map files back from their backups, its lock off."""
        dead = {}
        for path in self.lock_paths():
            holder = read_lock(path)
            if holder and holder.get("owner") == RELOAD_LOCK_OWNER and not reload_holder_alive(holder):
                dead[path] = holder
        if not dead:
            return []
        if check_mode:
            return [dict(lock_path=path, holder=holder,
                         restored_map_files=sorted(map_path for map_path, backup in (holder.get("backups") or {}).items()
                                                   if os.path.exists(backup)))
                    for path, holder in sorted(dead.items())]
        with ReloadLock(sorted(dead), self.preserve_maps, module=self.module) as lock:
            pass
        return lock.recovered

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

    def drift(self, snapshot):
        """{map: (file_text, [{key, runtime_value, disk_value}])} for the maps whose file differs from runtime."""
        found = {}
        for path, runtime_values in snapshot.items():
            file_text = read_map_file(path)
            entries = drift_entries(map_text_values(file_text), runtime_values)
            if entries:
                found[path] = (file_text, entries)
        return found

    def stage_runtime_values(self, snapshot, lock):
        """Steps 3 of the module docstring: back up each drifted file, then write the runtime values into it."""
        staged = []
        backups = {}
        for path, (file_text, entries) in sorted(self.drift(snapshot).items()):
            text = staged_map_text(file_text, snapshot[path])
            if map_text_values(text) != snapshot[path]:
                raise ServiceError("cannot write the runtime values of %s into a map file (a key or value does "
                                   "not survive the file format); not reloaded, nothing changed" % path, map=path)
            backup = backup_path_of(path)
            write_map_file_atomic(backup, file_text, module=self.module)
            backups[path] = backup
            # The record names the backup before the file changes, so a crash from here on is recoverable.
            lock.set_phase("RELOAD: map files hold the runtime values (originals in the backups)", backups)
            write_map_file_atomic(path, text, module=self.module)
            staged.append(dict(map=path, backup=backup, entries=entries, original_text=file_text, staged_text=text))
        return staged

    def unstage(self, staged, lock):
        """Step 5: every staged file back to exactly what it said before; backups dropped."""
        problems = []
        for item in staged:
            current = read_map_file(item["map"])
            if current != item["staged_text"]:
                # Someone wrote the file meanwhile (not through the lock): theirs wins.
                problems.append("%s was changed by someone else during the reload; left as they wrote it "
                                "(its text before the reload is in %s)" % (item["map"], item["backup"]))
                continue
            write_map_file_atomic(item["map"], item["original_text"], module=self.module)
            os.unlink(item["backup"])
        if staged and lock.records:
            lock.set_phase("RELOAD: map files restored", {})
        return problems

    def unstage_or_keep_lock(self, staged, lock):
        """unstage(); when that fails, the lock and the backups stay for the next run to recover."""
        try:
            return self.unstage(staged, lock)
        except BaseException:
            lock.keep = True
            raise

    def put_map_value(self, target, path, key, value, key_exists):
        verb = "set map" if key_exists else "add map"
        self.master.run("%s %s" % (target, verb), path, key, value, expect_empty=True)

    def restore_maps(self, snapshot, worker_pid):
        """Set back the runtime values the new worker does not serve (should be none: it loaded them)."""
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

    def missing_keys(self):
        """[{map, key, value}]: keys the map files have and the running worker's maps lack (new services)."""
        if self.show_proc() is None:
            return []
        missing = []
        for path in self.preserve_maps:
            runtime = self.runtime_map("@1", path)
            if runtime is None:
                continue
            for key, value in map_text_values(read_map_file(path)).items():
                if key not in runtime:
                    missing.append(dict(map=path, key=key, value=value))
        return missing

    def add_missing_keys(self, check_mode=False):
        """Add to the running worker the keys its map files have and its maps lack, under the lock."""
        missing = self.missing_keys()
        if not missing:
            return [], []
        if check_mode:
            self.check_locks()
            return missing, []
        with self.reload_lock() as lock:
            lock.set_phase("ADD KEYS: new keys of the map files to the running maps")
            # Read again under the lock: a release may have added them meanwhile.
            missing = self.missing_keys()
            for item in missing:
                self.put_map_value("@1", item["map"], item["key"], item["value"], key_exists=False)
        return missing, lock.recovered

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
        result = run_bounded(command, self.timeout + 30, self.module)
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
        before = state["proc"]
        if check_mode:
            self.check_locks()
            staged = self.drift(self.snapshot_maps()) if before else {}
            return dict(changed=True, action="reloaded", msg="HAProxy would be reloaded",
                        staged_map_files=[dict(map=path, backup=backup_path_of(path), entries=entries)
                                          for path, (text, entries) in sorted(staged.items())],
                        restored_runtime_map_entries=[], recovered_reload=[], **describe_processes(before))
        if not self.use_systemd() and not state["master_cli"]:
            raise ServiceError(
                "HAProxy runs but its master CLI %s does not answer, so a reload cannot be confirmed; run it "
                "in master-worker mode with -S %s" % (self.master_socket, self.master_socket))
        with self.reload_lock() as lock:
            # Without a master CLI (systemd only) the runtime maps cannot be read: nothing to keep.
            snapshot = self.snapshot_maps() if before else {}
            staged = self.stage_runtime_values(snapshot, lock)
            try:
                after, confirmed_by, result = self.send_and_confirm(before)
            except ReloadUnconfirmedError as exc:
                if staged:
                    # The master may still be reading the files: they keep the live values, and the
                    # lock (with the backups' names) stays for the next run to recover.
                    lock.keep = True
                    exc.msg += ("; the map files %s keep the runtime values (their own text is in %s) and the lock "
                                "%s stays held, so nothing moves traffic; run the role (or this module) again "
                                "to put them back" % (", ".join(item["map"] for item in staged),
                                                      ", ".join(item["backup"] for item in staged),
                                                      ", ".join(lock.paths)))
                raise
            except BaseException:
                # The reload failed: the master has finished with the files, put them back.
                self.unstage_or_keep_lock(staged, lock)
                raise
            problems = self.unstage_or_keep_lock(staged, lock)
            if result is None:
                result = self.finish_reload(before, after, snapshot, confirmed_by)
            result["staged_map_files"] = [dict(map=item["map"], backup=item["backup"], entries=item["entries"])
                                          for item in staged]
            result["recovered_reload"] = lock.recovered
            if problems:
                result["warnings"] = problems
        return result

    def send_and_confirm(self, before):
        """(show proc after, how it was confirmed, None) or (None, None, a complete result without master CLI)."""
        if self.use_systemd():
            return self.reload_systemd(before)
        status, detail = parse_reload_reply(self.send_reload())
        if status is False:
            raise ServiceError("HAProxy refused the new configuration (master CLI reload: Success=0); the "
                               "previous workers keep serving. %s" % detail)
        if status is True:
            return self.wait_show_proc(), "master CLI reload: Success=1", None
        return self.confirm_by_show_proc(before), "master CLI reload; new worker in show proc", None

    def reload_systemd(self, before):
        main_pid = self.systemd_main_pid()
        children_before = children_of(main_pid) if main_pid else set()
        result = self.systemctl("reload")
        if result.returncode != 0:
            raise ServiceError("systemctl reload %s failed: %s" % (self.service_name, result.stdout.strip()))
        if before:
            return self.confirm_by_show_proc(before), "systemctl reload; new worker in show proc", None
        # Without a master CLI a new worker shows as a new child of the unit's main process.
        if not main_pid:
            raise ReloadUnconfirmedError(
                "systemctl reload %s returned but the unit has no main PID to confirm it with; give HAProxy a "
                "master CLI (-S %s)" % (self.service_name, self.master_socket))
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            new = children_of(main_pid) - children_before
            if new:
                return None, None, dict(changed=True, action="reloaded", manager="systemd", master_pid=main_pid,
                                        confirmed_by="systemctl reload; new child of the master process",
                                        workers=sorted(new), previous_workers=sorted(children_before),
                                        restored_runtime_map_entries=[])
            time.sleep(POLL_SECONDS)
        raise ReloadUnconfirmedError(
            "could not confirm the reload within %ss: the master (pid %d) started no new worker; HAProxy "
            "probably rejected the new configuration (see journalctl -u %s)"
            % (self.timeout, main_pid, self.service_name))

    def send_reload(self):
        """`reload`: 2.7+ answers once the reload finished, 2.6 closes at once."""
        reloader = RuntimeAPIClient(self.master_socket, self.timeout)
        try:
            return reloader.raw("reload")
        except RuntimeAPITimeoutError:
            raise ReloadUnconfirmedError("the master CLI did not answer `reload` within %ss" % self.timeout)

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
        raise ReloadUnconfirmedError("could not confirm the reload within %ss: no new worker appeared in show proc"
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

    def config_newer_than_workers(self, proc):
        """A description when the config file was written after every current worker started, else None.

        The role writes the file and then reloads (a handler). When that reload
        did not happen (refused while a release held the lock, the play died),
        the next run finds the file unchanged and would never notify the handler:
        the file's age tells instead. A second of slack covers /proc's rounding.
        """
        if not proc or not proc.get("workers"):
            return None
        try:
            written = os.stat(self.config).st_mtime
        except OSError:
            return None
        started = [process_started_epoch(worker["pid"]) for worker in proc["workers"]]
        if any(epoch is None for epoch in started):
            return None  # not in this PID namespace: cannot tell
        if written > max(started) + 1.0:
            return "file written %.0fs after the newest worker started" % (written - max(started))
        return None

    def ensure_started(self, check_mode=False):
        """Start HAProxy when it is not running; reload it when its last reload failed or was missed.

        After a failed reload the old workers keep serving an older configuration
        than the file (`[failed: N]` in `show proc`); after a missed one the file
        is newer than the workers. A re-run must not pass until the file on disk
        really runs.
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
        newer = self.config_newer_than_workers(proc)
        if newer:
            result = self.reload(check_mode)
            result["msg"] = ("%s was written after the running worker started (%s); a reload was missed or "
                             "refused (for example by a release lock), so it was reloaded now" % (self.config, newer))
            return result
        return dict(changed=False, action="none", msg="HAProxy runs and its last reload succeeded",
                    **describe_processes(proc))
