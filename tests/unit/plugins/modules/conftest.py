"""Every module test here runs main() in-process (module_runner.py)."""

from __future__ import annotations

import pytest

from ansible.module_utils import basic

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules import module_runner


@pytest.fixture(autouse=True)
def module_exits(monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, 'exit_json', module_runner.exit_json)
    monkeypatch.setattr(basic.AnsibleModule, 'fail_json', module_runner.fail_json)
    monkeypatch.setattr(basic.AnsibleModule, 'warn', module_runner.warn)
