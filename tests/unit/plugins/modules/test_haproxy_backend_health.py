# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the haproxy_backend_health module, on captured HAProxy replies."""

from __future__ import annotations

import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.module_utils import runtime_api  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (  # noqa: E402
    ConnectionRefusedAPIError,
    SocketPermissionError,
)
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_backend_health  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

HEALTH = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures', 'haproxy-2.6', 'health')


def fixture(name):
    with open(os.path.join(HEALTH, name)) as handle:
        return handle.read()


@pytest.fixture
def haproxy(monkeypatch):
    """Answers in turn: a reply string, or an exception to raise (the last item repeats)."""
    script = []
    sent = []

    def raw(self, line):
        sent.append(line)
        item = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(item, Exception):
            raise item
        return item

    monkeypatch.setattr(runtime_api.RuntimeAPIClient, 'raw', raw)
    return script, sent


def run(args):
    return run_main(haproxy_backend_health.main, dict(dict(socket='/nonexistent/admin.sock'), **args))


def test_a_reload_while_waiting_is_retried(haproxy):
    script, sent = haproxy
    refused = ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x')
    script.extend([refused, '', fixture('show_backend.txt'), fixture('all_up.csv')])
    outcome = run(dict(backend='backend_green', wait_timeout=5, poll_interval=0.01))
    assert not outcome.failed, outcome.result
    assert (outcome.result['healthy'], outcome.result['attempts'], outcome.result['transient_errors']) == (True, 3, 2)


def test_transient_errors_until_wait_timeout_name_the_last(haproxy):
    script, sent = haproxy
    script.append(ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x'))
    outcome = run(dict(backend='backend_green', wait_timeout=0.05, poll_interval=0.01))
    assert outcome.failed
    assert outcome.result['msg'].startswith('could not read the servers of backend_green: the Runtime API failed ')
    assert outcome.result['msg'].endswith('the last error: connection refused by HAProxy Runtime API socket x')
    assert len(sent) >= 2


def test_permission_denied_fails_at_once(haproxy):
    script, sent = haproxy
    script.append(SocketPermissionError('permission denied connecting to x'))
    outcome = run(dict(backend='backend_green', wait_timeout=30))
    assert outcome.failed and outcome.result['msg'] == 'permission denied connecting to x'
    assert len(sent) == 1
