"""A local lab: real HAProxy processes and real blue/green releases on loopback.

Shared by the integration tests (through the fixtures in tests/integration/conftest.py)
and by `make demo` (scripts/demo.py). Every HAProxy is configured like the seed: a frontend
routing by `map(<map>,backend_blue)` and two backends checked with `GET /healthz`.
"""

from __future__ import annotations

import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from support import runtime_client
from support.held_stream import HeldStream

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = os.path.join(REPO, "tests", "app", "bluegreen_app.py")
COLLECTIONS = os.path.join(REPO, ".collections")
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


# `noreuseport`: HAProxy binds without SO_REUSEPORT, so a second HAProxy on a port in use fails
# to start instead of sharing the listener (and its traffic) with the first. Reloads are not
# affected: the master hands the listening sockets to the new worker.
HAPROXY_CFG = """\
global
    noreuseport
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

# With HAProxyEnv(tcp_port=...): a `mode tcp` frontend switched by the same map, through its own
# key (a second service of the map), to backends of the same apps in `mode tcp`, so a connection
# is one TCP session end to end (an HTTP backend behind a TCP frontend would be upgraded to HTTP).
TCP_KEY = "tcp"
TCP_CFG = """
frontend fe_tcp
    mode tcp
    bind 127.0.0.1:{tcp_port}
    use_backend %[str({tcp_key}),map({map_path},backend_tcp_blue)]

backend backend_tcp_blue
    mode tcp
{blue_servers}

backend backend_tcp_green
    mode tcp
{green_servers}
"""

# With HAProxyEnv(test_port=...): a test listener (issue 15) - the new version through HAProxy
# before any user: it routes by `active.preview` and answers 503 while the map has none.
TEST_LISTENER_CFG = """
frontend fe_test_listener
    bind 127.0.0.1:{test_port}
    http-request deny deny_status 503 unless {{ str(active.preview),map({map_path}) -m found }}
    use_backend %[str(active.preview),map({map_path},backend_blue)]
"""

CANARY_LINES = """\
    http-request set-var(txn.bg_bucket) req.hdr(x-user-id),crc32(1),mod(100)
    http-request set-var(txn.bg_weight) str(active.weight),map({map_path},0)
    use_backend %[str(active.canary),map({map_path},backend_blue)] if {{ var(txn.bg_bucket) -m found }} \
{{ var(txn.bg_weight),sub(txn.bg_bucket) -m int gt 0 }}
"""


# Ports for the lab's listeners. Not bind(0): the kernel picks those from the ephemeral range,
# the same ports it gives the load generators' and Ansible's outgoing connections, and HAProxy
# binds with SO_REUSEPORT unless told not to, so two test workers could share one frontend
# without an error (seen: a TCP stats socket answered by another test's HTTP frontend). Each
# pytest-xdist worker gets its own block below the ephemeral range, every other process (a run
# without -n, `make demo`, `make bench`) the block after the workers'; a port is probed with a
# plain bind and handed out once per pass through the block. Two processes that still meet on a
# port fail loudly: the lab's HAProxy has `noreuseport`, and App.start() checks who answers.
PORT_BLOCK_SIZE = 2000
PORT_BLOCK_FIRST = 20000
PORT_BLOCKS_FOR_WORKERS = 4  # gw0..gw3; more workers share blocks (wrapping), still probed


def ephemeral_port_range(path="/proc/sys/net/ipv4/ip_local_port_range"):
    try:
        with open(path) as handle:
            low, high = (int(word) for word in handle.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def port_block(worker=None, ephemeral=None):
    """(first, end) of this process's ports: below the ephemeral range (or above it when it
    leaves no room below), one block per pytest-xdist worker ("gw0", "gw1", ...), and the block
    after the workers' for any other process."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "") if worker is None else worker
    low, high = ephemeral or ephemeral_port_range()
    blocks = PORT_BLOCKS_FOR_WORKERS + 1
    if low - PORT_BLOCK_FIRST >= blocks * PORT_BLOCK_SIZE:
        region = PORT_BLOCK_FIRST
    elif 65536 - (high + 1) >= blocks * PORT_BLOCK_SIZE:
        region = high + 1
    else:
        raise RuntimeError("no room for the test lab's ports outside the ephemeral range %d-%d "
                           "(net.ipv4.ip_local_port_range): %d ports are needed below or above it"
                           % (low, high, blocks * PORT_BLOCK_SIZE))
    index = int(worker[2:]) % PORT_BLOCKS_FOR_WORKERS if worker[:2] == "gw" and worker[2:].isdigit() \
        else PORT_BLOCKS_FOR_WORKERS
    first = region + index * PORT_BLOCK_SIZE
    return first, first + PORT_BLOCK_SIZE


_ports_lock = threading.Lock()
_ports_given = set()
_ports_next = None


def port_is_free(port):
    """Whether nothing holds 127.0.0.1:port: a plain bind (no SO_REUSEADDR, no SO_REUSEPORT)."""
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port():
    """A loopback port nothing holds now, from this process's block, never the same twice in
    one pass through the block (a test's apps are given their ports before they bind them)."""
    global _ports_next
    first, end = port_block()
    with _ports_lock:
        if _ports_next is None or not first <= _ports_next < end:
            # Processes sharing a block (runs without -n beside each other) start apart.
            _ports_next = first + (os.getpid() * 7919) % PORT_BLOCK_SIZE
        for attempt in range(2 * PORT_BLOCK_SIZE):
            if attempt == PORT_BLOCK_SIZE:
                _ports_given.clear()  # a whole pass gave nothing: the tests of the last are long gone
            port = _ports_next
            _ports_next = first + (_ports_next + 1 - first) % PORT_BLOCK_SIZE
            if port not in _ports_given and port_is_free(port):
                _ports_given.add(port)
                return port
        raise RuntimeError("no free port in %d-%d" % (first, end - 1))


def wait_for(predicate, timeout=15.0, interval=0.1, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))


def held_stream(port, seconds=120):
    """A started client holding GET /stream open through the lab's listener on `port` (HTTP or
    `mode tcp`): tests/support/held_stream.py, shared with the Molecule scenarios."""
    stream = HeldStream("127.0.0.1", port, "release.test", seconds=seconds)
    stream.start()
    return stream


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

    @property
    def log_path(self):
        return os.path.join(self.workdir, "%s.log" % self.name)

    def start(self):
        """Start the app and wait until the port answers from THIS process (X-App-Pid): a port
        someone else holds fails here, with the app's own error, not later as a wrong answer."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, APP, "--color", self.color, "--bind", "127.0.0.1",
                 "--port", str(self.port), "--unhealthy-file", self.unhealthy_file,
                 "--fail-file", self.fail_file],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_for(self._serving, what="app %s (pid %d) to answer on port %d" % (self.name, self.process.pid, self.port))
        return self

    def _serving(self):
        if self.process.poll() is not None:
            with open(self.log_path, errors="replace") as log:
                tail = log.read()[-1500:]
            raise AssertionError("app %s exited (status %s) instead of serving on port %d:\n%s"
                                 % (self.name, self.process.returncode, self.port, tail))
        return self.answering_pid() == self.process.pid

    def answering_pid(self):
        """The pid of the app process answering on the port (None: no answer, or not an app)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.5)
        try:
            connection.request("GET", "/healthz")
            pid = connection.getresponse().getheader("X-App-Pid")
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()
        return int(pid) if pid and pid.isdigit() else None

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
    tcp_port: int = None  # set: add the `mode tcp` frontend of TCP_CFG on this port
    test_port: int = None  # set: add the test listener of TEST_LISTENER_CFG on this port
    # True: fe_main routes a canary share (issue 15) as the README's "Canary routing" lines do,
    # each user's stable bucket hashed from the X-User-Id header.
    canary: bool = False
    # {backend: [config lines]} put in that backend: e.g. a rewrite that breaks it through HAProxy
    # only (its servers still answer a request sent straight to them, as the preflight sends it).
    backend_lines: dict = None
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
                handle.write(MAP_TEXT + ("%s backend_tcp_blue\n" % TCP_KEY if self.tcp_port else ""))
        config = HAPROXY_CFG.format(
            admin_socket=self.socket, stats_port=self.stats_port,
            pidfile=os.path.join(self.workdir, "haproxy.pid"), inter=self.inter,
            frontend_port=self.frontend_port, map_path=self.map_path,
            blue_servers=self._servers("blue"), green_servers=self._servers("green"),
        )
        if self.tcp_port:
            config += TCP_CFG.format(tcp_port=self.tcp_port, tcp_key=TCP_KEY, map_path=self.map_path,
                                     blue_servers=self._servers("blue"), green_servers=self._servers("green"))
        if self.test_port:
            config += TEST_LISTENER_CFG.format(test_port=self.test_port, map_path=self.map_path)
        if self.canary:
            switch = "    use_backend %%[str(active),map(%s,backend_blue)]\n" % self.map_path
            assert switch in config
            config = config.replace(switch, CANARY_LINES.format(map_path=self.map_path) + switch, 1)
        for backend, lines in (self.backend_lines or {}).items():
            header = "backend %s\n" % backend
            assert header in config, "no %s in the lab's config" % backend
            config = config.replace(header, header + "".join("    %s\n" % line for line in lines), 1)
        with open(self.config_path, "w") as handle:
            handle.write(config)

    def start(self):
        self.write_config()
        subprocess.run([HAPROXY, "-c", "-q", "-f", self.config_path], check=True)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [HAPROXY, "-W", "-db", "-S", self.master_socket, "-f", self.config_path],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_for(self._started, what="HAProxy admin socket")
        return self

    @property
    def log_path(self):
        return os.path.join(self.workdir, "haproxy.log")

    def _started(self):
        if self.process.poll() is not None:
            # E.g. a port in use: with `noreuseport` HAProxy refuses it instead of sharing it.
            with open(self.log_path, errors="replace") as log:
                tail = log.read()[-1500:]
            raise AssertionError("HAProxy (%s) exited (status %s) instead of starting:\n%s"
                                 % (self.config_path, self.process.returncode, tail))
        return os.path.exists(self.socket) and self._answers()

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
        pid = runtime_client.info(self.runtime("show info")).get("Pid")
        return int(pid) if pid else None

    def server_status(self, backend, server):
        return runtime_client.server_states(self.runtime("show stat %s 4 -1" % backend))["%s/%s" % (backend, server)]

    def wait_status(self, backend, server, status, timeout=15.0):
        wait_for(lambda: self.server_status(backend, server) == status, timeout=timeout,
                 what="%s/%s to be %s" % (backend, server, status))

    def wait_all_up(self, timeout=15.0):
        for app in self.apps.values():
            self.wait_status("backend_" + app.name.rstrip("0123456789"), app.name, "UP", timeout)

    def map_value(self, key="active"):
        return runtime_client.map_entries(self.runtime("show map %s" % self.map_path)).get(key)

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

    def get(self, path="/release", timeout=5.0, host="release.test", port=None, headers=None):
        """One request through the frontend (or the one on `port`, e.g. tcp_port) on a fresh connection: (status, body)."""
        extra = "".join("%s: %s\r\n" % item for item in (headers or {}).items())
        with socket.create_connection(("127.0.0.1", port or self.frontend_port), timeout=timeout) as sock:
            sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (path, host, extra)).encode())
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

    def map_values(self, key="active"):
        return [node.map_value(key) for node in self.nodes]

    def disk_values(self, key="active"):
        values = []
        for node in self.nodes:
            entries = dict(line.split(None, 1) for line in node.disk_text().splitlines()
                           if line.strip() and not line.startswith("#"))
            values.append(entries.get(key))
        return values

    def answers(self):
        return [node.get()[1].strip() for node in self.nodes]

    def make_live(self, value):
        for node in self.nodes:
            node.make_live(value)


def write_inventory(path, nodes, group_vars=None, tcp=False):
    """An inventory group `haproxy` of local hosts node1..N, one per HAProxyEnv; with `tcp`, the
    smoke tests go to each node's `mode tcp` frontend (tcp_port) instead of its HTTP one."""
    lines = ["[haproxy]"]
    for index, node in enumerate(nodes, start=1):
        lines.append(
            "node%d ansible_connection=local ansible_python_interpreter=%s release_socket=%s "
            "release_map=%s release_smoke_resolve=127.0.0.1:%d"
            % (index, sys.executable, node.socket, node.map_path, node.tcp_port if tcp else node.frontend_port)
            + (" release_test_listener=127.0.0.1:%d" % node.test_port if getattr(node, "test_port", None) else ""))
    lines += ["", "[haproxy:vars]"]
    lines += ["%s=%s" % item for item in sorted((group_vars or {}).items())]
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


class LoadGenerator(threading.Thread):
    """Users: requests through every node's frontend, one connection each, until stopped (bounded).

    Counts what the users saw: `answers` ("<status> <body>" -> count), `colors` (the version
    of every 200 answer -> count), `errors` (connection failures), `failed` (connection failures
    plus every answer other than 200) and, per node, the same in `node_answers`; `timeline`
    holds (epoch, answer) for every request, so a test can tell what users saw after an instant.
    `paths` are requested in turn, so a test can send real traffic the smoke test never sends.
    With `tcp`, the requests go through each node's `mode tcp` frontend instead. `pause` is the
    time between rounds (a few users, not a flood, where a test needs presence, not volume).
    """

    def __init__(self, nodes, paths=("/release",), max_seconds=240, tcp=False, pause=0.005):
        super().__init__(daemon=True)
        self.nodes = list(nodes)
        self.paths = list(paths)
        self.max_seconds = max_seconds
        self.tcp = tcp
        self.pause = pause
        self.timeline = []
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
                    status, body = node.get(path, timeout=5, port=node.tcp_port if self.tcp else None)
                    key = "%d %s" % (status, body.strip())
                except (OSError, ValueError) as exc:
                    self.errors.append("%s %s: %r" % (node.frontend_url, path, exc))
                    key = "error"
                else:
                    if status == 200 and body.startswith("version="):
                        color = body.strip()[len("version="):]
                        self.colors[color] = self.colors.get(color, 0) + 1
                self.timeline.append((time.time(), key))
                if key != "error":
                    self.answers[key] = self.answers.get(key, 0) + 1
                self.node_answers[index][key] = self.node_answers[index].get(key, 0) + 1
                self.requests += 1
            time.sleep(self.pause)

    @property
    def failed(self):
        """Requests a user saw fail: no answer, or any status but 200."""
        return len(self.errors) + sum(count for key, count in self.answers.items() if not key.startswith("200 "))

    def wrong(self, allowed):
        """200 answers from a version not in `allowed` (a user saw the wrong release)."""
        return sum(count for color, count in self.colors.items() if color not in allowed)

    def answers_between(self, start, end):
        """{answer: count} of the requests answered from `start` to `end` (epoch seconds)."""
        seen = {}
        for at, key in list(self.timeline):
            if start <= at <= end:
                seen[key] = seen.get(key, 0) + 1
        return seen

    def wait_requests(self, count, timeout=180.0):
        """Wait until `count` more requests were answered (or failed) from now on."""
        target = self.requests + count
        wait_for(lambda: self.requests >= target, timeout=timeout,
                 what="%d more requests of the load generator" % count)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=30)
