# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A release drains the old version (issue 15, "Drain the old version"): a streaming response held
on blue through each node's listener while the cutover playbook moves the fleet to green.

With release_drain_timeout the FINISH step waits until blue holds no session, up to the fleet's
instant; with release_drain_shutdown it then closes what is left (the client's stream ends before
the playbook does), without it the report says what blue still holds. Real HAProxy 2.6 on loopback.
"""

from __future__ import annotations

import os
import time

from lab import LoadGenerator, held_stream, wait_for
from release_report import artifacts, final_message, lock_files
# scur: a server's sessions.
from test_haproxy_backend_drain import scur

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
GREEN = {"release_target": "backend_green"}


def hold_a_stream_on_blue(node):
    stream = held_stream(node.frontend_port)
    wait_for(lambda: stream.chunks >= 1, what="the first chunk of the held stream")
    assert b"version=blue" in stream.data
    wait_for(lambda: sum(scur(node, "backend_blue", server) for server in ("blue1", "blue2")) == 1,
             what="backend_blue to count the held session")
    return stream


def new_requests_reach_green_throughout(load, report, ended, colors=("version=green",)):
    """Every request a user sent from the last node's switch to the end of the run (the drain
    included: FINISH waits, then closes) reached the new version, and there were such requests."""
    switched = max(float(node["switched_at"]) for node in artifacts(report)["release_summary"].values())
    after = load.answers_between(switched + 0.2, ended)
    assert sum(after.values()) >= 10, ("users kept sending requests during the drain", after)
    assert set(after) <= set("200 %s" % color for color in colors), after


def drains(report):
    return dict((host, node["drain"]) for host, node in artifacts(report)["release_summary"].items())


def test_a_cutover_closes_what_the_old_version_still_holds_with_shutdown(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=2)
    streams = [hold_a_stream_on_blue(node) for node in fleet.nodes]
    load = LoadGenerator(fleet.nodes, pause=0.05)
    load.start()

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_drain_timeout=2, release_drain_shutdown=True),
                              inventory=fleet.inventory)

    ended = time.time()
    load.stop()
    assert rc == 0, final_message(report)
    new_requests_reach_green_throughout(load, report, ended)
    assert load.failed == 0, load.answers
    assert fleet.map_values() == ["backend_green"] * 2 and fleet.disk_values() == ["backend_green"] * 2
    # Closed by the FINISH step, before the playbook returned: cut short, not its normal end.
    # The client's reader sees the close a moment later on a busy machine.
    wait_for(lambda: all(stream.ended.is_set() for stream in streams), timeout=10, what="every held stream to end")
    assert not any(stream.complete for stream in streams), "cut short, not their normal end"
    for host, drain in drains(report).items():
        assert (drain["backend"], drain["sessions_left"], drain["shut_down"]) == ("backend_blue", 0, 1), (host, drain)
        assert drain["waited"] <= 2.5, (host, drain)
    assert artifacts(report)["release_drain"] == \
        "the previous version holds no session on any node (2 closed by release_drain_shutdown)"
    assert lock_files(fleet) == []
    assert fleet.answers() == ["version=green"] * 2


def test_without_shutdown_the_report_names_what_the_old_version_still_holds(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    stream = hold_a_stream_on_blue(fleet.nodes[0])
    load = LoadGenerator(fleet.nodes, pause=0.05)
    load.start()

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_drain_timeout=1), inventory=fleet.inventory)

    ended = time.time()
    load.stop()
    assert rc == 0, final_message(report)  # a drain never fails a release that is live and persisted
    # The held stream stays on blue; every new request goes to green.
    new_requests_reach_green_throughout(load, report, ended)
    assert fleet.map_values() == ["backend_green"] and fleet.disk_values() == ["backend_green"]
    drain = drains(report)["node1"]
    assert (drain["backend"], drain["sessions_left"], drain["shut_down"]) == ("backend_blue", 1, 0), drain
    # Up to the fleet's drain instant (the verdict plus 1 s), never beyond; how much of that second
    # is left when FINISH reaches the node depends on the machine's load.
    assert drain["waited"] <= 1.5, drain
    assert artifacts(report)["release_drain"] == \
        "the previous version still holds sessions: node1: backend_blue holds 1 session"
    assert not stream.ended.is_set()
    stream.close()


def test_no_drain_by_default(fleet_factory, run_playbook):
    fleet = fleet_factory(nodes=1)
    stream = hold_a_stream_on_blue(fleet.nodes[0])

    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    assert drains(report) == {"node1": None} and artifacts(report)["release_drain"] is None
    assert not stream.ended.is_set()
    stream.close()
