# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The live-traffic gate of the watch window judges real users' requests only (issue 13, finding 7).

The engine's own smoke requests go through the node's listener into the target backend, so
they are in HAProxy's counters with the users' requests; the gate must take them out exactly,
and "too few real requests to judge" is its own outcome (release_insufficient_traffic).
Each test runs the real cutover playbook against a real HAProxy 2.6 on loopback.
"""

from __future__ import annotations

import csv
import io
import os
import threading

from lab import wait_for
from release_report import artifacts, final_message, lock_files, step_items
# host_keyed_fleet is a fixture: pytest finds it by name, nothing in this file calls it.
from test_release_services import host_keyed_fleet, services  # noqa: F401 pylint: disable=unused-import

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
GREEN = {"release_target": "backend_green"}


def gates(report):
    """The watch window's verdicts (the switch step's `traffic`, not the baseline taken at the switch), by host."""
    return {host: result for host, _key, result in step_items(report, "traffic")
            if result.get("verdict") not in (None, "baseline")}


def backend_counter(node, backend, name):
    reply = node.runtime("show stat %s 2 -1" % backend)
    rows = list(csv.DictReader(io.StringIO(reply.lstrip("# "))))
    return int([row for row in rows if row["svname"] == "BACKEND"][0][name] or 0)


def test_only_the_engines_own_smoke_in_the_window_is_insufficient_traffic(fleet_factory, run_playbook):
    """No user at all: the 6 SMOKE requests and the window's smoke requests are all HAProxy
    counted. Counted as users they would be judged (more than release_min_requests 5) and pass."""
    fleet = fleet_factory(nodes=1)
    options = dict(GREEN, release_watch_seconds=3, release_watch_interval=0.5, release_min_requests=5)

    rc, report = run_playbook(CUTOVER, options, inventory=fleet.inventory)

    message = final_message(report)
    assert rc != 0, message
    assert "node1: SMOKE: backend_green: insufficient traffic to judge: 0 real requests in " in message, message
    assert "fewer than min_requests 5" in message and "release_min_requests (5)" in message, message
    assert "release_insufficient_traffic=pass" in message, message
    gate = gates(report)["node1"]
    assert (gate["requests"], gate["verdict"], gate["judged"]) == (0, "insufficient", False), gate
    # Exact: every response HAProxy counted for green was one of the engine's own requests.
    assert gate["smoke"]["requests"] >= 1 and gate["smoke"]["passed"], gate["smoke"]
    assert gate["own_requests"] == {"hrsp_2xx": 6 + gate["smoke"]["requests"]}, gate
    assert fleet.map_values() == ["backend_blue"] and fleet.disk_values() == ["backend_blue"]
    assert lock_files(fleet) == []
    assert artifacts(report)["release_outcome"] == "failed"

    # Accepted: the run succeeds and the node's summary says the traffic could not be judged.
    rc, report = run_playbook(CUTOVER, dict(options, release_insufficient_traffic="pass"), inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_green"] and fleet.disk_values() == ["backend_green"]
    summary = artifacts(report)
    assert summary["release_outcome"] == "succeeded"
    traffic = summary["release_summary"]["node1"]["traffic"]
    assert traffic["verdict"] == "insufficient" and traffic["requests"] == 0, traffic
    assert traffic["note"].startswith("backend_green: insufficient traffic to judge: 0 real requests"), traffic
    assert traffic["smoke"]["failed"] == 0 and traffic["smoke"]["passed"] >= 1, traffic


def test_the_users_error_rate_is_not_diluted_by_the_engines_smoke(fleet_factory, run_playbook):
    """40 users ask green for "/", which each green server fails once in 20 (5%); the engine adds
    100 SMOKE requests and the window's, all 200. Counted together the rate would be under 2%."""
    fleet = fleet_factory(nodes=1)
    node = fleet.nodes[0]
    for name in ("green1", "green2"):
        node.apps[name].set_failing(0.05, "/")
    statuses, problems = [], []

    def users():
        # The first request green answers is the engine's first SMOKE request: the switch and
        # its baseline are done. Only then do the users come, so every one is in the window.
        try:
            wait_for(lambda: backend_counter(node, "backend_green", "hrsp_2xx") > 0, timeout=240, interval=0.05,
                     what="the first request to green")
            while len(statuses) < 40:
                statuses.append(node.get("/", timeout=5)[0])
        except Exception as exc:  # reported by the test below
            problems.append(repr(exc))

    thread = threading.Thread(target=users, daemon=True)
    thread.start()
    # release_min_requests 40: the gate judges once every user's request was counted.
    rc, report = run_playbook(CUTOVER, dict(GREEN, release_smoke_requests=100, release_watch_seconds=60,
                                            release_watch_interval=0.2, release_max_error_rate=2,
                                            release_min_requests=40), inventory=fleet.inventory)
    thread.join(timeout=60)

    assert problems == [] and len(statuses) == 40, (problems, statuses)
    failed_users = statuses.count(500)
    # 40 requests over two servers: one of them had at least 20, so at least one failed.
    assert failed_users >= 1 and set(statuses) <= {200, 500}, statuses
    message = final_message(report)
    assert rc != 0, message
    gate = gates(report)["node1"]
    # Exact: the users' requests, no more (the engine's are subtracted), and their failures.
    assert (gate["requests"], gate["failed_requests"]) == (40, failed_users), gate
    assert gate["error_rate"] == round(100.0 * failed_users / 40, 3) and gate["verdict"] == "failed", gate
    assert gate["own_requests"]["hrsp_2xx"] >= 100 and gate["smoke"]["passed"], gate
    assert "node1: SMOKE: backend_green: %s%% of 40 real requests failed" % (
        ("%.2f" % gate["error_rate"]).rstrip("0").rstrip(".")) in message, message
    assert "the limit is 2%" in message, message
    assert fleet.map_values() == ["backend_blue"] and fleet.disk_values() == ["backend_blue"]
    assert artifacts(report)["release_outcome"] == "failed"


def test_each_service_is_judged_on_its_own_backend_without_its_smoke(host_keyed_fleet, run_playbook):
    """Two services, each with its own target backend: each gate subtracts exactly its own
    service's smoke requests (the 4 SMOKE requests and the window's), and the summary is keyed by service."""
    nodes, inventory = host_keyed_fleet(count=1)

    rc, report = run_playbook(CUTOVER, dict(release_services=services(), release_watch_seconds=2,
                                            release_watch_interval=0.5, release_min_requests=1,
                                            release_insufficient_traffic="pass"), inventory=inventory)

    assert rc == 0, final_message(report)
    watched = {key: result for _host, key, result in step_items(report, "traffic")
               if result.get("verdict") not in (None, "baseline")}
    assert sorted(watched) == ["api.test", "shop.test"], watched
    for key, backend in (("shop.test", "shop_green"), ("api.test", "api_green")):
        gate = watched[key]
        assert gate["backend"] == backend and (gate["requests"], gate["verdict"]) == (0, "insufficient"), gate
        assert gate["own_requests"] == {"hrsp_2xx": 4 + gate["smoke"]["requests"]}, gate
    traffic = artifacts(report)["release_summary"]["node1"]["traffic"]
    assert {key: value["verdict"] for key, value in traffic.items()} == {"shop.test": "insufficient",
                                                                         "api.test": "insufficient"}, traffic
