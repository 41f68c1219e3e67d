# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""haproxy_backend_health against a real HAProxy, run the way Ansible runs it."""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

import pytest

from lab import wait_for

MODULE = "haproxy_backend_health"


def health(run_module, env, backend="backend_green", check=False, **options):
    args = dict(socket=env.socket, backend=backend)
    args.update(options)
    return run_module(MODULE, args, check=check)


def server(result, name):
    for entry in result["servers"]:
        if entry["name"] == name:
            return entry
    raise KeyError(name)


def assert_unhealthy(result, name, status):
    assert result.get("failed") is True, result
    assert result["changed"] is False
    assert result["healthy"] is False
    assert result["unhealthy_servers"] == [name]
    assert server(result, name)["status"] == status
    assert server(result, name)["healthy"] is False
    assert "%s (%s" % (name, status) in result["msg"]
    assert "traceback" not in result["msg"].lower()


def test_all_up_is_healthy_over_unix_and_tcp_in_check_mode(haproxy_env, run_module):
    result = health(run_module, haproxy_env)
    assert result.get("failed") is not True, result
    assert result["changed"] is False
    assert result["healthy"] is True
    assert (result["total"], result["healthy_count"], result["unhealthy_count"], result["required"]) == (2, 2, 0, 2)
    # One look, no wait (the waited value of a first-look answer: tests/unit, with a fake clock).
    assert (result["attempts"], result["unhealthy_servers"]) == (1, [])
    assert [entry["name"] for entry in result["servers"]] == ["green1", "green2"]
    green1 = server(result, "green1")
    assert green1 == dict(
        name="green1", status="UP", healthy=True, reason=None, check_status="L7OK", check_code=200,
        check_description="Layer7 check passed", weight=1, current_sessions=0,
        address="127.0.0.1:%d" % haproxy_env.apps["green1"].port,
    )

    # The TCP stats socket gives the same answer, and check mode changes nothing about it.
    over_tcp = run_module(MODULE, dict(socket=haproxy_env.tcp_socket, backend="backend_blue"), check=True)
    assert over_tcp.get("failed") is not True, over_tcp
    assert (over_tcp["healthy"], over_tcp["changed"], over_tcp["backend"]) == (True, False, "backend_blue")
    assert [entry["name"] for entry in over_tcp["servers"]] == ["blue1", "blue2"]


def test_unknown_backend_lists_the_backends(haproxy_env, run_module):
    result = health(run_module, haproxy_env, backend="backend_purple")
    assert result.get("failed") is True
    assert result["changed"] is False
    assert result["msg"] == ("backend 'backend_purple' does not exist in HAProxy; "
                             "backends: backend_blue, backend_green")


def test_server_down_fails_unless_min_healthy_allows(haproxy_env, run_module):
    haproxy_env.apps["green2"].stop()
    haproxy_env.wait_status("backend_green", "green2", "DOWN")

    result = health(run_module, haproxy_env)
    assert_unhealthy(result, "green2", "DOWN")
    assert result["msg"] == ("backend_green is not healthy: 1 of 2 servers healthy, 2 required: "
                             "green2 (DOWN, L4CON)")
    assert (result["healthy_count"], result["required"], result["attempts"]) == (1, 2, 1)
    assert server(result, "green2")["check_description"] == "Layer4 connection problem"

    for min_healthy in (1, "50%"):
        passed = health(run_module, haproxy_env, min_healthy=min_healthy)
        assert passed.get("failed") is not True, passed
        assert (passed["healthy"], passed["required"], passed["healthy_count"]) == (True, 1, 1)
        assert passed["unhealthy_servers"] == ["green2"]  # still reported

    # A status report: not healthy, but no failure.
    report = health(run_module, haproxy_env, fail_on_unhealthy=False)
    assert report.get("failed") is not True, report
    assert (report["healthy"], report["changed"], report["unhealthy_servers"]) == (False, False, ["green2"])

    too_many = health(run_module, haproxy_env, min_healthy=3)
    assert too_many.get("failed") is True
    assert too_many["msg"] == "min_healthy is 3 but backend_green has only 2 servers"


@pytest.mark.parametrize("commands, status", [
    (["set server backend_green/green1 state maint"], "MAINT"),
    (["set server backend_green/green1 state drain"], "DRAIN"),
    # `health stopping` alone lasts until the next check; with checks off it stays NOLB.
    (["disable health backend_green/green1", "set server backend_green/green1 health stopping"], "NOLB"),
], ids=["maint", "drain", "nolb"])
def test_admin_states_are_unhealthy(haproxy_env, run_module, commands, status):
    for command in commands:
        assert haproxy_env.runtime(command) == "\n"
    haproxy_env.wait_status("backend_green", "green1", status)
    # allow_no_check must not rescue a server that is not serving.
    result = health(run_module, haproxy_env, allow_no_check=True)
    assert_unhealthy(result, "green1", status)
    assert result["msg"].startswith("backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (%s"
                                    % status)


def test_no_check_server_fails_unless_allowed(haproxy_env, run_module):
    assert haproxy_env.runtime("disable health backend_green/green1") == "\n"
    haproxy_env.wait_status("backend_green", "green1", "no check")

    result = health(run_module, haproxy_env)
    assert_unhealthy(result, "green1", "no check")
    assert result["msg"].endswith("green1 (no check)")

    allowed = health(run_module, haproxy_env, allow_no_check=True)
    assert allowed.get("failed") is not True, allowed
    assert (allowed["healthy"], allowed["healthy_count"], allowed["unhealthy_servers"]) == (True, 2, [])


def test_server_still_rising_fails(haproxy_factory, run_module):
    # fall 1: the servers start stable UP (HAProxy starts them at health = rise, "UP 1/2" with
    # fall 2, in transition, and spreads their first checks over a fastinter). Forced DOWN,
    # green1 (still answering) passes its next check within an inter (300 ms) and is DOWN 1/2;
    # checks of a server in transition run every fastinter, so that lasts 60 s, far longer than
    # a module run, and nothing waits for it to end.
    env = haproxy_factory(inter="300ms fastinter 60s fall 1")
    env.wait_all_up()
    assert env.runtime("set server backend_green/green1 health down") == "\n"
    env.wait_status("backend_green", "green1", "DOWN 1/2")

    result = health(run_module, env)
    assert_unhealthy(result, "green1", "DOWN 1/2")
    assert server(result, "green1")["check_status"] == "L7OK"  # its last check passed; rise is pending
    assert result["msg"].endswith("green1 (DOWN 1/2, L7OK/200)")


def cli_requests(env):
    """HAProxy's request count (`show info` CumReq): every Runtime API command counts, this one too."""
    info = dict(line.split(": ", 1) for line in env.runtime("show info").splitlines() if ": " in line)
    return int(info["CumReq"])


def start_after_a_look(env, app, timeout=60.0):
    """Start `app` once something other than this poll sent HAProxy a Runtime API command (the
    module's first look at the server), polling every 0.1 s."""
    base, polls = cli_requests(env), 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.1)
        polls += 1
        if cli_requests(env) - base - polls >= 1:
            break
    app.start()


def test_wait_timeout_expires_then_waits_for_recovery(haproxy_env, run_module):
    app = haproxy_env.apps["green1"]
    app.stop()
    haproxy_env.wait_status("backend_green", "green1", "DOWN")

    expired = health(run_module, haproxy_env, wait_timeout=2, poll_interval=0.5)
    assert_unhealthy(expired, "green1", "DOWN")
    # Not given up before wait_timeout, and no look after it: at most the looks at 0, 0.5, 1, 1.5
    # and 2 s (a busy machine makes each look slower, so fewer fit: a count, not a time bound).
    assert expired["waited"] >= 2
    assert 2 <= expired["attempts"] <= 5, expired["attempts"]
    # The message names how long it waited: the timeout, or longer when the last look was slow.
    waited = re.match(r"backend_green is not healthy after ([0-9.]+)s: ", expired["msg"])
    assert waited and float(waited.group(1)) >= 2, expired["msg"]

    # Restart the app once the next run has looked at the DOWN server: a state, not a guess at
    # Ansible's start-up (a busy machine started it later than the first run did).
    restart = threading.Thread(target=start_after_a_look, args=(haproxy_env, app), daemon=True)
    restart.start()
    try:
        recovered = health(run_module, haproxy_env, wait_timeout=15, poll_interval=0.3)
    finally:
        restart.join(timeout=30)
    assert recovered.get("failed") is not True, recovered
    assert (recovered["healthy"], recovered["changed"], recovered["unhealthy_servers"]) == (True, False, [])
    assert recovered["attempts"] > 1
    assert 0.5 < recovered["waited"] < 15
    assert server(recovered, "green1")["status"] == "UP"


def test_bad_input_fails_before_anything_is_sent(run_module, tmp_path):
    missing = str(tmp_path / "no-such.sock")
    # An invalid min_healthy is reported even though the socket does not exist: nothing was sent.
    bad = run_module(MODULE, dict(socket=missing, backend="backend_green", min_healthy="half"))
    assert bad.get("failed") is True
    assert bad["msg"].startswith("min_healthy 'half' is not valid")

    no_socket = run_module(MODULE, dict(socket=missing, backend="backend_green"))
    assert no_socket.get("failed") is True
    assert no_socket["changed"] is False
    assert no_socket["msg"].startswith("HAProxy Runtime API socket %s does not exist" % missing)
    assert "Traceback" not in no_socket["msg"]


# -- transient socket errors while waiting (a reload, a socket that appears late) -------------------

class ResettingSocket(threading.Thread):
    """A unix socket at `path` that accepts and resets every connection, counting them:
    what a client meets while HAProxy's worker is going away."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.path = path
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        self.server.settimeout(0.2)
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                connection, _peer = self.server.accept()
            except OSError:
                continue
            self.connections += 1
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            connection.close()

    def stop(self):
        self.stopping.set()
        self.join(timeout=5)
        self.server.close()
        os.unlink(self.path)


def in_thread(function, *args, **kwargs):
    outcome = {}
    thread = threading.Thread(target=lambda: outcome.setdefault("result", function(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, outcome


def test_resets_then_a_missing_socket_then_haproxy_back_is_waited_out(haproxy_env, run_module):
    haproxy_env.stop()
    if os.path.exists(haproxy_env.socket):
        os.unlink(haproxy_env.socket)
    stub = ResettingSocket(haproxy_env.socket)
    stub.start()
    thread, outcome = in_thread(health, run_module, haproxy_env, wait_timeout=60, poll_interval=0.3)
    try:
        # The module is retrying once it has been reset twice; then the socket goes away for a while.
        wait_for(lambda: stub.connections >= 2, timeout=60, what="the module to retry the reset socket")
    finally:
        stub.stop()
    assert not os.path.exists(haproxy_env.socket)
    haproxy_env.start()
    thread.join(timeout=90)
    result = outcome["result"]
    assert result.get("failed") is not True, result
    assert (result["healthy"], result["changed"]) == (True, False)
    assert result["transient_errors"] >= 2
    assert result["attempts"] > result["transient_errors"]


def test_socket_that_never_comes_back_fails_naming_the_last_error(haproxy_env, run_module):
    haproxy_env.stop()
    if os.path.exists(haproxy_env.socket):
        os.unlink(haproxy_env.socket)
    result = health(run_module, haproxy_env, wait_timeout=2, poll_interval=0.5)
    assert result.get("failed") is True
    assert result["changed"] is False
    assert result["msg"].startswith("could not read the servers of backend_green: the Runtime API failed 5 of 5 "
                                    "looks in 2s and the last look failed too")
    assert result["msg"].endswith("the last error: HAProxy Runtime API socket %s does not exist: is HAProxy running, "
                                  "and is 'stats socket %s level admin' in its global section?"
                                  % (haproxy_env.socket, haproxy_env.socket))


def test_reloads_while_waiting_do_not_fail_the_wait(haproxy_env, run_module):
    app = haproxy_env.apps["green1"]
    app.stop()
    haproxy_env.wait_status("backend_green", "green1", "DOWN")
    thread, outcome = in_thread(health, run_module, haproxy_env, wait_timeout=60, poll_interval=0.2)
    reloads = 0
    # Reload again and again while the module waits; bring green1 back after a few reloads.
    while thread.is_alive() and reloads < 40:
        haproxy_env.reload()
        reloads += 1
        if reloads == 4:
            app.start()
    thread.join(timeout=90)
    result = outcome["result"]
    assert result.get("failed") is not True, result
    assert result["healthy"] is True
    assert reloads >= 4
