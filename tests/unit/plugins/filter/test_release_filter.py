# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release role's private filter `_release`: one way into the engine, named by step."""

from __future__ import annotations

import os
import sys

import pytest
import yaml

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))
_COLLECTIONS = os.path.join(_ROOT, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, _COLLECTIONS)

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.bluegreen.haproxy.plugins.filter import _release  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.release_engine import STEPS  # noqa: E402


def test_the_collection_has_one_filter_and_it_is_private():
    # antsibull-docs treats a plugin whose name starts with "_" as private: not listed on the docs site.
    assert list(_release.FilterModule().filters()) == ["_release"]
    assert sorted(os.listdir(os.path.join(_ROOT, 'plugins', 'filter'))) in (["_release.py"], ["__pycache__", "_release.py"])
    documentation = yaml.safe_load(_release.DOCUMENTATION)
    assert documentation["name"] == "_release" and "Private" in documentation["short_description"]
    assert list(documentation["options"]) == ["_input", "step"]


def test_a_step_runs_with_its_arguments():
    assert _release.engine_step({"active": "backend_green"}, "describe") == "backend_green"
    assert _release.engine_step({"b": "2", "a": "1"}, "describe") == STEPS["describe"]({"a": "1", "b": "2"})


@pytest.mark.parametrize("step", ["no_such_step", None, ["describe"]])
def test_an_unknown_step_names_the_known_ones(step):
    with pytest.raises(AnsibleFilterError) as raised:
        _release.engine_step({}, step)
    assert "unknown engine step" in str(raised.value) and "fleet_summary" in str(raised.value)
