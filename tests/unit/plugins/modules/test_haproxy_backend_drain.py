# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the haproxy_backend_drain module, on captured HAProxy replies (fixtures/*/drain/)."""

from __future__ import annotations

import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.module_utils import runtime_api  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_backend_drain  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures')
VERSIONS = ['2.6', '3.0']


def fixture(version, name):
    with open(os.path.join(FIXTURES, 'haproxy-' + version, 'drain', name)) as handle:
        return handle.read()


class Replies(object):
    """What the fake HAProxy answers: `show stat` gives `held` until a shutdown succeeds, then `after`."""

    def __init__(self):
        self.version = '2.6'
        self.held = 'backend_blue_two_held.csv'
        self.after = 'backend_blue_after_shutdown.csv'
        self.shutdown_reply = 'shutdown_sessions_ok.txt'
        self.sent = []

    @property
    def shutdowns(self):
        return [line for line in self.sent if line.startswith('shutdown')]


@pytest.fixture
def haproxy(monkeypatch):
    replies = Replies()

    def raw(self, line):
        replies.sent.append(line)
        if line == 'show backend':
            return fixture(replies.version, 'show_backend.txt')
        if line.startswith('show stat '):
            return fixture(replies.version, replies.held)
        if line.startswith('shutdown sessions server '):
            reply = fixture(replies.version, replies.shutdown_reply)
            if reply == '\n':
                replies.held = replies.after
            return reply
        raise AssertionError('unexpected command %r' % line)

    monkeypatch.setattr(runtime_api.RuntimeAPIClient, 'raw', raw)
    return replies


def run(args, check=False):
    return run_main(haproxy_backend_drain.main, dict(dict(socket='/nonexistent/admin.sock'), **args), check=check)


@pytest.mark.parametrize('version', VERSIONS)
def test_shutdown_closes_what_the_wait_left_and_reports_it(haproxy, version):
    haproxy.version = version
    outcome = run(dict(backend='backend_blue', wait_timeout=0.05, poll_interval=0.01, shutdown=True))
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert result['changed'] is True
    assert (result['shut_down'], result['sessions_left'], result['drained']) == (2, 0, True)
    assert result['servers'] == {'blue1': 0, 'blue2': 0}
    assert haproxy.shutdowns == ['shutdown sessions server backend_blue/blue1',
                                 'shutdown sessions server backend_blue/blue2']
    assert result['msg'].startswith('backend_blue: closed 2 sessions (blue1, blue2) after ')


@pytest.mark.parametrize('version', VERSIONS)
def test_without_shutdown_sessions_left_are_reported_not_failed(haproxy, version):
    haproxy.version = version
    haproxy.held = 'backend_tcp_held.csv'
    outcome = run(dict(backend='backend_tcp', wait_timeout=0.05, poll_interval=0.01))
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert (result['changed'], result['sessions_left'], result['shut_down'], result['drained']) == (False, 1, 0, False)
    assert result['waited'] >= 0.05
    assert haproxy.shutdowns == []


@pytest.mark.parametrize('version', VERSIONS)
def test_check_mode_reports_what_it_would_close_and_closes_nothing(haproxy, version):
    haproxy.version = version
    haproxy.held = 'backend_blue_one_held.csv'
    outcome = run(dict(backend='backend_blue', shutdown=True), check=True)
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert (result['changed'], result['would_shut_down'], result['shut_down'], result['sessions_left']) == (True, 1, 0, 1)
    assert result['shutdown_servers'] == ['blue2']
    assert haproxy.shutdowns == []


def test_a_drained_backend_changes_nothing(haproxy):
    haproxy.held = 'backend_blue_idle.csv'
    outcome = run(dict(backend='backend_blue', shutdown=True))
    assert not outcome.failed
    assert (outcome.result['changed'], outcome.result['drained'], outcome.result['msg']) == \
        (False, True, 'backend_blue holds no session (waited 0s)')
    assert haproxy.shutdowns == []


@pytest.mark.parametrize('version', VERSIONS)
def test_an_operator_socket_fails_naming_haproxys_refusal(haproxy, version):
    haproxy.version = version
    haproxy.shutdown_reply = 'shutdown_sessions_operator.txt'
    outcome = run(dict(backend='backend_blue', shutdown=True))
    assert outcome.failed
    assert 'Permission denied' in outcome.result['msg']
    assert outcome.result['changed'] is False


def test_an_unknown_backend_fails_listing_the_backends(haproxy):
    outcome = run(dict(backend='backend_nope', shutdown=True))
    assert outcome.failed
    assert outcome.result['msg'] == "backend 'backend_nope' does not exist in HAProxy; backends: backend_blue, backend_tcp"
    assert haproxy.sent == ['show backend']


@pytest.mark.parametrize('args, message', [
    (dict(backend=' '), 'backend must name the backend to drain'),
    (dict(backend='backend_blue', wait_timeout=-1), 'the drain timeout must be 0'),
    (dict(backend='backend_blue', poll_interval=0), 'the drain poll interval must be a positive number'),
])
def test_bad_options_fail_before_anything_is_sent(haproxy, args, message):
    outcome = run(dict(args, shutdown=True))
    assert outcome.failed and outcome.result['msg'].startswith(message)
    assert haproxy.sent == []
