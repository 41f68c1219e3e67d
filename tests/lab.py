"""A local lab: real HAProxy processes and real blue/green releases on loopback.

Shared by the integration tests (through the fixtures in tests/integration/conftest.py)
and by `make demo` (scripts/demo.py). Every HAProxy is configured like the seed: a frontend
routing by `map(<map>,backend_blue)` and two backends checked with `GET /healthz`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from support import runtime_client

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "tests", "app", "bluegreen_app.py")
COLLECTIONS = os.path.join(REPO, ".collections")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


HAPROXY_CFG = """\
global
    stats socket {admin_socket} mode 660 level admin
    stats socket ipv4@127.0.0.1:{stats_port} level admin
    stats timeout 30s
    pidfile {pidfile}

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    default-server fall 2 rise 2 inter {inter}

frontend fe_main
    bind 127.0.0.1:{frontend_port}
    use_backend %[str(active),map({map_path},backend_blue)]

backend backend_blue
    option httpchk GET /healthz
    http-check expect status 200
{blue_servers}

backend backend_green
    option httpchk GET /healthz
    http-check expect status 200
{green_servers}
"""

MAP_TEXT = """\
# bluegreen switch: key -> live backend
active backend_blue
"""


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout=15.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def runtime_command(address, command, timeout=5.0, retry_for=5.0):
    """Raw Runtime API call for test set-up and assertions (independent of the collection).

    tests/support/runtime_client.py, shared with the demo and the Molecule scenarios; a socket
    that is absent or refuses the connection (HAProxy reloading) is retried for `retry_for` s.
    """
    return runtime_client.command(address, command, timeout=timeout, retry_for=retry_for)


@dataclass
class App:
    name: str
    color: str
    port: int
    workdir: str
    process: subprocess.Popen = None

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    @property
    def unhealthy_file(self):
        return os.path.join(self.workdir, "%s.unhealthy" % self.name)

    @property
    def fail_file(self):
        return os.path.join(self.workdir, "%s.failing" % self.name)

    def start(self):
        self.process = subprocess.Popen(
            [sys.executable, APP, "--color", self.color, "--bind", "127.0.0.1",
             "--port", str(self.port), "--unhealthy-file", self.unhealthy_file,
             "--fail-file", self.fail_file],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._listening, what="app %s on port %d" % (self.name, self.port))
        return self

    def _listening(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=5)
        self.process = None

    def set_unhealthy(self, unhealthy=True):
        if unhealthy:
            open(self.unhealthy_file, "w").close()
        elif os.path.exists(self.unhealthy_file):
            os.unlink(self.unhealthy_file)

    def set_failing(self, share, path=""):
        """Answer 500 to `share` (0..1) of the requests for `path` (all but /healthz when empty);
        share None stops it. Health checks keep passing: the servers stay UP."""
        if share is None:
            if os.path.exists(self.fail_file):
                os.unlink(self.fail_file)
            return
        with open(self.fail_file + ".tmp", "w") as handle:
            handle.write(("%s %s" % (share, path)).strip() + "\n")
        os.replace(self.fail_file + ".tmp", self.fail_file)


@dataclass
class HAProxyEnv:
    workdir: str
    apps: dict
    frontend_port: int
    stats_port: int
    inter: str
    process: subprocess.Popen = None
    map_path: str = field(init=False)
    config_path: str = field(init=False)
    socket: str = field(init=False)
    master_socket: str = field(init=False)

    def __post_init__(self):
        self.map_path = os.path.join(self.workdir, "maps", "bluegreen.map")
        self.config_path = os.path.join(self.workdir, "haproxy.cfg")
        self.socket = os.path.join(self.workdir, "admin.sock")
        self.master_socket = os.path.join(self.workdir, "master.sock")

    @property
    def frontend_url(self):
        return "http://127.0.0.1:%d" % self.frontend_port

    @property
    def tcp_socket(self):
        return "ipv4@127.0.0.1:%d" % self.stats_port

    def _servers(self, color):
        return "\n".join(
            "    server %s 127.0.0.1:%d check" % (app.name, app.port)
            for app in self.apps.values() if app.name.startswith(color)
        )

    def write_config(self):
        os.makedirs(os.path.dirname(self.map_path), exist_ok=True)
        if not os.path.exists(self.map_path):
            with open(self.map_path, "w") as handle:
                handle.write(MAP_TEXT)
        with open(self.config_path, "w") as handle:
            handle.write(HAPROXY_CFG.format(
                admin_socket=self.socket, stats_port=self.stats_port,
                pidfile=os.path.join(self.workdir, "haproxy.pid"), inter=self.inter,
                frontend_port=self.frontend_port, map_path=self.map_path,
                blue_servers=self._servers("blue"), green_servers=self._servers("green"),
            ))

    def start(self):
        self.write_config()
        subprocess.run([HAPROXY, "-c", "-q", "-f", self.config_path], check=True)
        self.process = subprocess.Popen(
            [HAPROXY, "-W", "-db", "-S", self.master_socket, "-f", self.config_path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: os.path.exists(self.socket) and self._answers(), what="HAProxy admin socket")
        return self

    def _answers(self):
        try:
            return "Version" in runtime_command(self.socket, "show info", retry_for=0)
        except OSError:
            return False

    def runtime(self, command):
        return runtime_command(self.socket, command)

    def reload(self):
        """Reload through the master CLI, as the role does, and wait for the new worker."""
        before = self.worker_pid()
        runtime_command(self.master_socket, "reload")
        wait_for(lambda: self._answers() and self.worker_pid() != before, what="reloaded worker")

    def worker_pid(self):
        for line in self.runtime("show info").splitlines():
            if line.startswith("Pid:"):
                return int(line.split(":")[1])
        return None

    def server_status(self, backend, server):
        reply = self.runtime("show stat %s 4 -1" % backend)
        lines = [line for line in reply.splitlines() if line.strip()]
        header = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(header, line.split(",")))
            if row["svname"] == server:
                return row["status"]
        raise KeyError(server)

    def wait_status(self, backend, server, status, timeout=15.0):
        wait_for(lambda: self.server_status(backend, server) == status, timeout=timeout,
                 what="%s/%s to be %s" % (backend, server, status))

    def wait_all_up(self, timeout=15.0):
        for app in self.apps.values():
            self.wait_status("backend_" + app.name.rstrip("0123456789"), app.name, "UP", timeout)

    def map_value(self, key="active"):
        for line in self.runtime("show map %s" % self.map_path).splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[1] == key:
                return parts[2]
        return None

    def disk_text(self):
        with open(self.map_path) as handle:
            return handle.read()

    def make_live(self, value, key="active"):
        """Leave the node as a finished, persisted release would: `key` is `value` on disk and at
        runtime, no lock. For tests whose subject starts there (a rollback), without paying for
        a cutover playbook run to get there."""
        lines = [line for line in self.disk_text().splitlines() if line.split(None, 1)[:1] != [key]]
        temporary = self.map_path + ".tmp"
        with open(temporary, "w") as handle:
            handle.write("\n".join(lines + ["%s %s" % (key, value)]) + "\n")
        os.replace(temporary, self.map_path)
        self.runtime("set map %s %s %s" % (self.map_path, key, value))
        wait_for(lambda: self.map_value(key) == value, what="%s to be %s at runtime" % (key, value))

    def get(self, path="/release", timeout=5.0, host="release.test"):
        """One request through the frontend on a fresh connection: (status, body)."""
        with socket.create_connection(("127.0.0.1", self.frontend_port), timeout=timeout) as sock:
            sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
            data = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        head, body = data.decode().split("\r\n\r\n", 1)
        return int(head.split()[1]), body

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


def ansible_env():
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=COLLECTIONS,
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_CALLBACK_PLUGINS=os.path.join(REPO, "tests", "integration", "callback_plugins"),
        # Test-only connection plugins (flaky_local: a node that becomes unreachable on cue).
        ANSIBLE_CONNECTION_PLUGINS=os.path.join(REPO, "tests", "integration", "connection_plugins"),
        ANSIBLE_STDOUT_CALLBACK="test_json",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_HOST_KEY_CHECKING="false",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_DEPRECATION_WARNINGS="false",
        ANSIBLE_PYTHON_INTERPRETER=sys.executable,
    )
    return env


def ansible_bin(name):
    candidate = os.path.join(os.path.dirname(sys.executable), name)
    return candidate if os.path.exists(candidate) else shutil.which(name)


@dataclass
class Fleet:
    nodes: list
    inventory: str

    def map_values(self):
        return [node.map_value() for node in self.nodes]

    def disk_values(self):
        values = []
        for node in self.nodes:
            entries = dict(line.split(None, 1) for line in node.disk_text().splitlines()
                           if line.strip() and not line.startswith("#"))
            values.append(entries.get("active"))
        return values

    def answers(self):
        return [node.get()[1].strip() for node in self.nodes]

    def make_live(self, value):
        for node in self.nodes:
            node.make_live(value)


def write_inventory(path, nodes, group_vars=None):
    """An inventory group `haproxy` of local hosts node1..N, one per HAProxyEnv."""
    lines = ["[haproxy]"]
    for index, node in enumerate(nodes, start=1):
        lines.append(
            "node%d ansible_connection=local ansible_python_interpreter=%s release_socket=%s "
            "release_map=%s release_smoke_resolve=127.0.0.1:%d"
            % (index, sys.executable, node.socket, node.map_path, node.frontend_port))
    lines += ["", "[haproxy:vars]"]
    lines += ["%s=%s" % item for item in sorted((group_vars or {}).items())]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


class LoadGenerator(threading.Thread):
    """Users: requests through every node's frontend, one connection each, until stopped (bounded).

    Counts what the users saw: `answers` ("<status> <body>" -> count), `colors` (the version
    of every 200 answer -> count), `errors` (connection failures), `failed` (connection failures
    plus every answer other than 200) and, per node, the same in `node_answers`. `paths` are
    requested in turn, so a test can send real traffic the smoke test never sends.
    """

    def __init__(self, nodes, paths=("/release",), max_seconds=240):
        super().__init__(daemon=True)
        self.nodes = list(nodes)
        self.paths = list(paths)
        self.max_seconds = max_seconds
        self.stop_event = threading.Event()
        self.answers = {}
        self.colors = {}
        self.errors = []
        self.node_answers = [{} for _node in self.nodes]
        self.requests = 0

    def run(self):
        deadline = time.monotonic() + self.max_seconds
        turn = 0
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            path = self.paths[turn % len(self.paths)]
            turn += 1
            for index, node in enumerate(self.nodes):
                try:
                    status, body = node.get(path, timeout=5)
                    key = "%d %s" % (status, body.strip())
                except (OSError, ValueError) as exc:
                    self.errors.append("%s %s: %r" % (node.frontend_url, path, exc))
                    key = "error"
                else:
                    if status == 200 and body.startswith("version="):
                        color = body.strip()[len("version="):]
                        self.colors[color] = self.colors.get(color, 0) + 1
                if key != "error":
                    self.answers[key] = self.answers.get(key, 0) + 1
                self.node_answers[index][key] = self.node_answers[index].get(key, 0) + 1
                self.requests += 1
            time.sleep(0.005)

    @property
    def failed(self):
        """Requests a user saw fail: no answer, or any status but 200."""
        return len(self.errors) + sum(count for key, count in self.answers.items() if not key.startswith("200 "))

    def wrong(self, allowed):
        """200 answers from a version not in `allowed` (a user saw the wrong release)."""
        return sum(count for color, count in self.colors.items() if color not in allowed)

    def wait_requests(self, count, timeout=60.0):
        """Wait until `count` more requests were answered (or failed) from now on."""
        target = self.requests + count
        wait_for(lambda: self.requests >= target, timeout=timeout,
                 what="%d more requests of the load generator" % count)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)
