"""Fixtures of the systemd scenario's testinfra tests (helpers: molecule/shared)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))

from bluegreen_molecule import nodes  # noqa: E402


@pytest.fixture(scope="module")
def node():
    """The scenario's one HAProxy node (inventory group `haproxy`)."""
    found = list(nodes("haproxy").values())
    assert len(found) == 1, "the scenario has one HAProxy node, not %d" % len(found)
    return found[0]
