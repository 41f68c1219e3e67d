# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for draining the previous backend (module_utils/drain.py).

`show stat` and `shutdown sessions server` replies are real captures with sessions held on the
servers (tests/unit/fixtures/haproxy-<version>/drain/, see the README there); drain() runs on a
fake clock against a fake HAProxy that answers with them.
"""

from __future__ import annotations

import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import drain  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.drain import DrainOptionError  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (  # noqa: E402
    BackendNotFoundError,
    TransientWaitError,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (  # noqa: E402
    CommandError,
    ConnectionRefusedAPIError,
    RuntimeAPIClient,
)

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures')
VERSIONS = ['2.6', '3.0']


def fixture(version, name):
    with open(os.path.join(FIXTURES, 'haproxy-' + version, 'drain', name)) as handle:
        return handle.read()


class FakeHAProxy(RuntimeAPIClient):
    """The real client (command formatting, escaping, reply checks) over captured replies.

    `looks` are the captures `show stat` answers in turn (the last repeats; an exception is
    raised instead), one list for any backend or a dict of lists by backend; a `shutdown sessions
    server` answers `shutdown_reply` and, when that is the empty line, makes `show stat` of that
    backend answer `after_shutdown` (a capture name, or a dict of them by backend) from then on.
    """

    def __init__(self, version, looks, after_shutdown=None, shutdown_reply='shutdown_sessions_ok.txt'):
        super(FakeHAProxy, self).__init__('/nonexistent/admin.sock')
        self.version = version
        self.looks = dict((key, list(value)) for key, value in looks.items()) if isinstance(looks, dict) \
            else {None: list(looks)}
        self.after_shutdown = after_shutdown if isinstance(after_shutdown, dict) else {None: after_shutdown}
        self.shutdown_reply = shutdown_reply
        self.sent = []

    def _key(self, table, backend):
        return backend if backend in table else None

    def raw(self, line):
        self.sent.append(line)
        if line == 'show backend':
            return fixture(self.version, 'show_backend.txt')
        if line.startswith('show stat '):
            looks = self.looks[self._key(self.looks, line.split()[2])]
            item = looks.pop(0) if len(looks) > 1 else looks[0]
            if isinstance(item, Exception):
                raise item
            return fixture(self.version, item)
        if line.startswith('shutdown sessions server '):
            reply = fixture(self.version, self.shutdown_reply)
            backend = line.split()[3].split('/')[0]
            if reply == '\n':
                self.looks[self._key(self.looks, backend)] = [self.after_shutdown[self._key(self.after_shutdown, backend)]]
            return reply
        raise AssertionError('unexpected command %r' % line)

    @property
    def shutdowns(self):
        return [line for line in self.sent if line.startswith('shutdown')]


class Clock(object):
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def run(client, timeout=2.0, interval=0.5, shutdown=False, check_mode=False, backend='backend_blue'):
    clock = Clock()
    result = drain.drain(client, backend, timeout, interval, shutdown=shutdown, check_mode=check_mode,
                         clock=clock, sleep=clock.sleep)
    return result, clock


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('name, backend, expected', [
    ('backend_blue_idle.csv', 'backend_blue', {'blue1': 0, 'blue2': 0}),
    ('backend_blue_two_held.csv', 'backend_blue', {'blue1': 1, 'blue2': 1}),
    ('backend_blue_one_held.csv', 'backend_blue', {'blue1': 0, 'blue2': 1}),
    ('backend_blue_after_shutdown.csv', 'backend_blue', {'blue1': 0, 'blue2': 0}),
    ('backend_tcp_held.csv', 'backend_tcp', {'tcp1': 1}),
    ('backend_tcp_after_shutdown.csv', 'backend_tcp', {'tcp1': 0}),
])
def test_sessions_per_server_from_captured_show_stat(version, name, backend, expected):
    assert drain.sessions_from_stat_reply(fixture(version, name), backend) == expected


@pytest.mark.parametrize('version', VERSIONS)
def test_sessions_left_after_the_timeout_are_reported_and_nothing_is_closed(version):
    client = FakeHAProxy(version, ['backend_blue_two_held.csv'])
    result, clock = run(client, timeout=2.0, interval=0.5)
    assert result == dict(backend='backend_blue', servers={'blue1': 1, 'blue2': 1}, sessions_left=2, shut_down=0,
                          would_shut_down=0, shutdown_servers=[], waited=2.0, drained=False, attempts=5,
                          transient_errors=0)
    assert clock.sleeps == [0.5, 0.5, 0.5, 0.5]
    assert client.shutdowns == []
    assert drain.describe(result) == 'backend_blue: 2 sessions left after 2s (blue1 1, blue2 1)'


@pytest.mark.parametrize('version', VERSIONS)
def test_sessions_that_end_by_themselves_end_the_wait_early(version):
    client = FakeHAProxy(version, ['backend_blue_two_held.csv', 'backend_blue_one_held.csv',
                                   'backend_blue_after_shutdown.csv'])
    result, clock = run(client, timeout=30.0, interval=0.5, shutdown=True)
    assert (result['sessions_left'], result['shut_down'], result['waited'], result['attempts']) == (0, 0, 1.0, 3)
    assert result['drained'] and result['shutdown_servers'] == []
    assert client.shutdowns == []
    assert drain.describe(result) == 'backend_blue holds no session (waited 1s)'


@pytest.mark.parametrize('version', VERSIONS)
def test_shutdown_closes_the_sessions_left_on_each_server_holding_some(version):
    client = FakeHAProxy(version, ['backend_blue_two_held.csv'], after_shutdown='backend_blue_after_shutdown.csv')
    result, clock = run(client, timeout=1.0, interval=0.5, shutdown=True)
    assert client.shutdowns == ['shutdown sessions server backend_blue/blue1',
                                'shutdown sessions server backend_blue/blue2']
    assert (result['shut_down'], result['sessions_left'], result['drained']) == (2, 0, True)
    assert result['servers'] == {'blue1': 0, 'blue2': 0}
    assert result['waited'] == 1.0  # the wait only: the shutdown is not in it
    assert drain.describe(result) == ('backend_blue: closed 2 sessions (blue1, blue2) after 1s; '
                                      'it holds no session now')


@pytest.mark.parametrize('version', VERSIONS)
def test_shutdown_skips_servers_without_sessions(version):
    client = FakeHAProxy(version, ['backend_blue_one_held.csv'], after_shutdown='backend_blue_after_shutdown.csv')
    result, clock = run(client, timeout=0, shutdown=True)
    assert client.shutdowns == ['shutdown sessions server backend_blue/blue2']
    assert (result['shut_down'], result['sessions_left'], result['shutdown_servers']) == (1, 0, ['blue2'])


@pytest.mark.parametrize('version', VERSIONS)
def test_a_held_tcp_connection_is_shut_down_the_same(version):
    client = FakeHAProxy(version, ['backend_tcp_held.csv'], after_shutdown='backend_tcp_after_shutdown.csv')
    result, clock = run(client, timeout=0.5, interval=0.25, shutdown=True, backend='backend_tcp')
    assert client.shutdowns == ['shutdown sessions server backend_tcp/tcp1']
    assert (result['backend'], result['shut_down'], result['sessions_left'], result['waited']) == \
        ('backend_tcp', 1, 0, 0.5)


@pytest.mark.parametrize('version', VERSIONS)
def test_sessions_still_counted_after_the_shutdown_are_waited_for_then_reported(version):
    # HAProxy still counts them (the session was busy): read until the settle time is up.
    client = FakeHAProxy(version, ['backend_blue_two_held.csv'], after_shutdown='backend_blue_one_held.csv')
    result, clock = run(client, timeout=0, shutdown=True)
    assert (result['shut_down'], result['sessions_left'], result['drained']) == (1, 1, False)
    assert sum(clock.sleeps) == pytest.approx(drain.SHUTDOWN_SETTLE_SECONDS)
    assert drain.describe(result) == ('backend_blue: closed 1 session (blue1, blue2) after 0s; '
                                      '1 session still open (blue2 1)')


@pytest.mark.parametrize('version', VERSIONS)
def test_check_mode_reports_what_it_would_close_and_closes_nothing(version):
    client = FakeHAProxy(version, ['backend_blue_one_held.csv'], after_shutdown='backend_blue_after_shutdown.csv')
    result, clock = run(client, timeout=1.0, shutdown=True, check_mode=True)
    assert client.shutdowns == []
    assert (result['would_shut_down'], result['shut_down'], result['sessions_left']) == (1, 0, 1)
    assert result['shutdown_servers'] == ['blue2']
    assert drain.describe(result, check_mode=True) == ('backend_blue: would close 1 session (blue2 1) after 1s '
                                                       '(check mode: nothing closed)')


@pytest.mark.parametrize('version', VERSIONS)
def test_a_refused_shutdown_is_an_error_naming_haproxys_reply(version):
    # The operator-level socket's answer: nothing was closed.
    client = FakeHAProxy(version, ['backend_blue_two_held.csv'], shutdown_reply='shutdown_sessions_operator.txt')
    with pytest.raises(CommandError) as raised:
        run(client, timeout=0, shutdown=True)
    assert 'Permission denied' in str(raised.value)
    assert client.shutdowns == ['shutdown sessions server backend_blue/blue1']


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('reply', ['shutdown_sessions_no_such_server.txt', 'shutdown_sessions_no_such_backend.txt',
                                   'shutdown_sessions_no_server.txt'])
def test_every_captured_error_reply_of_shutdown_is_an_error(version, reply):
    client = FakeHAProxy(version, ['backend_blue_one_held.csv'], shutdown_reply=reply)
    with pytest.raises(CommandError):
        drain.shutdown_sessions(client, 'backend_blue', 'blue2')


@pytest.mark.parametrize('version', VERSIONS)
def test_an_unknown_backend_lists_the_backends_and_sends_nothing_else(version):
    client = FakeHAProxy(version, ['backend_blue_two_held.csv'])
    with pytest.raises(BackendNotFoundError) as raised:
        run(client, backend='backend_nope', shutdown=True)
    assert str(raised.value) == "backend 'backend_nope' does not exist in HAProxy; backends: backend_blue, backend_tcp"
    assert client.sent == ['show backend']


@pytest.mark.parametrize('backend, timeout, interval, message', [
    ('', 1, 1, 'backend must name the backend to drain'),
    ('backend_blue/blue1', 1, 1, 'backend must be a backend name without a server'),
    ('backend_blue', -1, 1, 'the drain timeout must be 0'),
    ('backend_blue', 1, 0, 'the drain poll interval must be a positive number'),
])
def test_bad_options_are_refused_before_anything_is_sent(backend, timeout, interval, message):
    client = FakeHAProxy('2.6', ['backend_blue_two_held.csv'])
    with pytest.raises(DrainOptionError) as raised:
        run(client, backend=backend, timeout=timeout, interval=interval, shutdown=True)
    assert str(raised.value).startswith(message)
    assert client.sent == []


def test_a_reload_while_waiting_is_retried():
    refused = ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x')
    client = FakeHAProxy('2.6', [refused, 'backend_blue_one_held.csv', 'backend_blue_after_shutdown.csv'])
    result, clock = run(client, timeout=5.0, interval=0.5)
    assert (result['sessions_left'], result['attempts'], result['transient_errors']) == (0, 3, 1)


def test_transient_errors_until_the_timeout_name_the_last():
    client = FakeHAProxy('2.6', [ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x')])
    with pytest.raises(TransientWaitError) as raised:
        run(client, timeout=1.0, interval=0.5)
    assert str(raised.value).endswith('the last error: connection refused by HAProxy Runtime API socket x')


def test_timeout_zero_looks_once():
    client = FakeHAProxy('2.6', ['backend_blue_two_held.csv'])
    result, clock = run(client, timeout=0)
    assert (result['attempts'], result['waited'], clock.sleeps) == (1, 0.0, [])


def run_backends(client, backends, timeout=2.0, interval=0.5, shutdown=False, check_mode=False):
    clock = Clock()
    reports = drain.drain_backends(client, backends, timeout, interval, shutdown=shutdown, check_mode=check_mode,
                                   clock=clock, sleep=clock.sleep)
    return reports, clock


@pytest.mark.parametrize('version', VERSIONS)
def test_several_backends_share_one_wait_and_each_gets_its_report(version):
    # A multi-service release: blue's HTTP streams end by themselves, the TCP connection does not.
    client = FakeHAProxy(version, {
        'backend_blue': ['backend_blue_two_held.csv', 'backend_blue_one_held.csv', 'backend_blue_idle.csv'],
        'backend_tcp': ['backend_tcp_held.csv'],
    }, after_shutdown={'backend_tcp': 'backend_tcp_after_shutdown.csv'})
    reports, clock = run_backends(client, ['backend_blue', 'backend_tcp'], timeout=2.0, interval=0.5, shutdown=True)
    blue, tcp = reports
    assert client.shutdowns == ['shutdown sessions server backend_tcp/tcp1']
    assert (blue['backend'], blue['shut_down'], blue['sessions_left'], blue['drained']) == ('backend_blue', 0, 0, True)
    assert (tcp['backend'], tcp['shut_down'], tcp['sessions_left'], tcp['drained']) == ('backend_tcp', 1, 0, True)
    assert blue['waited'] == tcp['waited'] == 2.0  # one wait for both: the TCP connection kept it going
    assert blue['attempts'] == tcp['attempts'] == 6  # 5 looks in the wait, 1 after the shutdown


@pytest.mark.parametrize('version', VERSIONS)
def test_several_backends_end_the_wait_when_none_holds_a_session(version):
    client = FakeHAProxy(version, {
        'backend_blue': ['backend_blue_one_held.csv', 'backend_blue_idle.csv'],
        'backend_tcp': ['backend_tcp_held.csv', 'backend_tcp_after_shutdown.csv'],
    })
    reports, clock = run_backends(client, ['backend_blue', 'backend_tcp', 'backend_blue'], timeout=30.0, shutdown=True)
    assert [report['backend'] for report in reports] == ['backend_blue', 'backend_tcp']
    assert [report['drained'] for report in reports] == [True, True]
    assert reports[0]['waited'] == 0.5 and client.shutdowns == []


@pytest.mark.parametrize('backends', [[], 'backend_blue', None])
def test_backends_must_be_a_list_of_names(backends):
    client = FakeHAProxy('2.6', ['backend_blue_idle.csv'])
    with pytest.raises(DrainOptionError):
        run_backends(client, backends)
    assert client.sent == []
