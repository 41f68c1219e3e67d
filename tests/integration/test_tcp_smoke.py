# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""tcp_smoke through a real HAProxy `mode tcp` frontend, run the way Ansible runs it.

The HAProxy is set up here by hand: the lab's (tests/lab.py) with a `mode tcp` frontend that
routes by the same map switch, `use_backend %[str(active),map(<map>,backend_blue)]`, over the
real release apps (tests/app/bluegreen_app.py). tcp_smoke speaks HTTP/1.0 to it as raw bytes and
expects the green version's body.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab import HAPROXY, App, HAProxyEnv, ansible_bin, ansible_env, free_port, wait_for

TCP_HAPROXY_CFG = """\
global
    noreuseport
    stats socket {admin_socket} mode 660 level admin
    stats timeout 30s
    pidfile {pidfile}

defaults
    mode tcp
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    default-server fall 2 rise 2 inter {inter}

frontend fe_tcp
    bind 127.0.0.1:{frontend_port}
    use_backend %[str(active),map({map_path},backend_blue)]

backend backend_blue
    option httpchk GET /healthz
{blue_servers}

backend backend_green
    option httpchk GET /healthz
{green_servers}

# A backend whose only server refuses: HAProxy still accepts the client's connection.
backend backend_down
    retries 0
    server down1 127.0.0.1:{down_port}
"""

# As YAML single quotes hand it to the module: the backslashes are still there.
REQUEST = "GET /release HTTP/1.0\\r\\n\\r\\n"


class TcpHAProxyEnv(HAProxyEnv):
    """The lab's HAProxy (start, runtime, map, stop) with a `mode tcp` configuration."""

    down_port = 0

    def write_config(self):
        os.makedirs(os.path.dirname(self.map_path), exist_ok=True)
        with open(self.map_path, "w") as handle:
            handle.write("active backend_blue\n")
        with open(self.config_path, "w") as handle:
            handle.write(TCP_HAPROXY_CFG.format(
                admin_socket=self.socket, pidfile=os.path.join(self.workdir, "haproxy.pid"), inter=self.inter,
                frontend_port=self.frontend_port, map_path=self.map_path, down_port=self.down_port,
                blue_servers=self._servers("blue"), green_servers=self._servers("green")))

    def switch(self, backend):
        self.runtime("set map %s active %s" % (self.map_path, backend))
        wait_for(lambda: self.map_value() == backend, what="active to be %s at runtime" % backend)


@pytest.fixture
def tcp_haproxy(tmp_path):
    if not os.path.exists(HAPROXY):
        pytest.fail("haproxy is not installed (apt-get install haproxy); integration tests need it")
    apps = {name: App(name=name, color=name.rstrip("12"), port=free_port(), workdir=str(tmp_path)).start()
            for name in ("blue1", "blue2", "green1", "green2")}
    env = TcpHAProxyEnv(workdir=str(tmp_path), apps=apps, frontend_port=free_port(), stats_port=free_port(),
                        inter="300ms")
    env.down_port = free_port()  # never bound: connections to it are refused
    try:
        env.start()
        env.wait_all_up()
        yield env
    finally:
        env.stop()
        for app in apps.values():
            app.stop()


def smoke_args(env, **args):
    return dict({"host": "127.0.0.1", "port": env.frontend_port, "send": REQUEST, "expect": "version=green",
                 "requests": 4, "timeout": 5}, **args)


def test_expect_fails_naming_blue_then_passes_after_the_switch_to_green(tcp_haproxy, run_module):
    result = run_module("tcp_smoke", smoke_args(tcp_haproxy))
    assert result["failed"] is True
    assert (result["passed"], result["failed_count"]) == (False, 4)
    assert "version=green" in result["msg"] and "version=blue\\n'" in result["msg"], result["msg"]
    assert result["msg"].startswith("4 of 4 connections to tcp://127.0.0.1:%d failed: 4 x connection closed after "
                                    % tcp_haproxy.frontend_port)
    for number, failure in enumerate(result["failures"], 1):
        assert failure["attempt"] == number
        assert failure["expected"] == "a match of 'version=green'"
        assert failure["received"].startswith("HTTP/1.1 200 OK\\r\\n")  # the app answers HTTP/1.1
        assert failure["received"].endswith("\\r\\n\\r\\nversion=blue\\n")

    tcp_haproxy.switch("backend_green")
    result = run_module("tcp_smoke", smoke_args(tcp_haproxy))
    assert result.get("failed") is not True, result["msg"]
    assert (result["passed"], result["passed_count"], result["changed"]) == (True, 4, False)
    assert result["msg"] == "all 4 connections to tcp://127.0.0.1:%d passed" % tcp_haproxy.frontend_port

    # Check mode makes the connections too (it only reads), and changes nothing.
    result = run_module("tcp_smoke", smoke_args(tcp_haproxy, expect="version=blue"), check=True)
    assert result["failed"] is True and result["failed_count"] == 4
    assert tcp_haproxy.map_value() == "backend_green"


def test_a_connection_alone_proves_only_the_listener(tcp_haproxy, run_module):
    """HAProxy accepts before it connects to a server: with the live backend down, a bare connect
    passes and `expect` fails, naming that nothing came back."""
    tcp_haproxy.switch("backend_down")
    result = run_module("tcp_smoke", {"host": "127.0.0.1", "port": tcp_haproxy.frontend_port, "requests": 2})
    assert result["passed"] is True, result["msg"]
    result = run_module("tcp_smoke", smoke_args(tcp_haproxy, requests=2))
    assert result["failed"] is True
    assert result["msg"] == ("2 of 2 connections to tcp://127.0.0.1:%d failed: 2 x connection closed after 0 bytes "
                             "without a match of 'version=green'" % tcp_haproxy.frontend_port)


def test_a_closed_port_fails(run_module):
    port = free_port()  # nothing listens there
    result = run_module("tcp_smoke", {"host": "127.0.0.1", "port": port, "send": REQUEST, "expect": "x"})
    assert result["failed"] is True
    assert result["msg"] == "1 of 1 connection to tcp://127.0.0.1:%d failed: 1 x connection refused" % port
    assert result["failures"][0]["reason"] == "connection refused" and result["results"][0]["connected"] is False


def test_ansible_doc_renders():
    completed = subprocess.run([ansible_bin("ansible-doc"), "-t", "module", "--json", "bluegreen.haproxy.tcp_smoke"],
                               env=ansible_env(), capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    doc = json.loads(completed.stdout)["bluegreen.haproxy.tcp_smoke"]["doc"]
    assert set(doc["options"]) == {"host", "port", "send", "expect", "requests", "interval", "timeout", "max_bytes",
                                   "fail_on_error"}
    assert doc["attributes"]["check_mode"]["support"] == "full"
