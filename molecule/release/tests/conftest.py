"""Fixtures of the release scenario's testinfra tests (helpers: molecule/shared): the fleet
(lb1, lb2), its app containers, a reset to what converge left, and a load generator."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import http.client

import pytest

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SCENARIO, "..", "shared"))

from bluegreen_molecule import MAP, nodes  # noqa: E402
from testinfra.utils.ansible_runner import AnsibleRunner  # noqa: E402

HOST_HEADER = "release.example.test"
SERVERS = ["backend_blue/blue1", "backend_blue/blue2", "backend_green/green1", "backend_green/green2"]

# Tests marked `loopback_twin` prove what tests/integration proves against the same HAProxy 2.6
# (Debian 12's package, the bookworm image's) on loopback: the wrong green, the health gates,
# the reload in the watch window, ansible-runner. They run on every other image (HAProxy 3.0 on
# trixie: the only place they meet that version), and on bookworm with MOLECULE_ALL_TESTS=1.
LOOPBACK_IMAGE = "bookworm"


def pytest_configure(config):
    config.addinivalue_line("markers", "loopback_twin: also proven by tests/integration on HAProxy 2.6")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("HAPROXY_IMAGE_TAG", "bookworm") != LOOPBACK_IMAGE or os.environ.get("MOLECULE_ALL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="HAProxy 2.6: tests/integration proves this on loopback (MOLECULE_ALL_TESTS=1 runs it)")
    for item in items:
        if "loopback_twin" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def fleet():
    """[lb1, lb2] as bluegreen_molecule.Node."""
    found = nodes("haproxy")
    return [next(node for name, node in found.items() if "-%s-" % lb in name) for lb in ("lb1", "lb2")]


@pytest.fixture(scope="session")
def apps():
    """{alias: container name} of the app containers (group `apps`), e.g. {"green2": "release-green2-bookworm"}."""
    from bluegreen_molecule import inventory
    names = AnsibleRunner(inventory()).get_hosts("apps")
    return {name.split("-")[-2]: name for name in names}


def resolve(node, name):
    """The address of a container, as the node's resolver (docker DNS) gives it."""
    return node.host.check_output("getent ahostsv4 %s" % shlex.quote(name)).split()[0]


def reset(fleet, apps):
    """Back to what converge left: every app container running, green2 at its own address,
    every server ready and UP, the switch on blue at runtime and on disk, no canary or preview
    entry at runtime, no lock."""
    subprocess.run(["docker", "start"] + sorted(apps.values()), check=True, stdout=subprocess.DEVNULL)
    for node in fleet:
        # What a canary or a PREVIEW left at runtime (active.weight, active.canary,
        # active.preview): never on disk, so only the runtime map can hold them.
        extra = sorted(key for key in node.runtime_map() if key != "active")
        # One Runtime API connection (one docker exec) per node: HAProxy runs the commands of a
        # line separated by ";" one after the other.
        node.cli("; ".join(["set server backend_green/green2 addr %s port 8080" % resolve(node, "green2")] + [
            "set server %s state ready" % server for server in SERVERS] + [
            "set map %s active backend_blue" % MAP] + ["del map %s %s" % (MAP, key) for key in extra]))
        node.host.run_expect([0], "sed -i 's/^active .*/active backend_blue/' %s && rm -f %s.lock" % (MAP, MAP))
    for node in fleet:
        node.wait_servers("UP", SERVERS)


@pytest.fixture()
def from_blue(fleet, apps):
    """Every test starts from blue everywhere, whatever the test before it (passed or failed)
    left. (No reset after the last test: `destroy` follows verify.)"""
    reset(fleet, apps)


def state(node):
    """The switch at runtime and on disk, the map file, and whether a lock is left."""
    return {"runtime": node.runtime_map().get("active"), "disk": node.disk_map().get("active"),
            "map_file": node.host.file(MAP).content_string, "lock": node.host.file(MAP + ".lock").exists}


def expect_fleet(fleet, backend):
    """Every node: the switch says backend at runtime AND on disk, no lock, and its frontend
    answers that color."""
    color = backend.replace("backend_", "")
    for node in fleet:
        seen = state(node)
        assert (seen["runtime"], seen["disk"], seen["lock"]) == (backend, backend, False), (node.name, seen)
        assert node.answers(host_header=HOST_HEADER) == {(200, "version=%s" % color)}, node.name


def backend_2xx(node, backend):
    """The backend's hrsp_2xx counter on that node (the responses it served)."""
    for row in node.cli("show stat %s 2 -1" % backend, parse="stat"):
        if row["svname"] == "BACKEND":
            return int(row.get("hrsp_2xx") or 0)
    raise AssertionError("%s: no backend %s" % (node.name, backend))


class Load:
    """Requests through each node's frontend (container address, port 80, the public Host
    header), from this machine, until stopped: counts per answer. Per node, one client opens a
    new connection for each request and one keeps its connection alive between requests, as
    browsers do (a new one only when HAProxy closes it): a reload must lose neither."""

    def __init__(self, addresses):
        self.addresses = addresses
        self.stop_event = threading.Event()
        self.started = time.monotonic()
        self.counts = {address: {"total": 0, "reused": 0, "answers": {}, "errors": [], "first": {}, "last": {}}
                       for address in addresses}
        self.threads = [threading.Thread(target=self._run, args=(address, keepalive), daemon=True)
                        for address in addresses for keepalive in (False, True)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)
        return self.counts

    def _run(self, address, keepalive):
        counts = self.counts[address]
        conn, served = None, 0
        # A guard against a runaway thread only: stop() ends it.
        while not self.stop_event.is_set() and time.monotonic() - self.started < 3600:
            counts["total"] += 1
            now = round(time.monotonic() - self.started, 2)
            if conn is None:
                conn, served = http.client.HTTPConnection(address, 80, timeout=5), 0
            try:
                conn.request("GET", "/release", headers={"Host": HOST_HEADER})
                response = conn.getresponse()
                key = "%d %s" % (response.status, response.read().decode("utf-8", "replace").strip())
                counts["answers"][key] = counts["answers"].get(key, 0) + 1
                counts["first"].setdefault(key, now)
                counts["last"][key] = now
                counts["reused"] += served > 0
                served += 1
                closed = (response.getheader("Connection") or "").lower() == "close"
            except (OSError, http.client.HTTPException) as exc:
                counts["errors"].append("%.2fs %s %r" % (now, "keep-alive" if served else "new connection", exc))
                closed = True
            if closed or not keepalive:
                conn.close()
                conn = None
            time.sleep(0.04)


class Users:
    """`count` distinct users (X-User-Id: user-<n>), each always through the same node's
    frontend (container address, port 80, the public Host header), asking GET /release in turn
    until stopped, from this machine: every answer kept as (sent, user, status, body, answered),
    the times from time.time() before the request and after its answer. A few
    threads, each with a keep-alive connection per node (a new one when HAProxy closes it)."""

    def __init__(self, addresses, count, threads=4, max_seconds=600):
        self.addresses, self.count, self.max_seconds = addresses, count, max_seconds
        self.stop_event = threading.Event()
        self.answers = [[] for _thread in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(index, threads), daemon=True)
                        for index in range(threads)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)
        return self.all()

    def all(self):
        return sorted(answer for answers in self.answers for answer in list(answers))

    def address(self, user):
        return self.addresses[user % len(self.addresses)]

    def _run(self, index, threads):
        answers, connections = self.answers[index], {}
        deadline = time.monotonic() + self.max_seconds  # a guard against a runaway thread only
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for user in range(index, self.count, threads):
                if self.stop_event.is_set():
                    break
                address = self.address(user)
                conn = connections.get(address) or http.client.HTTPConnection(address, 80, timeout=5)
                connections[address] = conn
                sent = time.time()
                try:
                    conn.request("GET", "/release", headers={"Host": HOST_HEADER, "X-User-Id": "user-%d" % user})
                    response = conn.getresponse()
                    body = response.read().decode("utf-8", "replace").strip()
                    answers.append((sent, user, response.status, body, time.time()))
                    if (response.getheader("Connection") or "").lower() == "close":
                        conn.close()
                        connections.pop(address)
                except (OSError, http.client.HTTPException) as exc:
                    answers.append((sent, user, None, repr(exc), time.time()))
                    conn.close()
                    connections.pop(address)
        for conn in connections.values():
            conn.close()


def container_address(name):
    inspect = subprocess.run(["docker", "inspect", name], stdout=subprocess.PIPE, check=True,
                             universal_newlines=True)
    networks = json.loads(inspect.stdout)[0]["NetworkSettings"]["Networks"]
    return next(iter(networks.values()))["IPAddress"]
