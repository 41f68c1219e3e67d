"""haproxy_service: start, reload and confirm a real master-worker HAProxy on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

from lab import HAPROXY, wait_for


def service_args(env, **extra):
    args = dict(master_socket=env.master_socket, config=env.config_path, binary=HAPROXY, manager="direct",
                pidfile=os.path.join(env.workdir, "started.pid"), preserve_maps=[env.map_path], timeout=15)
    args.update(extra)
    return args


def test_reload_is_confirmed_and_keeps_a_runtime_only_switch(haproxy_env, run_module):
    worker_before = haproxy_env.worker_pid()
    disk_before = haproxy_env.disk_text()
    haproxy_env.runtime("set map %s active backend_green" % haproxy_env.map_path)

    result = run_module("haproxy_service", service_args(haproxy_env, state="reloaded"))

    assert result.get("failed") is not True, result
    assert result["changed"] is True and result["action"] == "reloaded"
    assert result["confirmed_by"] == "master CLI reload; new worker in show proc"  # 2.6 answers nothing
    assert worker_before in result["previous_workers"]
    assert haproxy_env.worker_pid() != worker_before
    # The new worker loaded the live value from the staged file: nothing had to be set back.
    assert result["restored_runtime_map_entries"] == []
    assert result["staged_map_files"] == [dict(
        map=haproxy_env.map_path, backup=os.path.join(os.path.dirname(haproxy_env.map_path), ".bluegreen.map.before-reload"),
        entries=[dict(key="active", runtime_value="backend_green", disk_value="backend_blue")])]
    assert haproxy_env.map_value() == "backend_green"
    assert haproxy_env.get()[1] == "version=green\n"
    # The file is back to exactly what it said, the backup and the lock are gone.
    assert haproxy_env.disk_text() == disk_before
    assert sorted(os.listdir(os.path.dirname(haproxy_env.map_path))) == ["bluegreen.map"]


def test_reload_without_preserved_maps_rereads_the_file(haproxy_env, run_module):
    haproxy_env.runtime("set map %s active backend_green" % haproxy_env.map_path)
    result = run_module("haproxy_service", service_args(haproxy_env, state="reloaded", preserve_maps=[]))
    assert result["changed"] is True
    assert haproxy_env.map_value() == "backend_blue", "this is what preserve_maps protects against"


def test_refused_reload_fails_and_the_old_worker_keeps_serving(haproxy_env, run_module):
    worker_before = haproxy_env.worker_pid()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with open(haproxy_env.config_path, "a") as handle:
            handle.write("\nfrontend fe_taken\n    bind 127.0.0.1:%d\n" % taken.getsockname()[1])
        assert subprocess.run([HAPROXY, "-c", "-q", "-f", haproxy_env.config_path], check=False).returncode == 0

        result = run_module("haproxy_service", service_args(haproxy_env, state="reloaded"))
        assert result.get("failed") is True
        assert "reload failed ([failed: 1] in show proc)" in result["msg"]
        assert haproxy_env.worker_pid() == worker_before
        assert haproxy_env.get()[1] == "version=blue\n"

        # The file on disk still does not run: `started` must not pass silently.
        again = run_module("haproxy_service", service_args(haproxy_env, state="started"))
        assert again.get("failed") is True and "[failed:" in again["msg"]


def test_started_is_idempotent_and_adds_new_map_keys_only(haproxy_env, run_module):
    haproxy_env.runtime("set map %s active backend_green" % haproxy_env.map_path)
    with open(haproxy_env.map_path, "a") as handle:
        handle.write("shop.example.test backend_green\n")

    result = run_module("haproxy_service", service_args(haproxy_env, state="started"))

    assert result["changed"] is True and result["action"] == "none"
    assert result["added_map_entries"] == [dict(map=haproxy_env.map_path, key="shop.example.test",
                                                value="backend_green")]
    assert haproxy_env.map_value("shop.example.test") == "backend_green"
    assert haproxy_env.map_value() == "backend_green", "an existing key keeps its live value"
    again = run_module("haproxy_service", service_args(haproxy_env, state="started"))
    assert again["changed"] is False and again["added_map_entries"] == []


def test_started_starts_a_stopped_haproxy_in_master_worker_mode(haproxy_env, run_module):
    haproxy_env.stop()
    check = run_module("haproxy_service", service_args(haproxy_env, state="started"), check=True)
    assert check["changed"] is True and not os.path.exists(os.path.join(haproxy_env.workdir, "started.pid"))

    result = run_module("haproxy_service", service_args(haproxy_env, state="started"))
    pidfile = os.path.join(haproxy_env.workdir, "started.pid")
    try:
        assert result["changed"] is True and result["action"] == "started"
        assert len(result["workers"]) == 1
        wait_for(lambda: haproxy_env.get()[0] in (200, 503), what="the started HAProxy's frontend")
        assert run_module("haproxy_service", service_args(haproxy_env, state="started"))["changed"] is False
    finally:
        with open(pidfile) as handle:
            os.kill(int(handle.read().split()[0]), signal.SIGTERM)


def test_started_reloads_when_the_config_was_written_after_the_worker_started(haproxy_env, run_module):
    """A reload that was missed (refused while a release held the lock, a play that died) is made up for."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.service import process_started_epoch

    worker = haproxy_env.worker_pid()
    assert run_module("haproxy_service", service_args(haproxy_env, state="started"))["changed"] is False
    wait_for(lambda: time.time() > process_started_epoch(worker) + 2, what="the worker to be 2 s old")
    os.utime(haproxy_env.config_path, None)

    check = run_module("haproxy_service", service_args(haproxy_env, state="started"), check=True)
    assert check["changed"] is True and haproxy_env.worker_pid() == worker
    result = run_module("haproxy_service", service_args(haproxy_env, state="started"))
    assert result["action"] == "reloaded" and "was written after the running worker started" in result["msg"]
    assert haproxy_env.worker_pid() != worker
    assert run_module("haproxy_service", service_args(haproxy_env, state="started"))["changed"] is False
