"""Fixtures of the default scenario's testinfra tests (helpers: molecule/shared)."""

from __future__ import annotations

import os
import sys

import pytest

SCENARIO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SCENARIO, "..", "shared"))

from bluegreen_molecule import CONFIG, MAP, nodes, playbook  # noqa: E402


@pytest.fixture(scope="module")
def node():
    """The scenario's one HAProxy node (inventory group `haproxy_nodes`)."""
    found = list(nodes("haproxy_nodes").values())
    assert len(found) == 1, "the scenario has one HAProxy node, not %d" % len(found)
    return found[0]


@pytest.fixture(scope="module")
def converge():
    """converge(**extra_vars): the scenario's converge.yml (the role) with extra variables."""
    def run(log_name=None, **extra_vars):
        return playbook(os.path.join(SCENARIO, "converge.yml"), extra_vars, log_name=log_name)
    return run


def snapshot(node):
    """What "nothing changed" compares: processes, config and map files, the running map."""
    return {"proc": node.processes(), "config": node.host.file(CONFIG).content_string,
            "map_file": node.host.file(MAP).content_string, "runtime": node.runtime_map()}
