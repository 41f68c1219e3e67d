# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""haproxy_backend_drain against a real HAProxy: a streaming response (HTTP frontend) or a TCP
connection (`mode tcp` frontend) held on blue while the map switches to green."""

from __future__ import annotations

import threading
import time

import pytest

from lab import TCP_KEY, App, HAProxyEnv, free_port, held_stream, wait_for

MODULE = "haproxy_backend_drain"

# (map key, blue backend, green backend) for each frontend kind.
FRONTENDS = {
    "http": ("active", "backend_blue", "backend_green"),
    "tcp": (TCP_KEY, "backend_tcp_blue", "backend_tcp_green"),
}


@pytest.fixture
def lab(tmp_path):
    """One blue and one green app behind HAProxy's HTTP frontend and its `mode tcp` frontend."""
    apps = {name: App(name=name, color=name[:-1], port=free_port(), workdir=str(tmp_path))
            for name in ("blue1", "green1")}
    env = HAProxyEnv(workdir=str(tmp_path), apps=apps, frontend_port=free_port(), stats_port=free_port(),
                     inter="300ms", tcp_port=free_port())
    try:
        for app in apps.values():
            app.start()
        env.start()
        for backend, server in (("backend_blue", "blue1"), ("backend_green", "green1"),
                                ("backend_tcp_blue", "blue1"), ("backend_tcp_green", "green1")):
            env.wait_status(backend, server, "UP")
        yield env
    finally:
        env.stop()
        for app in apps.values():
            app.stop()


def port_of(env, kind):
    return env.frontend_port if kind == "http" else env.tcp_port


class NewRequests(threading.Thread):
    """New users during the drain: one request after another through the frontend, each answer kept."""

    def __init__(self, env, port):
        super().__init__(daemon=True)
        self.env = env
        self.port = port
        self.answers = []
        self.stop_event = threading.Event()

    def run(self):
        while not self.stop_event.is_set():
            try:
                status, body = self.env.get(port=self.port)
                self.answers.append("%d %s" % (status, body.strip()))
            except (OSError, ValueError) as exc:
                self.answers.append("error %r" % exc)
            time.sleep(0.02)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=10)


def scur(env, backend, server):
    for line in env.runtime("show stat %s 4 -1" % backend).splitlines()[1:]:
        cells = line.split(",")
        if cells[:2] == [backend, server]:
            return int(cells[4] or 0)  # the columns up to scur are the same on 2.6 and 3.0
    raise AssertionError("no row for %s/%s" % (backend, server))


def hold_and_switch(env, kind):
    """A stream held on blue through the `kind` frontend, then the map switched to green; returns
    the stream and the new-request poller (started after the first green answer)."""
    key, blue, green = FRONTENDS[kind]
    port = port_of(env, kind)
    stream = held_stream(port)
    wait_for(lambda: stream.chunks >= 1, what="the first chunk of the held stream")
    assert b"version=blue" in stream.data
    wait_for(lambda: scur(env, blue, "blue1") == 1, what="%s/blue1 to count the held session" % blue)
    assert env.runtime("set map %s %s %s" % (env.map_path, key, green)) == "\n"
    wait_for(lambda: env.get(port=port) == (200, "version=green\n"), what="new requests through the %s frontend to reach green" % kind)
    requests = NewRequests(env, port)
    requests.start()
    return stream, requests


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_shutdown_closes_the_session_held_on_the_old_version(lab, run_module, kind):
    key, blue, green = FRONTENDS[kind]
    stream, requests = hold_and_switch(lab, kind)
    try:
        started = time.monotonic()
        result = run_module(MODULE, dict(socket=lab.socket, backend=blue, wait_timeout=1, poll_interval=0.2,
                                         shutdown=True))
        returned = time.monotonic()
        # The client sees its stream end: closed by HAProxy, not finished (it had ~60 s to go).
        assert stream.ended.wait(10), "the held stream is still open after the drain"
        wait_for(lambda: len(requests.answers) >= 5, what="new requests after the drain")
    finally:
        requests.stop()
        stream.close()

    assert not result.get("failed"), result
    assert (result["changed"], result["shut_down"], result["sessions_left"], result["drained"]) == (True, 1, 0, True)
    assert result["shutdown_servers"] == ["blue1"] and result["servers"] == {"blue1": 0}
    assert 1.0 <= result["waited"] < 3.0
    assert not stream.complete
    # Closed by the module's shutdown, before it returned (0.3 s: the client thread's scheduling).
    assert stream.ended_at < returned + 0.3, (stream.ended_at - started, returned - started)
    assert scur(lab, blue, "blue1") == 0
    assert set(requests.answers) == {"200 version=green"}, requests.answers


@pytest.mark.parametrize("kind", ["http", "tcp"])
def test_without_shutdown_the_session_left_is_reported_and_kept(lab, run_module, kind):
    key, blue, green = FRONTENDS[kind]
    stream, requests = hold_and_switch(lab, kind)
    try:
        result = run_module(MODULE, dict(socket=lab.socket, backend=blue, wait_timeout=1, poll_interval=0.2))
        chunks = stream.chunks
        # Still streaming from blue after the module returned.
        wait_for(lambda: stream.chunks >= chunks + 2, what="more chunks of the held stream")
        wait_for(lambda: len(requests.answers) >= 5, what="new requests after the drain")
        still_open = not stream.ended.is_set()
    finally:
        requests.stop()
        stream.close()

    assert still_open and not stream.complete
    assert not result.get("failed"), result
    assert (result["changed"], result["shut_down"], result["sessions_left"], result["drained"]) == (False, 0, 1, False)
    assert result["servers"] == {"blue1": 1}
    assert result["waited"] >= 1.0
    assert set(requests.answers) == {"200 version=green"}, requests.answers


def test_check_mode_reports_the_session_it_would_close_and_closes_nothing(lab, run_module):
    key, blue, green = FRONTENDS["http"]
    stream, requests = hold_and_switch(lab, "http")
    try:
        result = run_module(MODULE, dict(socket=lab.socket, backend=blue, shutdown=True), check=True)
        chunks = stream.chunks
        wait_for(lambda: stream.chunks >= chunks + 2, what="more chunks of the held stream")
        still_open = not stream.ended.is_set()
    finally:
        requests.stop()
        stream.close()

    assert not result.get("failed"), result
    assert (result["changed"], result["would_shut_down"], result["shut_down"], result["sessions_left"]) == (True, 1, 0, 1)
    assert result["shutdown_servers"] == ["blue1"]
    assert still_open
