"""Several services in one release: a host-keyed map, each key with its own target, health gate
and smoke test, switched in one atomic step per node, persisted and rolled back together.

Every node is a real HAProxy routing by `req.hdr(host),lower` through one map, as the haproxy
role renders it with haproxy_switch_key=req.hdr(host),lower; each service has its own blue and
green app processes. A third key (static.test) is never part of a release and must never move.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

from lab import REPO, App, HAProxyEnv, free_port, wait_for
from release_report import final_message, finish_steps, nothing_switched, prechecked, ran, step_items, switch_steps
from support import runtime_client

CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")

SERVICES = ("shop", "api")
HOSTS = {"shop": "shop.test", "api": "api.test", "static": "static.test"}

CONFIG = """\
global
    noreuseport
    stats socket {admin_socket} mode 660 level admin
    stats timeout 30s
    pidfile {pidfile}

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s
    default-server inter 500ms fall 3 rise 2

frontend fe_main
    bind 127.0.0.1:{frontend_port}
    use_backend %[req.hdr(host),lower,map({map_path},static_blue)]
{backends}
"""

BACKEND = """
backend {name}
    option httpchk GET /healthz
    http-check expect status 200
    server {name}1 127.0.0.1:{port} check
"""

MAP = "# host -> live backend\nshop.test shop_blue\napi.test api_blue\nstatic.test static_blue\n"


class HostKeyedNode(HAProxyEnv):
    """A HAProxy whose map is keyed by host: one blue and one green backend per service."""

    def write_config(self):
        os.makedirs(os.path.dirname(self.map_path), exist_ok=True)
        if not os.path.exists(self.map_path):
            with open(self.map_path, "w") as handle:
                handle.write(MAP)
        backends = "".join(BACKEND.format(name=name, port=app.port) for name, app in sorted(self.apps.items()))
        with open(self.config_path, "w") as handle:
            handle.write(CONFIG.format(admin_socket=self.socket, pidfile=os.path.join(self.workdir, "haproxy.pid"),
                                       frontend_port=self.frontend_port, map_path=self.map_path, backends=backends))

    def wait_all_up(self, timeout=15.0):
        for name in self.apps:
            self.wait_status(name, name + "1", "UP", timeout)

    def values(self):
        """{host: live backend} from the runtime map."""
        return runtime_client.map_entries(self.runtime("show map %s" % self.map_path))

    def disk_values(self):
        with open(self.map_path) as handle:
            return dict(line.split(None, 1)[0:2] for line in handle.read().splitlines()
                        if line.strip() and not line.startswith("#"))

    def answer(self, host):
        """The body of GET /release with this Host header through the node's frontend."""
        return self.get(host=host)[1].strip()


@pytest.fixture
def host_keyed_fleet(tmp_path):
    """Two nodes; `wrong` names backends whose app answers another version (e.g. api_green answers api_blue)."""
    nodes, apps = [], []

    def build(count=2, wrong=None):
        for index in range(count):
            workdir = tmp_path / ("node%d" % (index + 1))
            workdir.mkdir()
            node_apps = {}
            for backend in ("shop_blue", "shop_green", "api_blue", "api_green", "static_blue"):
                answers = (wrong or {}).get(backend, backend)
                node_apps[backend] = App(name=backend, color=answers, port=free_port(), workdir=str(workdir)).start()
                apps.append(node_apps[backend])
            node = HostKeyedNode(workdir=str(workdir), apps=node_apps, frontend_port=free_port(),
                                 stats_port=free_port(), inter="300ms")
            nodes.append(node.start())
        for node in nodes:
            node.wait_all_up()
        inventory = tmp_path / "inventory.ini"
        lines = ["[haproxy]"] + [
            "node%d ansible_connection=local ansible_python_interpreter=%s release_socket=%s release_map=%s "
            "release_smoke_resolve=127.0.0.1:%d" % (index + 1, sys.executable, node.socket, node.map_path, node.frontend_port)
            for index, node in enumerate(nodes)]
        # release_max_spread 5: as fleet_factory's fleets (conftest): on busy shared cores a late node
        # says nothing about the services; the spread tests pass their own.
        lines += ["", "[haproxy:vars]", "release_health_wait=10", "release_smoke_requests=4", "release_max_spread=5"]
        inventory.write_text("\n".join(lines) + "\n")
        return nodes, str(inventory)

    yield build
    for node in nodes:
        node.stop()
    for app in apps:
        app.stop()


def services(targets=True):
    """release_services for shop and api: each smoke-tests its own host; the node's listener comes from
    the inventory's release_smoke_resolve, which every service inherits."""
    return [dict(key=HOSTS[name], smoke_url="http://%s/release" % HOSTS[name],
                 backends=["%s_blue" % name, "%s_green" % name],
                 **({"target": "%s_green" % name} if targets else {}))
            for name in SERVICES]


BLUE = {"shop.test": "shop_blue", "api.test": "api_blue", "static.test": "static_blue"}
GREEN = {"shop.test": "shop_green", "api.test": "api_green", "static.test": "static_blue"}


def test_services_switch_together_persist_and_roll_back_together(host_keyed_fleet, run_playbook, tmp_path):
    nodes, inventory = host_keyed_fleet()
    report_file = tmp_path / "report.json"

    rc, report = run_playbook(CUTOVER, dict(release_services=services(), release_report_file=str(report_file)),
                              inventory=inventory)

    assert rc == 0, final_message(report)
    assert [node.values() for node in nodes] == [GREEN, GREEN]
    assert [node.disk_values() for node in nodes] == [GREEN, GREEN]
    assert [node.answer("shop.test") for node in nodes] == ["version=shop_green"] * 2
    assert [node.answer("api.test") for node in nodes] == ["version=api_green"] * 2
    # One switch per node with every key in it (one prepare/commit), and one file write per node.
    switches = [step["switch"] for step in switch_steps(report).values()]
    assert len(switches) == 2 and all(result["changed"] for result in switches)
    assert all(sorted(result["changed_keys"]) == ["api.test", "shop.test"] for result in switches)
    writes = [step["persist"] for step in finish_steps(report).values() if (step["persist"] or {}).get("persisted")]
    assert len(writes) == 2 and all(result["disk_entries"] == {"api.test": "api_green", "shop.test": "shop_green"}
                                    for result in writes)
    # Each service had its own health gate, preflight and current path (one precheck per node),
    # and its own smoke test after the switch.
    every = sorted((host, key) for host in ("node1", "node2") for key in ("shop.test", "api.test"))
    assert len(ran(report, "release_step", "prepare")) == 2
    for stage in ("health", "preflight", "current"):
        assert sorted((host, key) for host, key, _result in prechecked(report, stage)) == every, stage
    assert sorted({(host, key) for host, key, _result in step_items(report, "smoke")}) == every
    written = json.loads(report_file.read_text())
    assert written["outcome"] == "succeeded" and written["key"] == ["shop.test", "api.test"]
    assert written["nodes"]["node1"]["target"] == {"shop.test": "shop_green", "api.test": "api_green"}
    assert written["nodes"]["node1"]["live_disk"] == {"shop.test": "shop_green", "api.test": "api_green"}
    assert not [node.map_path + ".lock" for node in nodes if os.path.exists(node.map_path + ".lock")]

    # rollback.yml with the same services and no targets: every key back to its other backend.
    rc, report = run_playbook(ROLLBACK, dict(release_services=services(targets=False)), inventory=inventory)

    assert rc == 0, final_message(report)
    assert [node.values() for node in nodes] == [BLUE, BLUE]
    assert [node.disk_values() for node in nodes] == [BLUE, BLUE]


def test_one_bad_service_refuses_the_whole_release(host_keyed_fleet, run_playbook):
    # api_green's server answers the old version: the preflight of api.test fails, so shop.test
    # does not move either, on any node.
    nodes, inventory = host_keyed_fleet(wrong={"api_green": "api_blue"})

    rc, report = run_playbook(CUTOVER, dict(release_services=services()), inventory=inventory)

    assert rc != 0
    message = final_message(report)
    assert "api.test" in message and "preflight" in message and "nothing was switched" in message, message
    assert "shop.test:" not in message, message
    assert [node.values() for node in nodes] == [BLUE, BLUE]
    assert nothing_switched(report) == []

    # Without the preflight the bad service is found by the smoke test after the switch: every
    # key on every node goes back, at runtime and on disk.
    rc, report = run_playbook(CUTOVER, dict(release_services=services(), release_preflight=False),
                              inventory=inventory)

    assert rc != 0
    message = final_message(report)
    assert "every node was rolled back" in message and "SMOKE: api.test" in message, message
    assert [node.values() for node in nodes] == [BLUE, BLUE]
    assert [node.disk_values() for node in nodes] == [BLUE, BLUE]
    wait_for(lambda: [node.answer("shop.test") for node in nodes] == ["version=shop_blue"] * 2,
             timeout=5, what="shop.test back on shop_blue")


@pytest.mark.parametrize("bad, expected", [
    ([{"key": "shop.test", "target": "shop_green"}, {"key": "shop.test", "target": "x"}],
     "release_services: the key shop.test is listed twice"),
    ([{"key": "shop.test"}], "release_services[shop.test].target is empty"),
])
def test_bad_services_are_refused_before_anything_is_read(host_keyed_fleet, run_playbook, bad, expected):
    nodes, inventory = host_keyed_fleet(count=1)

    rc, report = run_playbook(CUTOVER, dict(release_services=[dict(item, smoke_url="http://shop.test/release")
                                                              for item in bad]), inventory=inventory)

    assert rc != 0
    assert expected in final_message(report), final_message(report)
    assert not ran(report, "release_step", "prepare") and not ran(report, "haproxy_map")
    assert nodes[0].values() == BLUE
