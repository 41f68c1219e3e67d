# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the live-traffic error gate (module_utils/traffic.py).

Counter replies are real captures (tests/unit/fixtures/haproxy-<version>/traffic/, see the
README there); watch() runs on a fake clock.
"""

from __future__ import annotations

import errno
import os
import socket
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import traffic  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (  # noqa: E402
    BackendNotFoundError,
    IncompleteReplyError,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (  # noqa: E402
    CommandError,
    ConnectionRefusedAPIError,
    RuntimeAPIError,
    SocketPermissionError,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.traffic import (  # noqa: E402
    NotHTTPBackendError,
    TrafficOptionError,
)

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures')
VERSIONS = ['2.6', '3.0']


def fixture(version, name):
    with open(os.path.join(FIXTURES, 'haproxy-' + version, 'traffic', name)) as handle:
        return handle.read()


def counters(**values):
    base = dict((name, 0) for name in traffic.BACKEND_COUNTER_FIELDS)
    base.update(values)
    return base


class Clock(object):
    def __init__(self):
        self.now = 1000.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def reader(clock, *snapshots):
    """read() returning the snapshots in turn (an exception instance is raised), stamped with the clock."""
    queue = list(snapshots)
    calls = []

    def read():
        calls.append(clock())
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return dict(item, read_at=clock() + 1e6)
    read.calls = calls
    return read


# -- the formula ----------------------------------------------------------------------------------

def test_judge_counts_5xx_and_cut_off_responses_not_eresp_or_econ():
    totals = counters(hrsp_2xx=180, hrsp_4xx=5, hrsp_5xx=12, srv_abrt=3, eresp=9, econ=4, cli_abrt=7, wretr=30)
    verdict = traffic.judge(totals, max_error_rate=1.0, min_requests=20)
    assert verdict == dict(requests=197, errors=dict(hrsp_5xx=12, srv_abrt=3, eresp=9, econ=4), failed_requests=15,
                           error_rate=7.614, judged=True, passed=False, verdict='failed')


def test_judge_caps_failed_at_requests():
    verdict = traffic.judge(counters(hrsp_5xx=10, srv_abrt=10), 1.0, 1)
    assert (verdict['requests'], verdict['failed_requests'], verdict['error_rate']) == (10, 10, 100.0)


@pytest.mark.parametrize('requests, failed, min_requests, max_rate, judged, passed', [
    (100, 1, 20, 1.0, True, True),     # exactly at the limit passes
    (100, 2, 20, 1.0, True, False),
    (19, 19, 20, 1.0, False, True),    # too few to judge: passes, not judged
    (20, 1, 20, 1.0, True, False),     # min_requests reached: judged
    (100, 0, 20, 0.0, True, True),
    (100, 1, 20, 0.0, True, False),
])
def test_judge_thresholds(requests, failed, min_requests, max_rate, judged, passed):
    verdict = traffic.judge(counters(hrsp_2xx=requests - failed, hrsp_5xx=failed), max_rate, min_requests)
    assert (verdict['requests'], verdict['judged'], verdict['passed']) == (requests, judged, passed)


def test_no_requests_rate_is_zero():
    assert traffic.judge(counters(), 1.0, 20)['error_rate'] == 0.0


@pytest.mark.parametrize('version', VERSIONS)
def test_captured_traffic_gives_the_rate(version):
    idle = traffic.counters_from_reply(fixture(version, 'backend_green_idle.csv'), 'backend_green')
    after = traffic.counters_from_reply(fixture(version, 'backend_green_traffic.csv'), 'backend_green')
    window = traffic.Window(idle)
    window.add(after)
    verdict = traffic.judge(window.totals, 1.0, 20)
    # 40 x 200, 10 x 404, 10 x 500: a 404 is the client's business, not a failure.
    assert (verdict['requests'], verdict['failed_requests'], verdict['error_rate']) == (60, 10, 16.667)


@pytest.mark.parametrize('version', VERSIONS)
def test_refused_connections_are_counted_once(version):
    refused = traffic.counters_from_reply(fixture(version, 'backend_refused.csv'), 'backend_refused')
    window = traffic.Window(counters())
    window.add(refused)
    verdict = traffic.judge(window.totals, 1.0, 1)
    # econ 5 and hrsp_5xx 5 are the same 5 requests.
    assert (verdict['requests'], verdict['failed_requests'], verdict['errors']['econ']) == (5, 5, 5)


@pytest.mark.parametrize('version', VERSIONS)
def test_tcp_backend_is_refused(version):
    with pytest.raises(NotHTTPBackendError) as raised:
        traffic.counters_from_reply(fixture(version, 'backend_tcp.csv'), 'backend_tcp')
    assert str(raised.value).startswith("backend 'backend_tcp' has no HTTP response counters (hrsp_1xx")
    assert 'mode http' in str(raised.value)


def test_window_survives_a_counter_reset():
    window = traffic.Window(counters(hrsp_2xx=1000, hrsp_5xx=10))
    window.add(counters(hrsp_2xx=1100, hrsp_5xx=12))    # +100, +2
    window.add(counters(hrsp_2xx=30, hrsp_5xx=1))       # reload: a new worker counted 30 and 1
    window.add(counters(hrsp_2xx=50, hrsp_5xx=1))       # +20
    assert (window.totals['hrsp_2xx'], window.totals['hrsp_5xx'], window.resets) == (150, 3, 1)


# -- options ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('options, message', [
    (dict(duration=-1), 'duration must be 0 (one look) or a positive number of seconds, got -1'),
    (dict(interval=0), 'interval must be a positive number of seconds, got 0'),
    (dict(max_error_rate=101), 'max_error_rate is a percentage from 0 to 100, got 101'),
    (dict(max_error_rate=-0.5), 'max_error_rate is a percentage from 0 to 100, got -0.5'),
    (dict(min_requests=0), 'min_requests must be at least 1, got 0'),
    (dict(baseline=[1]), 'baseline must be the counters dict an earlier call returned, got list'),
    (dict(baseline=dict(hrsp_2xx=1)), 'baseline lacks hrsp_1xx, hrsp_3xx, hrsp_4xx, hrsp_5xx, hrsp_other, srv_abrt, '
                                      'eresp, econ: pass the `counters` an earlier haproxy_backend_traffic call returned'),
    (dict(baseline=counters(hrsp_5xx='x' * 500)), "baseline hrsp_5xx must be a whole number, got '" + 'x' * 80 + "'"),
    (dict(baseline=counters(hrsp_5xx=-1)), 'baseline hrsp_5xx cannot be negative, got -1'),
])
def test_option_errors(options, message):
    args = dict(duration=0, interval=1, max_error_rate=1.0, min_requests=20, baseline=None)
    args.update(options)
    with pytest.raises(TrafficOptionError) as raised:
        traffic.validate_options(**args)
    assert str(raised.value) == message


def test_baseline_from_a_previous_result_round_trips():
    earlier = dict(counters(hrsp_2xx=5), read_at=1795788062.5)
    assert traffic.normalize_baseline(earlier) == earlier
    # Strings (as templating may produce) are accepted; unknown keys dropped.
    assert traffic.normalize_baseline(dict((k, str(v)) for k, v in earlier.items()) | dict(foo='bar')) == earlier


# -- watching -------------------------------------------------------------------------------------

def test_one_look_without_baseline_is_only_a_baseline():
    clock = Clock()
    read = reader(clock, counters(hrsp_2xx=500))
    result = traffic.watch(read, 'backend_green', duration=0, clock=clock, sleep=clock.sleep)
    assert len(read.calls) == 1
    assert (result['requests'], result['judged'], result['passed'], result['reads']) == (0, False, True, 1)
    assert result['verdict'] == 'baseline'
    assert result['baseline'] == result['counters']
    assert result['msg'] == 'backend_green: counters read as a baseline; nothing judged'


def test_one_look_against_a_baseline():
    clock = Clock()
    baseline = dict(counters(hrsp_2xx=100, hrsp_5xx=1), read_at=2000.0)
    read = reader(clock, counters(hrsp_2xx=290, hrsp_5xx=11, eresp=3))
    result = traffic.watch(read, 'backend_green', baseline=baseline, duration=0, clock=clock, sleep=clock.sleep)
    assert len(read.calls) == 1
    assert (result['requests'], result['failed_requests'], result['error_rate'], result['judged'], result['passed']) == \
        (200, 10, 5.0, True, False)
    assert result['baseline'] == baseline
    # The window runs from the baseline's read_at to the last read's.
    assert result['window'] == result['counters']['read_at'] - 2000.0
    assert result['msg'].startswith('backend_green: 5% of 200 real requests failed (hrsp_5xx 10, srv_abrt 0; '
                                    'eresp 3, econ 0) in ')
    assert result['msg'].endswith('; the limit is 1%')


def test_watch_polls_for_the_duration_and_passes():
    clock = Clock()
    snapshots = [counters(hrsp_2xx=100 * step, hrsp_5xx=step // 2) for step in range(12)]
    read = reader(clock, *snapshots)
    result = traffic.watch(read, 'backend_green', duration=10, interval=1, clock=clock, sleep=clock.sleep)
    assert read.calls == [1000.0 + step for step in range(11)]  # at 0 (baseline), 1, ..., 10
    assert (result['requests'], result['failed_requests'], result['judged'], result['passed']) == (1005, 5, True, True)
    assert result['elapsed'] == 10.0
    assert result['reads'] == 11


def test_watch_fails_early_once_enough_requests_failed():
    clock = Clock()
    snapshots = [counters(), counters(hrsp_2xx=10, hrsp_5xx=5),   # 15 requests: too few to judge
                 counters(hrsp_2xx=20, hrsp_5xx=10), counters(hrsp_2xx=1000)]
    read = reader(clock, *snapshots)
    result = traffic.watch(read, 'backend_green', duration=60, interval=2, clock=clock, sleep=clock.sleep)
    assert read.calls == [1000.0, 1002.0, 1004.0]   # stopped at the first judged look, not after 60 s
    assert (result['requests'], result['failed_requests'], result['error_rate'], result['passed']) == (30, 10, 33.333, False)
    assert result['msg'] == ('backend_green: 33.33% of 30 real requests failed (hrsp_5xx 10, srv_abrt 0; eresp 0, '
                             'econ 0) in 4s; the limit is 1%')


def test_watch_skips_a_transient_failure_and_retries_the_last_read():
    clock = Clock()
    reset = RuntimeAPIError('error talking to /run/haproxy/admin.sock: [Errno 104] Connection reset by peer')
    reset.__context__ = ConnectionResetError(errno.ECONNRESET, 'Connection reset by peer')
    refused = ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x')
    read = reader(clock, counters(), reset, counters(hrsp_2xx=50), refused, refused,
                  counters(hrsp_2xx=60, hrsp_5xx=40))
    result = traffic.watch(read, 'backend_green', duration=3, interval=1, retry_for=5, clock=clock, sleep=clock.sleep)
    assert (result['missed_reads'], result['requests'], result['failed_requests'], result['passed']) == (3, 100, 40, False)
    assert result['last_missed_read_error'] == 'connection refused by HAProxy Runtime API socket x'


def test_watch_gives_up_on_the_last_read_after_retry_for():
    clock = Clock()
    refused = ConnectionRefusedAPIError('connection refused by HAProxy Runtime API socket x')
    read = reader(clock, counters(), refused)
    with pytest.raises(ConnectionRefusedAPIError):
        traffic.watch(read, 'backend_green', duration=1, interval=1, retry_for=2, clock=clock, sleep=clock.sleep)
    assert 1003.0 <= clock.now < 1004.0


def test_watch_raises_at_once_on_a_permanent_error():
    clock = Clock()
    read = reader(clock, counters(), SocketPermissionError('permission denied'))
    with pytest.raises(SocketPermissionError):
        traffic.watch(read, 'backend_green', duration=30, interval=1, clock=clock, sleep=clock.sleep)
    assert clock.now == 1001.0


def test_watch_reload_in_the_window_counts_from_zero():
    clock = Clock()
    read = reader(clock, counters(hrsp_2xx=5000), counters(hrsp_2xx=5100), counters(hrsp_2xx=40, hrsp_5xx=2))
    result = traffic.watch(read, 'backend_green', duration=2, interval=1, clock=clock, sleep=clock.sleep)
    assert (result['requests'], result['failed_requests'], result['counter_resets']) == (142, 2, 1)


# -- reading from HAProxy ---------------------------------------------------------------------------

class FakeClient(object):
    def __init__(self, replies):
        self.replies = replies
        self.commands = []

    def run(self, verb, *arguments):
        line = ' '.join((verb,) + arguments)
        self.commands.append(line)
        reply = self.replies[line]
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.mark.parametrize('version', VERSIONS)
def test_read_counters_from_a_capture(version):
    client = FakeClient({'show stat backend_green 2 -1': fixture(version, 'backend_green_traffic.csv')})
    read = traffic.read_counters(client, 'backend_green', clock=lambda: 1795788062.12345)
    assert read['hrsp_5xx'] == 10 and read['read_at'] == 1795788062.123


def test_read_counters_unknown_backend_and_empty_reply():
    gone = CommandError('show stat backend_nope 2 -1', 'No such proxy.\n\n')
    with pytest.raises(BackendNotFoundError):
        traffic.read_counters(FakeClient({'show stat backend_nope 2 -1': gone}), 'backend_nope')
    with pytest.raises(IncompleteReplyError) as raised:
        traffic.read_counters(FakeClient({'show stat backend_green 2 -1': ''}), 'backend_green')
    assert 'empty reply' in str(raised.value)


def test_check_backend_lists_the_backends_and_retries_an_empty_answer():
    answers = ['', '# name\nbackend_blue\nbackend_green\n\n']

    class Client(object):
        def run(self, verb):
            return answers.pop(0)

    clock = Clock()
    traffic.check_backend(Client(), 'backend_green', retry_for=5, clock=clock, sleep=clock.sleep)
    with pytest.raises(BackendNotFoundError) as raised:
        traffic.check_backend(FakeClient({'show backend': '# name\nbackend_blue\n\n'}), 'backend_purple')
    assert str(raised.value) == "backend 'backend_purple' does not exist in HAProxy; backends: backend_blue"


def test_socket_errors_are_transient_only_when_they_can_pass():
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import is_transient
    timeout = RuntimeAPIError('x')
    timeout.__context__ = socket.timeout()
    assert is_transient(timeout)
    assert is_transient(ConnectionRefusedAPIError('x'))
    assert not is_transient(SocketPermissionError('x'))
    assert not is_transient(CommandError('show stat', 'Unknown command\n'))
    assert not is_transient(RuntimeAPIError('x'))


# --- the caller's own requests are not real requests ------------------------------------

class Backend(object):
    """HAProxy's backend counters as a model: users and the caller's smoke requests both land in them."""

    def __init__(self, clock, users_per_second=0, users_failing_every=0):
        self.clock = clock
        self.users_per_second = users_per_second
        self.failing_every = users_failing_every
        self.started = clock()
        self.users_seen = 0
        self.state = counters()
        self.events = []

    def _users(self):
        due = int(round((self.clock() - self.started) * self.users_per_second))
        while self.users_seen < due:
            self.users_seen += 1
            failed = self.failing_every and self.users_seen % self.failing_every == 0
            self.state['hrsp_5xx' if failed else 'hrsp_2xx'] += 1

    def read(self):
        self._users()
        self.events.append('read')
        return dict(self.state, read_at=self.clock())

    def smoke(self, statuses=(200,)):
        def send_round():
            self._users()
            self.events.append('smoke')
            batch = []
            for status in statuses:
                if status is not None:
                    self.state[traffic.response_field(status)] += 1
                batch.append(dict(status=status, matched=status == 200, error=None if status else 'timed out',
                                  reason=None, elapsed=0.01, body_excerpt=None, body_truncated=False,
                                  _body_key='version=green' if status else None))
            self.clock.now += 0.05  # a request takes time
            return batch
        return send_round


def test_smoke_requests_in_the_window_do_not_dilute_the_users_error_rate():
    """Users fail 5% (1 in 20); 10 smoke requests a round, all 200, would bring it under 2% if counted."""
    clock = Clock()
    backend = Backend(clock, users_per_second=20, users_failing_every=20)
    baseline = backend.read()
    result = traffic.watch(backend.read, 'backend_green', baseline=baseline, duration=10, interval=1,
                           max_error_rate=2.0, min_requests=200, clock=clock, sleep=clock.sleep,
                           smoke=backend.smoke(statuses=(200,) * 10), smoke_interval=1)
    smoke_sent = sum(len(batch) for batch in result['_smoke_rounds'])
    assert smoke_sent >= 90
    # Exact: every response HAProxy counted is either a user's or a smoke request.
    assert result['requests'] == backend.users_seen and result['own_requests'] == dict(hrsp_2xx=smoke_sent)
    assert result['failed_requests'] == backend.users_seen // 20
    assert (result['error_rate'], result['verdict'], result['passed']) == (5.0, 'failed', False), result
    assert "%d requests of the caller's own not counted" % smoke_sent in result['msg']


def test_smoke_requests_are_sent_between_reads_never_after_the_last():
    clock = Clock()
    backend = Backend(clock, users_per_second=50)
    baseline = backend.read()
    backend.events = []
    result = traffic.watch(backend.read, 'backend_green', baseline=baseline, duration=5, interval=1,
                           min_requests=20, clock=clock, sleep=clock.sleep, smoke=backend.smoke(), smoke_interval=1)
    assert result['verdict'] == 'passed', result
    # Every smoke round is answered before the next read, and the last read has no smoke after it.
    assert backend.events[-1] == 'read' and backend.events[0] == 'smoke'
    assert all(backend.events[i + 1] == 'read' for i, event in enumerate(backend.events) if event == 'smoke')
    assert len(result['_smoke_rounds']) == 5


def test_only_the_callers_smoke_in_the_window_is_insufficient_traffic():
    clock = Clock()
    backend = Backend(clock)  # no users at all
    baseline = backend.read()
    backend.state['hrsp_2xx'] += 10  # the SMOKE requests before the window
    kwargs = dict(baseline=baseline, duration=5, interval=1, min_requests=1, clock=clock, sleep=clock.sleep,
                  own=traffic.own_counters({'200': 10}), smoke=backend.smoke(), smoke_interval=1)
    result = traffic.watch(backend.read, 'backend_green', **kwargs)
    assert (result['requests'], result['judged'], result['verdict'], result['passed']) == \
        (0, False, 'insufficient', False), result
    assert result['own_requests'] == dict(hrsp_2xx=15)
    assert result['msg'].startswith("backend_green: insufficient traffic to judge: 0 real requests in 5s (15 requests "
                                    "of the caller's own not counted), fewer than min_requests 1"), result['msg']
    backend.events = []
    kwargs['baseline'] = backend.read()
    accepted = traffic.watch(backend.read, 'backend_green', insufficient_traffic='pass', **kwargs)
    assert (accepted['verdict'], accepted['passed']) == ('insufficient', True), accepted


def test_a_failed_smoke_request_ends_the_watch_and_an_unanswered_one_is_not_subtracted():
    clock = Clock()
    backend = Backend(clock, users_per_second=100)
    baseline = backend.read()
    result = traffic.watch(backend.read, 'backend_green', baseline=baseline, duration=30, interval=1,
                           min_requests=20, clock=clock, sleep=clock.sleep, smoke=backend.smoke(statuses=(200, None)),
                           smoke_interval=1)
    assert len(result['_smoke_rounds']) == 1 and result['elapsed'] < 2, result
    assert (result['own_requests'], result['own_unanswered']) == (dict(hrsp_2xx=1), 1)
    assert result['requests'] == backend.users_seen


def test_own_counters_by_status_class():
    assert traffic.own_counters({'200': 3, 204: 2, '302': 1, '404': 4, '503': 5, '101': 1, '999': 2}) == dict(
        hrsp_2xx=5, hrsp_3xx=1, hrsp_4xx=4, hrsp_5xx=5, hrsp_1xx=1, hrsp_other=2)
    assert traffic.own_counters(None) == {}
