"""service.py without HAProxy: staging the runtime values into a map file, the reload lock, crash recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils import service as service_module
from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import map_text_values
from ansible_collections.bluegreen.haproxy.plugins.module_utils.service import (
    RELOAD_LOCK_OWNER,
    HAProxyService,
    ReleaseLockHeldError,
    ReloadLock,
    ReloadUnconfirmedError,
    ServiceError,
    backup_path_of,
    drift_entries,
    process_start_time,
    staged_map_text,
)

MAP_TEXT = "# bluegreen switch: key -> live backend\nactive backend_blue\n\nshop backend_shop_blue  \n"


def dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def map_path(tmp_path):
    path = tmp_path / "maps" / "bluegreen.map"
    path.parent.mkdir()
    path.write_text(MAP_TEXT)
    return str(path)


def release_holder(**extra):
    record = dict(owner="awx-job-42", acquired="2026-11-29T20:00:00Z", acquired_epoch=time.time() - 125,
                  phase="SMOKE", controller="ctl1")
    record.update(extra)
    return record


def write_lock(path, record):
    with open(path, "w") as handle:
        json.dump(record, handle)


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


# -- staging -----------------------------------------------------------------


def test_staged_text_serves_the_runtime_values_and_keeps_everything_else():
    runtime = {"active": "backend_green", "shop": "backend_shop_blue"}
    staged = staged_map_text(MAP_TEXT, runtime)
    assert map_text_values(staged) == runtime
    assert staged == MAP_TEXT.replace("active backend_blue", "active backend_green")


def test_staged_text_drops_keys_the_runtime_lacks_and_appends_runtime_only_keys():
    staged = staged_map_text(MAP_TEXT, {"active": "backend_blue", "api": "backend_api_green"})
    assert map_text_values(staged) == {"active": "backend_blue", "api": "backend_api_green"}
    assert staged.startswith("# bluegreen switch")


def test_staged_text_keeps_crlf_lines():
    text = "active backend_blue\r\nother backend_x\r\n"
    staged = staged_map_text(text, {"active": "backend_green", "other": "backend_x"})
    assert staged == "active backend_green\r\nother backend_x\r\n"


def test_drift_entries_name_each_side():
    assert drift_entries({"active": "backend_blue", "gone": "b"}, {"active": "backend_green", "new": "n"}) == [
        dict(key="active", runtime_value="backend_green", disk_value="backend_blue"),
        dict(key="new", runtime_value="n", disk_value=None),
        dict(key="gone", runtime_value=None, disk_value="b"),
    ]
    assert drift_entries({"active": "x"}, {"active": "x"}) == []


def test_backup_sits_beside_the_map_hidden():
    assert backup_path_of("/etc/haproxy/maps/bluegreen.map") == "/etc/haproxy/maps/.bluegreen.map.before-reload"


def test_process_start_time_tells_live_from_gone():
    assert process_start_time(os.getpid()) is not None
    assert process_start_time(dead_pid()) is None
    assert process_start_time(None) is None


# -- the lock ----------------------------------------------------------------


def test_the_lock_is_held_during_and_removed_after(map_path):
    lock_path = map_path + ".lock"
    with ReloadLock([lock_path], [map_path]) as lock:
        record = read_json(lock_path)
        assert record["owner"] == RELOAD_LOCK_OWNER
        assert record["module_pid"] == os.getpid()
        assert record["module_pid_start"] == process_start_time(os.getpid())
        assert record["acquired_epoch"] <= time.time() and record["phase"].startswith("RELOAD")
        lock.set_phase("RELOAD: x", {map_path: "/b"})
        assert read_json(lock_path)["backups"] == {map_path: "/b"}
    assert not os.path.exists(lock_path)


def test_a_release_lock_refuses_and_nothing_changes(map_path):
    lock_path = map_path + ".lock"
    holder = release_holder()
    write_lock(lock_path, holder)
    with pytest.raises(ReleaseLockHeldError) as caught:
        with ReloadLock([lock_path], [map_path]):
            pytest.fail("entered while a release holds the lock")
    msg = caught.value.msg
    for part in ("release lock %s is held by 'awx-job-42'" % lock_path, "since 2026-11-29T20:00:00Z",
                 "0h02m0", "phase SMOKE", "controller ctl1", "no map was touched",
                 "release_lock_force=true"):
        assert part in msg, (part, msg)
    assert caught.value.details["lock_holder"] == holder
    assert read_json(lock_path) == holder
    with open(map_path) as handle:
        assert handle.read() == MAP_TEXT


def test_an_unreadable_lock_refuses_with_an_unknown_owner(map_path, monkeypatch):
    monkeypatch.setattr(service_module, "POLL_SECONDS", 0.01)
    lock_path = map_path + ".lock"
    open(lock_path, "w").close()
    with pytest.raises(ReleaseLockHeldError, match="unknown owner"):
        ReloadLock([lock_path], [map_path]).__enter__()
    assert os.path.getsize(lock_path) == 0


def test_a_second_lock_refused_releases_the_first(tmp_path):
    first, second = str(tmp_path / "a.lock"), str(tmp_path / "b.lock")
    write_lock(second, release_holder())
    with pytest.raises(ReleaseLockHeldError):
        ReloadLock([first, second], []).__enter__()
    assert not os.path.exists(first)


def test_a_live_reload_holds_its_lock(map_path):
    lock_path = map_path + ".lock"
    live = dict(owner=RELOAD_LOCK_OWNER, acquired_epoch=time.time(), module_pid=os.getpid(),
                module_pid_start=process_start_time(os.getpid()), backups={})
    write_lock(lock_path, live)
    with pytest.raises(ReleaseLockHeldError, match="another reload of this HAProxy by haproxy_service"):
        ReloadLock([lock_path], [map_path]).__enter__()
    assert read_json(lock_path) == live


def test_a_reused_pid_is_not_the_holder(map_path):
    """Same PID, another start time: the process that held the lock is gone."""
    lock_path = map_path + ".lock"
    write_lock(lock_path, dict(owner=RELOAD_LOCK_OWNER, acquired_epoch=time.time(), module_pid=os.getpid(),
                               module_pid_start="1", backups={}))
    with ReloadLock([lock_path], [map_path]) as lock:
        assert lock.recovered and lock.recovered[0]["restored_map_files"] == []


def test_a_dead_reload_is_recovered_from_its_backup(map_path):
    lock_path, backup = map_path + ".lock", backup_path_of(map_path)
    with open(backup, "w") as handle:
        handle.write(MAP_TEXT)
    staged = MAP_TEXT.replace("backend_blue\n", "backend_green\n", 1)
    with open(map_path, "w") as handle:
        handle.write(staged)
    dead = dict(owner=RELOAD_LOCK_OWNER, acquired_epoch=time.time(), module_pid=dead_pid(),
                module_pid_start="1", backups={map_path: backup})
    write_lock(lock_path, dead)
    with ReloadLock([lock_path], [map_path]) as lock:
        assert read_json(lock_path)["module_pid"] == os.getpid(), "then taken by this run"
    assert lock.recovered == [dict(lock_path=lock_path, holder=dead, restored_map_files=[map_path])]
    with open(map_path) as handle:
        assert handle.read() == MAP_TEXT
    assert not os.path.exists(backup) and not os.path.exists(lock_path)


def test_release_leaves_a_lock_someone_took_over(map_path):
    lock_path = map_path + ".lock"
    with ReloadLock([lock_path], [map_path]) as lock:
        write_lock(lock_path, release_holder())
        with pytest.raises(ServiceError, match="taken over"):
            lock.set_phase("RELOAD: next")
    assert read_json(lock_path)["owner"] == "awx-job-42"


# -- the reload flow, HAProxy replaced by stubs ----------------------------------


class StubService(HAProxyService):
    """HAProxyService with the conversations with HAProxy replaced; the files and locks are real."""

    def __init__(self, map_path, outcome, runtime):
        super(StubService, self).__init__(binary="/bin/false", config="/nonexistent", master_socket="/nonexistent",
                                          pidfile="/nonexistent", service_name="haproxy", manager="direct",
                                          preserve_maps=[map_path], timeout=1)
        self.outcome, self.runtime, self.seen_at_reload = outcome, runtime, None
        self.proc = dict(master=dict(pid=1, reloads=0, failed=0, version="2.6"), workers=[dict(pid=10)],
                         old_workers=[])

    def status(self):
        return dict(running=True, master_cli=True, proc=self.proc)

    def snapshot_maps(self):
        return {self.preserve_maps[0]: dict(self.runtime)}

    def send_and_confirm(self, before):
        with open(self.preserve_maps[0]) as handle:
            self.seen_at_reload = handle.read()
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return dict(self.proc, workers=[dict(pid=11)]), "stub", None

    def restore_maps(self, snapshot, worker_pid):
        return []


RUNTIME_GREEN = {"active": "backend_green", "shop": "backend_shop_blue"}


def test_the_new_worker_reads_the_runtime_values_then_the_file_is_put_back(map_path):
    service = StubService(map_path, outcome=None, runtime=RUNTIME_GREEN)
    result = service.reload()
    assert map_text_values(service.seen_at_reload) == RUNTIME_GREEN, "what the new worker loaded"
    with open(map_path) as handle:
        assert handle.read() == MAP_TEXT, "the file as it was, byte for byte"
    assert result["staged_map_files"] == [dict(map=map_path, backup=backup_path_of(map_path), entries=[
        dict(key="active", runtime_value="backend_green", disk_value="backend_blue")])]
    assert sorted(os.listdir(os.path.dirname(map_path))) == ["bluegreen.map"]


def test_no_drift_no_file_write(map_path):
    before = os.stat(map_path)
    service = StubService(map_path, outcome=None, runtime={"active": "backend_blue", "shop": "backend_shop_blue"})
    assert service.reload()["staged_map_files"] == []
    assert os.stat(map_path).st_ino == before.st_ino and os.stat(map_path).st_mtime == before.st_mtime


def test_a_refused_reload_puts_the_file_back_and_releases_the_lock(map_path):
    service = StubService(map_path, outcome=ServiceError("refused"), runtime=RUNTIME_GREEN)
    with pytest.raises(ServiceError, match="refused"):
        service.reload()
    with open(map_path) as handle:
        assert handle.read() == MAP_TEXT
    assert sorted(os.listdir(os.path.dirname(map_path))) == ["bluegreen.map"]


def test_an_unconfirmed_reload_keeps_the_live_values_and_the_lock_until_recovered(map_path):
    service = StubService(map_path, outcome=ReloadUnconfirmedError("could not confirm"), runtime=RUNTIME_GREEN)
    with pytest.raises(ReloadUnconfirmedError) as caught:
        service.reload()
    assert "keep the runtime values" in caught.value.msg and "run the role" in caught.value.msg
    with open(map_path) as handle:
        assert map_text_values(handle.read()) == RUNTIME_GREEN, "a reload by anyone serves what was live"
    record = read_json(map_path + ".lock")
    assert record["backups"] == {map_path: backup_path_of(map_path)}
    # This process still runs, so the lock is not recoverable yet; once it "died", the next run recovers.
    record["module_pid"] = dead_pid()
    write_lock(map_path + ".lock", record)
    recovered = StubService(map_path, outcome=None, runtime=RUNTIME_GREEN).recover_abandoned()
    assert recovered[0]["restored_map_files"] == [map_path]
    with open(map_path) as handle:
        assert handle.read() == MAP_TEXT
    assert sorted(os.listdir(os.path.dirname(map_path))) == ["bluegreen.map"]


def test_a_file_written_by_someone_else_during_the_reload_is_not_clobbered(map_path):
    class Meddler(StubService):
        def send_and_confirm(self, before):
            with open(self.preserve_maps[0], "w") as handle:
                handle.write("active backend_red\n")
            return super(Meddler, self).send_and_confirm(before)

    result = Meddler(map_path, outcome=None, runtime=RUNTIME_GREEN).reload()
    with open(map_path) as handle:
        assert handle.read() == "active backend_red\n"
    assert "changed by someone else" in result["warnings"][0]


def test_check_mode_changes_nothing_and_reports_the_drift(map_path):
    service = StubService(map_path, outcome=AssertionError("no reload in check mode"), runtime=RUNTIME_GREEN)
    service.runtime_map = lambda target, path: dict(RUNTIME_GREEN)
    result = service.reload(check_mode=True)
    assert result["staged_map_files"][0]["entries"][0]["runtime_value"] == "backend_green"
    assert sorted(os.listdir(os.path.dirname(map_path))) == ["bluegreen.map"]
    write_lock(map_path + ".lock", release_holder())
    with pytest.raises(ReleaseLockHeldError):
        service.reload(check_mode=True)


def test_release_lock_path_replaces_the_per_map_locks(map_path):
    service = StubService(map_path, outcome=None, runtime=RUNTIME_GREEN)
    assert service.lock_paths() == [map_path + ".lock"]
    service.release_lock_path = "/var/lock/release.lock"
    assert service.lock_paths() == ["/var/lock/release.lock"]
    service.preserve_maps = []
    assert service.lock_paths() == []


def test_a_config_written_after_the_workers_started_asks_for_a_reload(map_path, tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text("global\n")
    service = StubService(map_path, outcome=None, runtime=RUNTIME_GREEN)
    service.config = str(config)
    me = dict(master=dict(pid=1, failed=0), workers=[dict(pid=os.getpid())], old_workers=[])
    started = service_module.process_started_epoch(os.getpid())
    assert started is not None and abs(started - time.time()) < 3600 * 24 * 365
    os.utime(str(config), (started - 60, started - 60))
    assert service.config_newer_than_workers(me) is None
    os.utime(str(config), (started + 60, started + 60))
    assert "written 60s after the newest worker started" in service.config_newer_than_workers(me)
    assert service.config_newer_than_workers(dict(me, workers=[dict(pid=dead_pid())])) is None, "cannot tell"


# -- system commands through module.run_command (issue 16) -------------------------------------

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402


class RecordingModule(object):
    """An AnsibleModule whose run_command calls are recorded (and passed on to the real one)."""

    def __init__(self):
        with patch_module_args({}):
            self.real = AnsibleModule(argument_spec={})
        self.commands = []

    def get_bin_path(self, name):
        return self.real.get_bin_path(name)

    def run_command(self, args, **kwargs):
        self.commands.append(list(args))
        return self.real.run_command(args, **kwargs)

    def fail_json(self, **kwargs):
        pytest.fail("run_command's fail_json was reached: %s" % kwargs)


def test_commands_go_through_run_command_with_stdout_then_stderr():
    module = RecordingModule()
    result = service_module.run_bounded(["sh", "-c", "echo out; echo err >&2; exit 3"], 10, module)
    assert (result.returncode, result.stdout) == (3, "out\nerr\n")
    timeout_program = module.get_bin_path("timeout")
    assert module.commands == [[timeout_program, "--kill-after=5", "10", "sh", "-c", "echo out; echo err >&2; exit 3"]]


def test_a_command_that_hangs_is_stopped_at_its_timeout():
    module = RecordingModule()
    if module.get_bin_path("timeout") is None:
        pytest.skip("coreutils' timeout is not installed here")
    started = time.monotonic()
    result = service_module.run_bounded(["sleep", "30"], 1, module)
    assert result.returncode == service_module.TIMEOUT_EXIT
    assert result.stdout == "sleep 30 did not finish within 1 s and was stopped."
    assert time.monotonic() - started < 25  # stopped, not waited for


def test_a_missing_program_raises_like_subprocess_instead_of_ending_the_module(tmp_path):
    module = RecordingModule()
    with pytest.raises(FileNotFoundError):
        service_module.run_bounded([str(tmp_path / "no-haproxy"), "-c"], 10, module)
    with pytest.raises(FileNotFoundError):
        service_module.run_bounded(["no-such-systemctl-here"], 10, module)
    assert module.commands == []


def test_the_service_sends_systemctl_and_haproxy_through_its_module(tmp_path):
    module = RecordingModule()
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    systemctl = fake_bin / "systemctl"
    systemctl.write_text("#!/bin/sh\necho \"$@\" >> %s/systemctl.log\nexit 3\n" % tmp_path)
    systemctl.chmod(0o755)
    haproxy = fake_bin / "haproxy"
    haproxy.write_text("#!/bin/sh\necho 'Configuration file is valid'\n")
    haproxy.chmod(0o755)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = "%s:%s" % (fake_bin, old_path)
    try:
        service = service_module.HAProxyService(
            binary=str(haproxy), config="/etc/haproxy/haproxy.cfg", master_socket=str(tmp_path / "none.sock"),
            pidfile=str(tmp_path / "haproxy.pid"), service_name="haproxy", manager="systemd", preserve_maps=[],
            timeout=1, module=module)
        assert service.status() == dict(running=False, master_cli=False, proc=None)
        assert service.config_check() == ("haproxy -c -f /etc/haproxy/haproxy.cfg (exit 0): "
                                          "Configuration file is valid")
    finally:
        os.environ["PATH"] = old_path
    assert [command[3:] for command in module.commands] == [
        ["systemctl", "is-active", "--quiet", "haproxy"],
        [str(haproxy), "-c", "-f", "/etc/haproxy/haproxy.cfg"]]
    assert (tmp_path / "systemctl.log").read_text() == "is-active --quiet haproxy\n"
