# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The test listener (issue 15, "A test listener before any user"): PREPARE smoke-tests the target
through each node's test listener - HAProxy itself, routed by `active.preview` - before any switch.

The broken target here answers its servers' preflight (requests sent straight to each server)
but not through HAProxy: its backend rewrites every path (`http-request set-path`), as a wrong
rule in a real configuration would. Real HAProxy 2.6 on loopback, the real cutover playbook.
"""

from __future__ import annotations

import os

import pytest

from release_report import final_message, lock_files, nothing_switched, ran

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
GREEN = {"release_target": "backend_green"}
BROKEN_THROUGH_HAPROXY = {"backend_green": ["http-request set-path /no-such-page"]}


@pytest.fixture
def preview_fleet(fleet_factory):
    """Nodes with a test listener each (release_test_listener is a host variable of the inventory)."""

    def build(nodes=2, backend_lines=None):
        return fleet_factory(nodes=nodes, test_listener=True, backend_lines=backend_lines)

    return build


def preview_entries(node):
    return [line for line in node.runtime("show map %s" % node.map_path).splitlines() if "preview" in line]


def through_test_listener(node):
    return node.get(port=node.test_port)


def step_result(report, step, host="node1"):
    return [result for _name, name_host, result in ran(report, "release_step", step) if name_host == host][0]


def test_the_target_is_proven_through_each_test_listener_before_the_switch(preview_fleet, run_playbook):
    fleet = preview_fleet(nodes=2)

    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    for host in ("node1", "node2"):
        previewed = step_result(report, "prepare", host)["preview"]
        assert [(item["key"], item["passed"], item["passed_count"]) for item in previewed] == [("active", True, 6)]
    assert fleet.map_values() == ["backend_green"] * 2 and fleet.disk_values() == ["backend_green"] * 2
    # The entries were runtime only and are gone: the test listener refuses again.
    assert [preview_entries(node) for node in fleet.nodes] == [[], []]
    assert [through_test_listener(node)[0] for node in fleet.nodes] == [503, 503]
    assert lock_files(fleet) == []


def test_a_target_broken_only_through_haproxy_is_refused_before_any_user_reaches_it(preview_fleet, run_playbook):
    fleet = preview_fleet(nodes=2, backend_lines=BROKEN_THROUGH_HAPROXY)

    rc, report = run_playbook(CUTOVER, GREEN, inventory=fleet.inventory)

    message = final_message(report)
    assert rc != 0
    assert "PRECHECK: test listener 127.0.0.1:" in message and "no user was sent there" in message, message
    assert "404" in message, message
    # The per-server preflight passed: only HAProxy's own rule breaks it.
    assert step_result(report, "prepare")["precheck"]["failed"] is False
    assert nothing_switched(report) == []
    assert fleet.map_values() == ["backend_blue"] * 2 and fleet.disk_values() == ["backend_blue"] * 2
    assert [preview_entries(node) for node in fleet.nodes] == [[], []]
    assert lock_files(fleet) == []


def test_without_a_test_listener_the_same_target_reaches_users_until_the_smoke_rolls_it_back(
        preview_fleet, run_playbook):
    """What the test listener prevents: without it the switch happens, users meet the broken
    version until SMOKE fails and every node rolls back."""
    fleet = preview_fleet(nodes=1, backend_lines=BROKEN_THROUGH_HAPROXY)

    rc, report = run_playbook(CUTOVER, dict(GREEN, release_test_listener=""), inventory=fleet.inventory)

    assert rc != 0
    assert "rolled back" in final_message(report)
    assert nothing_switched(report) != []  # the switch step ran: users were sent there
    assert fleet.map_values() == ["backend_blue"]
