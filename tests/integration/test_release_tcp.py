# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release engine on a `mode tcp` frontend (issue 15, section 3: "the same on a mode tcp frontend").

Each node is the lab's HAProxy with its `mode tcp` frontend (tests/lab.py TCP_CFG: map key `tcp`,
backends backend_tcp_blue / backend_tcp_green over the same apps). The release's smoke tests are
tcp://: each attempt connects to the node's tcp listener (release_smoke_resolve), sends
release_smoke_send (the apps are HTTP servers, so an HTTP/1.0 request as raw bytes) and reads
until the backend's release_smoke_bodies regex matches. Real HAProxy 2.6 on loopback.
"""

from __future__ import annotations

import os
import time

from lab import LoadGenerator, held_stream, wait_for
from release_report import artifacts, final_message, lock_files, nothing_switched, prechecked
# scur: a server's sessions.
from test_haproxy_backend_drain import scur
from test_release_drain import new_requests_reach_green_throughout

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
ROLLBACK = os.path.join(REPO, "playbooks", "rollback.yml")

TCP = {
    "release_map_key": "tcp",
    "release_backends": ["backend_tcp_blue", "backend_tcp_green"],
    "release_smoke_url": "tcp://db.release.test:5432",
    # As an operator writes it in YAML single quotes: the escapes are the release's, not YAML's.
    "release_smoke_send": "GET /release HTTP/1.0\\r\\n\\r\\n",
    "release_smoke_bodies": {"backend_tcp_blue": "version=blue", "backend_tcp_green": "version=green"},
}
GREEN = dict(TCP, release_target="backend_tcp_green")
# green2 passes its (tcp connect) health checks but serves the blue release: only its answers tell.
WRONG_GREEN2 = {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "blue"}


def tcp_fleet(fleet_factory, **options):
    fleet = fleet_factory(tcp=True, **options)
    for node in fleet.nodes:
        for server in ("green1", "green2"):
            node.wait_status("backend_tcp_green", server, "UP")
    return fleet


def tcp_answers(fleet):
    return [node.get(port=node.tcp_port)[1].strip() for node in fleet.nodes]


def test_a_cutover_moves_the_tcp_frontend_persists_it_and_closes_what_blue_still_holds(fleet_factory, run_playbook):
    fleet = tcp_fleet(fleet_factory, nodes=2)
    streams = []
    for node in fleet.nodes:  # a long-lived TCP session on blue through each node's tcp frontend
        stream = held_stream(node.tcp_port)
        streams.append(stream)
        wait_for(lambda: stream.chunks >= 1, what="the first chunk of the held stream")
        wait_for(lambda node=node: scur(node, "backend_tcp_blue", "blue1") + scur(node, "backend_tcp_blue", "blue2") == 1,
                 what="backend_tcp_blue to count the held session")
    load = LoadGenerator(fleet.nodes, tcp=True, pause=0.05)
    load.start()

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_drain_timeout=2, release_drain_shutdown=True),
                              inventory=fleet.inventory)

    ended = time.time()
    load.stop()
    assert rc == 0, final_message(report)
    # New connections reach green from the switch on, through the drain; none failed.
    new_requests_reach_green_throughout(load, report, ended)
    assert load.failed == 0, load.answers
    assert fleet.map_values("tcp") == ["backend_tcp_green"] * 2, "switched at runtime"
    assert fleet.disk_values("tcp") == ["backend_tcp_green"] * 2, "persisted"
    assert fleet.map_values() == ["backend_blue"] * 2, "the HTTP service's key is not the release's"
    assert tcp_answers(fleet) == ["version=green"] * 2
    current = [result for _host, _key, result in prechecked(report, "current")]
    assert len(current) == 2 and all(result["passed"] and result["requests"] == 6 for result in current), current
    assert all("tcp://db.release.test:5432" in result["msg"] for result in current), current
    preflight = [result for _host, _key, result in prechecked(report, "preflight")]
    assert [result["passed_count"] for result in preflight] == [2, 2], preflight
    # The drain: the held TCP sessions are closed by FINISH (cut short, not their normal end).
    # The client's reader sees the close a moment later on a busy machine.
    wait_for(lambda: all(stream.ended.is_set() for stream in streams), timeout=10, what="every held stream to end")
    assert not any(stream.complete for stream in streams), "cut short, not their normal end"
    for host, node in artifacts(report)["release_summary"].items():
        drain = node["drain"]
        assert (drain["backend"], drain["sessions_left"], drain["shut_down"]) == ("backend_tcp_blue", 0, 1), (host, drain)
    assert lock_files(fleet) == []


def test_a_wrong_green_behind_the_tcp_frontend_is_refused_by_the_preflight(fleet_factory, run_playbook):
    fleet = tcp_fleet(fleet_factory, nodes=2, node_colors={1: WRONG_GREEN2})
    disks = [node.disk_text() for node in fleet.nodes]

    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)

    message = final_message(report)
    assert rc != 0
    assert "node2" in message and "green2" in message and "without a match of 'version=green'" in message, message
    assert nothing_switched(report) == [], "no node may even attempt a switch"
    assert fleet.map_values("tcp") == ["backend_tcp_blue"] * 2
    assert [node.disk_text() for node in fleet.nodes] == disks
    preflight = {host: result for host, _key, result in prechecked(report, "preflight")}
    assert preflight["node2"]["failed_servers"] == ["green2"], preflight["node2"]
    (green2,) = [server for server in preflight["node2"]["servers"] if server["name"] == "green2"]
    assert "version=blue" in green2["reason"], green2  # what it answered instead
    assert lock_files(fleet) == []


def test_without_preflight_the_tcp_smoke_rolls_the_wrong_green_back(fleet_factory, run_playbook):
    fleet = tcp_fleet(fleet_factory, nodes=2, node_colors={1: WRONG_GREEN2})

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_preflight=False), inventory=fleet.inventory)

    message = final_message(report)
    assert rc != 0
    assert "node2" in message and "without a match of 'version=green'" in message, message
    assert "rolled back" in message, message
    assert nothing_switched(report) != [], "the switch happened: the tcp smoke test is what caught it"
    assert fleet.map_values("tcp") == ["backend_tcp_blue"] * 2
    assert fleet.disk_values("tcp") == ["backend_tcp_blue"] * 2
    assert tcp_answers(fleet) == ["version=blue"] * 2
    assert lock_files(fleet) == []


def test_rollback_returns_the_tcp_frontend_to_blue(fleet_factory, run_playbook):
    fleet = tcp_fleet(fleet_factory, nodes=2)
    for node in fleet.nodes:
        node.make_live("backend_tcp_green", key="tcp")

    rc, report = run_playbook(ROLLBACK, TCP, inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    assert fleet.map_values("tcp") == ["backend_tcp_blue"] * 2
    assert fleet.disk_values("tcp") == ["backend_tcp_blue"] * 2
    assert tcp_answers(fleet) == ["version=blue"] * 2
    assert lock_files(fleet) == []


def test_a_watch_window_is_refused_at_init_for_a_tcp_service(fleet_factory, run_playbook):
    fleet = tcp_fleet(fleet_factory, nodes=1)
    disks = [node.disk_text() for node in fleet.nodes]

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_watch_seconds=10), inventory=fleet.inventory)

    message = final_message(report)
    assert rc != 0
    assert "release_watch_seconds is 10 but release_smoke_url is smoke-tested over tcp://" in message, message
    assert nothing_switched(report) == [] and [node.disk_text() for node in fleet.nodes] == disks
