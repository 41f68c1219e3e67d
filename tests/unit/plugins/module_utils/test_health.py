# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the health gate behind haproxy_backend_health.

The `show stat` replies are real, captured from HAProxy 2.6 and 3.0 by
tests/unit/fixtures/capture.py: tests/unit/fixtures/haproxy-<version>/health/ (green1 in each
state) and the shared captures next to them (see tests/unit/fixtures/README.md).
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
from fractions import Fraction

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import health  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (  # noqa: E402
    BackendNotFoundError,
    HealthOptionError,
    MinHealthy,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (  # noqa: E402
    CommandError,
    ConnectionRefusedAPIError,
    RuntimeAPIClient,
    RuntimeAPIError,
    SocketNotFoundError,
    SocketPermissionError,
)

# tests/unit/fixtures/haproxy-<version>/: the shared captures (backend_blue holds a server in
# every state) and, in health/, the health captures (green1 of backend_green in each state).
SHARED = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures')
EXPECTED_VERSIONS = ['haproxy-2.6', 'haproxy-3.0']
VERSIONS = sorted(name for name in os.listdir(SHARED)
                  if name.startswith('haproxy-') and os.path.isdir(os.path.join(SHARED, name, 'health')))
SHARED_VERSIONS = sorted(name for name in EXPECTED_VERSIONS
                         if os.path.exists(os.path.join(SHARED, name, 'show_stat_servers.txt')))


def shared(version, name):
    with open(os.path.join(SHARED, version, name)) as handle:
        return handle.read()


def fixture(version, name):
    with open(os.path.join(SHARED, version, 'health', name)) as handle:
        return handle.read()


def servers(version, name, backend='backend_green'):
    return health.servers_from_stat_reply(fixture(version, name), backend)


def test_fixtures_present():
    assert VERSIONS == EXPECTED_VERSIONS, 'health captures missing under %s/haproxy-*/health' % SHARED


# ---------------------------------------------------------------- min_healthy

@pytest.mark.parametrize('value, expected', [
    (None, MinHealthy()),
    (1, MinHealthy(count=1)),
    (2, MinHealthy(count=2)),
    ('2', MinHealthy(count=2)),
    (' 3 ', MinHealthy(count=3)),
    (2.0, MinHealthy(count=2)),
    ('50%', MinHealthy(percent=Fraction(50))),
    ('50 %', MinHealthy(percent=Fraction(50))),
    ('100%', MinHealthy(percent=Fraction(100))),
    ('33.3%', MinHealthy(percent=Fraction('33.3'))),
    ('0.5%', MinHealthy(percent=Fraction(1, 2))),
])
def test_parse_min_healthy_accepts(value, expected):
    assert health.parse_min_healthy(value) == expected


@pytest.mark.parametrize('value, words', [
    (0, 'at least 1'),
    ('0', 'at least 1'),
    (-1, 'at least 1'),
    ('-1', 'not valid'),
    ('0%', 'out of range'),
    ('0.0%', 'out of range'),
    ('101%', 'out of range'),
    ('-5%', 'not valid'),
    ('abc', 'not valid'),
    ('', 'not valid'),
    ('2.5', 'not valid'),
    (2.5, 'whole number'),
    ('50%%', 'not valid'),
    ('%50', 'not valid'),
    ('2 servers', 'not valid'),
    (True, 'not True'),
    (False, 'not False'),
    ([2], 'not valid'),
])
def test_parse_min_healthy_refuses(value, words):
    with pytest.raises(HealthOptionError) as caught:
        health.parse_min_healthy(value)
    message = str(caught.value)
    assert message.startswith('min_healthy')
    assert words in message


@pytest.mark.parametrize('value, total, required', [
    (None, 1, 1),
    (None, 4, 4),
    (None, 0, 1),          # an empty backend still needs one healthy server: never healthy
    (1, 2, 1),
    (2, 2, 2),
    (3, 0, 3),             # nothing to compare with: reported as "no servers", not as an option error
    ('50%', 2, 1),
    ('50%', 3, 2),         # rounded up
    ('50%', 4, 2),
    ('34%', 3, 2),
    ('33.3%', 3, 1),       # exact arithmetic: 0.999 -> 1, not 2
    ('100%', 4, 4),
    ('1%', 2, 1),
    ('0.5%', 1, 1),
    ('50%', 0, 1),
])
def test_min_healthy_resolves(value, total, required):
    assert health.parse_min_healthy(value).resolve(total) == required


def test_count_larger_than_backend_is_an_error_that_says_so():
    with pytest.raises(HealthOptionError) as caught:
        health.parse_min_healthy(3).resolve(2, 'backend_green')
    assert str(caught.value) == 'min_healthy is 3 but backend_green has only 2 servers'
    with pytest.raises(HealthOptionError) as caught:
        health.parse_min_healthy('2').resolve(1, 'backend_x')
    assert str(caught.value) == 'min_healthy is 2 but backend_x has only 1 server'


@pytest.mark.parametrize('wait_timeout, poll_interval, words', [
    (-1, 1, 'wait_timeout'),
    (None, 1, 'wait_timeout'),
    (0, 0, 'poll_interval'),
    (5, -0.5, 'poll_interval'),
])
def test_validate_wait_refuses(wait_timeout, poll_interval, words):
    with pytest.raises(HealthOptionError) as caught:
        health.validate_wait(wait_timeout, poll_interval)
    assert str(caught.value).startswith(words)


def test_validate_wait_accepts():
    health.validate_wait(0, 1)
    health.validate_wait(0.0, 0.1)
    health.validate_wait(30, 2)


# ---------------------------------------------------------------- evaluation over captured replies

# fixture file -> (green1's status, is green1 healthy)
STATES = [
    ('all_up.csv', 'UP', True),
    ('green1_down_l4con.csv', 'DOWN', False),
    ('green1_down_l7sts.csv', 'DOWN', False),
    ('green1_failing.csv', 'UP 1/2', False),
    ('green1_rising.csv', 'DOWN 1/2', False),
    ('green1_maint.csv', 'MAINT', False),
    ('green1_drain.csv', 'DRAIN', False),
    ('green1_nolb.csv', 'NOLB', False),
    ('green1_no_check.csv', 'no check', False),
]


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('name, status, green1_healthy', STATES)
def test_evaluate_every_state(version, name, status, green1_healthy):
    result = health.evaluate('backend_green', servers(version, name), health.parse_min_healthy(None))
    by_name = dict((server['name'], server) for server in result['servers'])
    assert sorted(by_name) == ['green1', 'green2']
    assert by_name['green1']['status'] == status
    assert by_name['green1']['healthy'] is green1_healthy
    assert by_name['green2']['status'] == 'UP' and by_name['green2']['healthy'] is True
    assert result['healthy'] is green1_healthy
    assert result['total'] == 2
    assert result['required'] == 2
    assert result['healthy_count'] == (2 if green1_healthy else 1)
    assert result['unhealthy_count'] == (0 if green1_healthy else 1)
    assert result['unhealthy_servers'] == ([] if green1_healthy else ['green1'])
    if green1_healthy:
        assert by_name['green1']['reason'] is None
    else:
        assert by_name['green1']['reason']


@pytest.mark.parametrize('version', VERSIONS)
def test_maint_via_tracking_is_unhealthy(version):
    result = health.evaluate('backend_tracking', servers(version, 'tracking_maint_via.csv', 'backend_tracking'),
                             MinHealthy())
    assert result['healthy'] is False
    assert result['servers'][0]['status'] == 'MAINT (via backend_green/green1)'
    assert result['unhealthy_servers'] == ['tracker1']
    assert health.failure_message(result) == (
        'backend_tracking is not healthy: 0 of 1 servers healthy, 1 required: '
        'tracker1 (MAINT (via backend_green/green1))')


@pytest.mark.parametrize('version', VERSIONS)
def test_server_report_fields(version):
    result = health.evaluate('backend_green', servers(version, 'green1_down_l7sts.csv'), MinHealthy())
    green1, green2 = result['servers']
    assert tuple(green1) == health.SERVER_FIELDS
    assert green1['name'] == 'green1'
    assert green1['check_status'] == 'L7STS'
    assert green1['check_code'] == 503
    assert green1['check_description'] == 'Layer7 wrong status'
    assert green1['reason'] == "status 'DOWN'"
    assert green2['check_status'] == 'L7OK' and green2['check_code'] == 200
    assert green2['check_description'] == 'Layer7 check passed'
    for server in (green1, green2):
        assert isinstance(server['weight'], int)
        assert server['current_sessions'] == 0
        assert server['address'].startswith('127.0.0.1:')


@pytest.mark.parametrize('version', VERSIONS)
def test_no_check_only_with_allow_no_check(version):
    rows = servers(version, 'green1_no_check.csv')
    assert health.evaluate('backend_green', rows, MinHealthy())['healthy'] is False
    allowed = health.evaluate('backend_green', rows, MinHealthy(), allow_no_check=True)
    assert allowed['healthy'] is True
    assert allowed['unhealthy_servers'] == []
    # allow_no_check does not make NOLB (which also has no check result) healthy
    nolb = health.evaluate('backend_green', servers(version, 'green1_nolb.csv'), MinHealthy(), allow_no_check=True)
    assert nolb['unhealthy_servers'] == ['green1']


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('min_healthy, healthy, required', [
    (1, True, 1),
    ('1', True, 1),
    ('50%', True, 1),
    ('51%', False, 2),
    (2, False, 2),
    (None, False, 2),
    ('100%', False, 2),
])
def test_min_healthy_with_one_server_down(version, min_healthy, healthy, required):
    result = health.evaluate('backend_green', servers(version, 'green1_down_l4con.csv'),
                             health.parse_min_healthy(min_healthy))
    assert (result['healthy'], result['required'], result['healthy_count']) == (healthy, required, 1)
    # The unhealthy server is reported even when the gate passes.
    assert result['unhealthy_servers'] == ['green1']


@pytest.mark.parametrize('version', VERSIONS)
def test_count_larger_than_backend_fails_evaluation(version):
    with pytest.raises(HealthOptionError) as caught:
        health.evaluate('backend_green', servers(version, 'all_up.csv'), health.parse_min_healthy(5))
    assert 'backend_green has only 2 servers' in str(caught.value)


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('min_healthy', [None, 1, '1%'])
def test_backend_without_servers_is_never_healthy(version, min_healthy):
    rows = servers(version, 'empty_backend.csv', 'backend_empty')
    assert rows == []
    result = health.evaluate('backend_empty', rows, health.parse_min_healthy(min_healthy), allow_no_check=True)
    assert result['healthy'] is False
    assert result['total'] == 0
    assert result['servers'] == [] and result['unhealthy_servers'] == []
    assert health.failure_message(result) == 'backend_empty is not healthy: it has no servers'


@pytest.mark.parametrize('version', VERSIONS)
def test_rows_of_other_proxies_are_ignored(version):
    assert servers(version, 'tracking_maint_via.csv', 'backend_green') == []
    assert [s['name'] for s in servers(version, 'all_up.csv', 'backend_green')] == ['green1', 'green2']


# server -> (status, healthy, healthy with allow_no_check)
EVERY_STATE = {
    'blue1': ('UP', True, True),
    'blue_refused': ('DOWN', False, False),
    'blue_503': ('DOWN', False, False),
    'blue_maint': ('MAINT', False, False),
    'blue_drain': ('DRAIN', False, False),
    'blue_nolb': ('NOLB', False, False),
    'blue_nocheck': ('no check', False, True),
    'blue_falling': ('UP 2/3', False, False),
    'blue_rising': ('DOWN 1/3', False, False),
}


def test_shared_captures_present():
    assert SHARED_VERSIONS == ['haproxy-2.6', 'haproxy-3.0']


@pytest.mark.parametrize('version', SHARED_VERSIONS)
@pytest.mark.parametrize('allow_no_check', [False, True])
def test_every_state_in_one_backend(version, allow_no_check):
    rows = health.servers_from_stat_reply(shared(version, 'show_stat_servers.txt'), 'backend_blue')
    result = health.evaluate('backend_blue', rows, MinHealthy(), allow_no_check=allow_no_check)
    seen = dict((entry['name'], (entry['status'], entry['healthy'])) for entry in result['servers'])
    expected = dict((name, (status, with_allow if allow_no_check else healthy))
                    for name, (status, healthy, with_allow) in EVERY_STATE.items())
    assert seen == expected
    healthy_count = sum(1 for _status, healthy in expected.values() if healthy)
    assert (result['healthy'], result['total'], result['healthy_count'], result['required']) == (
        False, 9, healthy_count, 9)
    assert result['unhealthy_servers'] == [name for name in EVERY_STATE if not expected[name][1]]
    message = health.failure_message(result)
    assert message.startswith('backend_blue is not healthy: %d of 9 servers healthy, 9 required: '
                              % healthy_count)
    for fragment in ('blue_refused (DOWN, L4CON)', 'blue_503 (DOWN, L7STS/503)', 'blue_maint (MAINT)',
                     'blue_drain (DRAIN, L7OK/200)', 'blue_nolb (NOLB, L7OK/200)',
                     'blue_falling (UP 2/3, L7STS/503)', 'blue_rising (DOWN 1/3, L7OK/200)'):
        assert fragment in message
    assert ('blue_nocheck (no check)' in message) is not allow_no_check
    assert 'blue1 ' not in message


@pytest.mark.parametrize('version', SHARED_VERSIONS)
@pytest.mark.parametrize('min_healthy, healthy', [(1, True), ('11%', True), ('12%', False), (2, False)])
def test_every_state_with_min_healthy(version, min_healthy, healthy):
    rows = health.servers_from_stat_reply(shared(version, 'show_stat_servers.txt'), 'backend_blue')
    result = health.evaluate('backend_blue', rows, health.parse_min_healthy(min_healthy))
    assert result['healthy'] is healthy


@pytest.mark.parametrize('version', SHARED_VERSIONS)
def test_shared_all_up(version):
    rows = health.servers_from_stat_reply(shared(version, 'show_stat_all_up.txt'), 'backend_green')
    result = health.evaluate('backend_green', rows, MinHealthy())
    assert (result['healthy'], result['healthy_count'], result['unhealthy_servers']) == (True, 2, [])
    assert [entry['address'] for entry in result['servers']] == ['127.0.0.1:19406', '127.0.0.1:19407']
    assert [entry['check_code'] for entry in result['servers']] == [200, 200]


# ---------------------------------------------------------------- failure message

@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('name, waited, message', [
    ('green1_down_l7sts.csv', 10.0,
     'backend_green is not healthy after 10s: 1 of 2 servers healthy, 2 required: green1 (DOWN, L7STS/503)'),
    ('green1_down_l4con.csv', None,
     'backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (DOWN, L4CON)'),
    ('green1_failing.csv', 2.5041,
     'backend_green is not healthy after 2.5s: 1 of 2 servers healthy, 2 required: green1 (UP 1/2, L7STS/503)'),
    ('green1_rising.csv', None,
     'backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (DOWN 1/2, L7OK/200)'),
    ('green1_maint.csv', None,
     'backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (MAINT)'),
    ('green1_drain.csv', None,
     'backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (DRAIN, L7OK/200)'),
    ('green1_nolb.csv', None,
     'backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (NOLB)'),
    ('green1_no_check.csv', None,
     'backend_green is not healthy: 1 of 2 servers healthy, 2 required: green1 (no check)'),
])
def test_failure_message(version, name, waited, message):
    result = health.evaluate('backend_green', servers(version, name), MinHealthy())
    assert health.failure_message(result, waited) == message


@pytest.mark.parametrize('version', VERSIONS)
def test_failure_message_names_every_unhealthy_server(version):
    both = servers(version, 'green1_down_l4con.csv') + [
        dict(server, name='green3') for server in servers(version, 'green1_maint.csv') if server['name'] == 'green1'
    ]
    result = health.evaluate('backend_green', both, MinHealthy())
    assert health.failure_message(result) == (
        'backend_green is not healthy: 1 of 3 servers healthy, 3 required: green1 (DOWN, L4CON), green3 (MAINT)')


# ---------------------------------------------------------------- waiting

class FakeClock(object):
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds > 0
        self.sleeps.append(seconds)
        self.now += seconds


def looks(version, *names):
    """A look() that returns the captured states in turn, then the last one forever."""
    replies = [servers(version, name) for name in names]
    calls = []

    def look():
        calls.append(1)
        return replies[min(len(calls), len(replies)) - 1]
    look.calls = calls
    return look


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('healthy_first', [True, False])
def test_wait_timeout_zero_looks_exactly_once(version, healthy_first):
    clock = FakeClock()
    look = looks(version, 'all_up.csv' if healthy_first else 'green1_down_l4con.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=0,
                                    clock=clock.clock, sleep=clock.sleep)
    assert len(look.calls) == 1 and result['attempts'] == 1
    assert result['healthy'] is healthy_first
    assert result['waited'] == 0
    assert clock.sleeps == []


@pytest.mark.parametrize('version', VERSIONS)
def test_healthy_at_once_does_not_wait(version):
    clock = FakeClock()
    look = looks(version, 'all_up.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=30,
                                    clock=clock.clock, sleep=clock.sleep)
    assert (result['healthy'], result['attempts'], result['waited']) == (True, 1, 0)
    assert clock.sleeps == []


@pytest.mark.parametrize('version', VERSIONS)
def test_waits_until_healthy(version):
    clock = FakeClock()
    look = looks(version, 'green1_down_l4con.csv', 'green1_rising.csv', 'all_up.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=10, poll_interval=2,
                                    clock=clock.clock, sleep=clock.sleep)
    assert result['healthy'] is True
    assert result['attempts'] == 3 == len(look.calls)
    assert result['waited'] == 4
    assert clock.sleeps == [2, 2]


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('wait_timeout, poll_interval, attempts, sleeps', [
    (10, 1, 11, [1] * 10),           # looks at 0, 1, ... 10: the last one at the deadline
    (2.5, 1, 4, [1, 1, 0.5]),        # a last look when the time is up, not later
    (1, 5, 2, [1]),
    (3, 3, 2, [3]),
])
def test_wait_expires_with_the_right_number_of_looks(version, wait_timeout, poll_interval, attempts, sleeps):
    clock = FakeClock()
    look = looks(version, 'green1_maint.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=wait_timeout,
                                    poll_interval=poll_interval, clock=clock.clock, sleep=clock.sleep)
    assert result['healthy'] is False
    assert result['attempts'] == attempts == len(look.calls)
    assert clock.sleeps == pytest.approx(sleeps)
    assert result['waited'] == pytest.approx(wait_timeout)
    assert result['unhealthy_servers'] == ['green1']


@pytest.mark.parametrize('version', VERSIONS)
def test_wait_reports_the_last_look(version):
    clock = FakeClock()
    look = looks(version, 'green1_down_l4con.csv', 'green1_rising.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=1, poll_interval=1,
                                    clock=clock.clock, sleep=clock.sleep)
    assert result['servers'][0]['status'] == 'DOWN 1/2'


# ---------------------------------------------------------------- transient socket errors while waiting

def failing_looks(version, *items):
    """A look() returning captured states (file names) or raising errors (exception instances), in turn."""
    calls = []

    def look():
        calls.append(1)
        item = items[min(len(calls), len(items)) - 1]
        if isinstance(item, Exception):
            raise item
        return servers(version, item)
    look.calls = calls
    return look


def reset_error():
    exc = RuntimeAPIError('error talking to /run/haproxy/admin.sock: [Errno 104] Connection reset by peer')
    exc.__context__ = ConnectionResetError(104, 'Connection reset by peer')
    return exc


@pytest.mark.parametrize('version', VERSIONS)
def test_transient_errors_are_retried_until_healthy(version):
    clock = FakeClock()
    missing = SocketNotFoundError('HAProxy Runtime API socket /run/haproxy/admin.sock does not exist')
    refused = ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x')
    look = failing_looks(version, 'green1_down_l4con.csv', missing, refused, reset_error(),
                         health.IncompleteReplyError('empty'), 'all_up.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=10, poll_interval=1,
                                    clock=clock.clock, sleep=clock.sleep)
    assert (result['healthy'], result['attempts'], result['transient_errors']) == (True, 6, 4)
    assert result['waited'] == 5


@pytest.mark.parametrize('version', VERSIONS)
def test_transient_errors_until_the_deadline_fail_naming_the_last(version):
    clock = FakeClock()
    look = failing_looks(version, 'green1_maint.csv', ConnectionRefusedAPIError('first'),
                         ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x'))
    with pytest.raises(health.TransientWaitError) as raised:
        health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=3, poll_interval=1,
                               clock=clock.clock, sleep=clock.sleep)
    assert len(look.calls) == 4
    assert str(raised.value) == (
        'could not read the servers of backend_green: the Runtime API failed 3 of 4 looks in 3s and the last look '
        'failed too (is HAProxy reloading or down? raise wait_timeout to wait longer); the last error: '
        'connection refused by HAProxy Runtime API socket x')


@pytest.mark.parametrize('version', VERSIONS)
def test_a_transient_error_then_an_unhealthy_last_look_reports_that_look(version):
    clock = FakeClock()
    look = failing_looks(version, ConnectionRefusedAPIError('x'), 'green1_maint.csv')
    result = health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=2, poll_interval=1,
                                    clock=clock.clock, sleep=clock.sleep)
    assert (result['healthy'], result['attempts'], result['transient_errors']) == (False, 3, 1)
    assert result['unhealthy_servers'] == ['green1']


@pytest.mark.parametrize('error', [
    SocketPermissionError('permission denied'),
    CommandError('show stat backend_green 4 -1', 'Unknown command\n'),
    RuntimeAPIError('cannot connect: [Errno 22] Invalid argument'),
])
def test_permanent_errors_fail_at_once(error):
    clock = FakeClock()
    look = failing_looks('2.6', error, 'all_up.csv')
    with pytest.raises(type(error)):
        health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=30, poll_interval=1,
                               clock=clock.clock, sleep=clock.sleep)
    assert len(look.calls) == 1


def test_wait_timeout_zero_and_a_transient_error_fails_at_once():
    clock = FakeClock()
    look = failing_looks('2.6', ConnectionRefusedAPIError('refused'))
    with pytest.raises(ConnectionRefusedAPIError) as raised:
        health.wait_for_health(look, 'backend_green', MinHealthy(), wait_timeout=0, clock=clock.clock,
                               sleep=clock.sleep)
    assert str(raised.value) == 'refused'  # one look, no waiting: its own error, not a summary of one


def test_empty_show_backend_is_transient_not_an_unknown_backend():
    class Client(object):
        def run(self, verb, *arguments):
            return ''
    with pytest.raises(health.IncompleteReplyError):
        health.query_backend_servers(Client(), 'backend_green')
    assert health.is_transient(health.IncompleteReplyError('x'))


# ---------------------------------------------------------------- querying (through a socket serving captured replies)

class CapturedSocket(object):
    """A unix socket answering each command line with a captured reply, recording what it was sent."""

    def __init__(self, replies):
        self.replies = replies
        self.received = []
        self.directory = tempfile.mkdtemp(prefix='health-test-')
        self.path = os.path.join(self.directory, 'admin.sock')
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.path)
        self.server.listen(8)
        self.thread = threading.Thread(target=self._serve)
        self.thread.daemon = True
        self.thread.start()

    def _serve(self):
        while True:
            try:
                connection = self.server.accept()[0]
            except OSError:
                return
            with connection:
                data = b''
                while not data.endswith(b'\n'):
                    chunk = connection.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                line = data.decode().rstrip('\n')
                self.received.append(line)
                connection.sendall(self.replies.get(line, 'Unknown command.\n\n').encode())

    def close(self):
        self.server.close()
        os.unlink(self.path)
        os.rmdir(self.directory)


@pytest.fixture
def captured_socket():
    sockets = []

    def make(replies):
        sockets.append(CapturedSocket(replies))
        return sockets[-1]
    yield make
    for item in sockets:
        item.close()


@pytest.mark.parametrize('version', VERSIONS)
def test_query_backend_servers(version, captured_socket):
    fake = captured_socket({
        'show backend': fixture(version, 'show_backend.txt'),
        'show stat backend_green 4 -1': fixture(version, 'green1_rising.csv'),
    })
    found = health.query_backend_servers(RuntimeAPIClient(fake.path, 2), 'backend_green')
    assert [(server['name'], server['status']) for server in found] == [('green1', 'DOWN 1/2'), ('green2', 'UP')]
    assert fake.received == ['show backend', 'show stat backend_green 4 -1']


@pytest.mark.parametrize('version', VERSIONS)
def test_query_unknown_backend_lists_the_backends(version, captured_socket):
    fake = captured_socket({'show backend': fixture(version, 'show_backend.txt')})
    with pytest.raises(BackendNotFoundError) as caught:
        health.query_backend_servers(RuntimeAPIClient(fake.path, 2), 'backend_purple')
    assert isinstance(caught.value, RuntimeAPIError)
    assert str(caught.value) == ("backend 'backend_purple' does not exist in HAProxy; backends: "
                                 "backend_blue, backend_green, backend_tracking, backend_empty")
    assert fake.received == ['show backend']  # no show stat for a name HAProxy does not know


@pytest.mark.parametrize('version', VERSIONS)
def test_query_backend_removed_between_commands(version, captured_socket):
    fake = captured_socket({
        'show backend': fixture(version, 'show_backend.txt'),
        'show stat backend_green 4 -1': fixture(version, 'no_such_proxy.txt'),
    })
    with pytest.raises(BackendNotFoundError) as caught:
        health.query_backend_servers(RuntimeAPIClient(fake.path, 2), 'backend_green')
    assert "backend 'backend_green' does not exist" in str(caught.value)


@pytest.mark.parametrize('version', SHARED_VERSIONS)
def test_query_with_shared_captures(version, captured_socket):
    fake = captured_socket({
        'show backend': shared(version, 'show_backend.txt'),
        'show stat backend_blue 4 -1': shared(version, 'show_stat_servers.txt'),
        'show stat backend_green 4 -1': shared(version, 'show_stat_no_such_proxy.txt'),
    })
    client = RuntimeAPIClient(fake.path, 2)
    assert [entry['name'] for entry in health.query_backend_servers(client, 'backend_blue')] == list(EVERY_STATE)
    with pytest.raises(BackendNotFoundError) as caught:
        health.query_backend_servers(client, 'backend_green')
    assert str(caught.value) == "backend 'backend_green' does not exist in HAProxy; backends: backend_blue, backend_green"


def test_query_escapes_the_backend_name(captured_socket):
    fake = captured_socket({'show backend': '# name\nbe;x y\n\n', 'show stat be\\;x\\ y 4 -1': ''})
    assert health.query_backend_servers(RuntimeAPIClient(fake.path, 2), 'be;x y') == []
    assert fake.received == ['show backend', 'show stat be\\;x\\ y 4 -1']


# ---------------------------------------------------------------- real socket failures are classified

def test_real_socket_failures_during_a_reload_are_transient(tmp_path):
    """What the client raises for a missing socket, a stale one (nobody listening) and a reset is transient."""
    import struct
    path = str(tmp_path / 'admin.sock')
    client = RuntimeAPIClient(path, 1)
    with pytest.raises(RuntimeAPIError) as missing:
        client.run('show backend')
    assert health.is_transient(missing.value)

    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)  # bound, never listening: what an old worker leaves behind
    try:
        with pytest.raises(RuntimeAPIError) as refused:
            client.run('show backend')
        assert health.is_transient(refused.value), refused.value
    finally:
        stale.close()
        os.unlink(path)

    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def reset_one():
        connection, _peer = server.accept()
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        connection.close()
    thread = threading.Thread(target=reset_one)
    thread.start()
    try:
        try:
            reply = client.run('show backend')
        except RuntimeAPIError as exc:
            assert health.is_transient(exc), exc
        else:
            # A unix socket may report the reset as a plain end of file: an empty reply.
            assert reply == ''
            with pytest.raises(health.IncompleteReplyError):
                health.list_backends(type('C', (), {'run': lambda self, verb: reply})())
    finally:
        thread.join()
        server.close()


# ---------------------------------------------------------------- UP is not enough: the last check must pass

@pytest.mark.parametrize('version', EXPECTED_VERSIONS)
def test_up_with_a_failing_last_check_is_refused(version):
    """A real capture (HAProxy 2.6 and 3.0): green1 `UP` at full health while its last check failed
    (L7STS/503), right after `set server ... health up` on a failing server (capture.py,
    capture_up_with_failed_check). A status of exactly UP is not enough: the gate must read the check too."""
    result = health.evaluate('backend_green', servers(version, 'green1_up_failed_check.csv'), MinHealthy())
    by_name = dict((server['name'], server) for server in result['servers'])
    assert by_name['green1']['status'] == 'UP' and by_name['green1']['check_status'] == 'L7STS'
    assert by_name['green1']['healthy'] is False
    assert by_name['green1']['reason'] == 'last check L7STS'
    assert result['healthy'] is False and result['unhealthy_servers'] == ['green1']
    assert by_name['green2']['healthy'] is True
