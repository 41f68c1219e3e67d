# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the haproxy_backend_traffic module, on captured HAProxy replies."""

from __future__ import annotations

import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.module_utils import runtime_api  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_backend_traffic  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, 'fixtures')
SHOW_BACKEND = '# name\nbackend_blue\nbackend_green\n\n'


def fixture(version, name):
    with open(os.path.join(FIXTURES, 'haproxy-' + version, 'traffic', name)) as handle:
        return handle.read()


@pytest.fixture
def haproxy(monkeypatch):
    """Replies by command line; a list is answered in turn (its last item repeats)."""
    replies = {}
    sent = []

    def raw(self, line):
        sent.append(line)
        reply = replies[line]
        if isinstance(reply, list):
            return reply.pop(0) if len(reply) > 1 else reply[0]
        return reply

    monkeypatch.setattr(runtime_api.RuntimeAPIClient, 'raw', raw)
    return replies, sent


def run(args, check=False):
    return run_main(haproxy_backend_traffic.main, dict(dict(socket='/nonexistent/admin.sock'), **args), check=check)


@pytest.mark.parametrize('version', ['2.6', '3.0'])
def test_fails_with_the_rate_and_counts(haproxy, version):
    replies, sent = haproxy
    replies['show backend'] = SHOW_BACKEND
    replies['show stat backend_green 2 -1'] = [fixture(version, 'backend_green_idle.csv'),
                                               fixture(version, 'backend_green_traffic.csv')]
    outcome = run(dict(backend='backend_green', duration=0.2, interval=0.1))
    assert outcome.failed
    result = outcome.result
    assert result['changed'] is False
    assert (result['requests'], result['failed_requests'], result['error_rate'], result['judged'], result['passed']) == \
        (60, 10, 16.667, True, False)
    assert result['errors'] == dict(hrsp_5xx=10, srv_abrt=0, eresp=0, econ=0)
    assert result['msg'].startswith('backend_green: 16.67% of 60 real requests failed (hrsp_5xx 10, srv_abrt 0; '
                                    'eresp 0, econ 0) in ')
    assert result['msg'].endswith('s; the limit is 1%')
    assert sent[0] == 'show backend'
    assert set(sent[1:]) == {'show stat backend_green 2 -1'}


def test_passes_within_the_limit_and_with_a_baseline_in_check_mode(haproxy):
    replies, sent = haproxy
    replies['show backend'] = SHOW_BACKEND
    replies['show stat backend_green 2 -1'] = fixture('2.6', 'backend_green_traffic.csv')
    outcome = run(dict(backend='backend_green', max_error_rate=20,
                       baseline=dict(req_tot=0, hrsp_1xx=0, hrsp_2xx=0, hrsp_3xx=0, hrsp_4xx=0, hrsp_5xx=0,
                                     hrsp_other=0, econ=0, eresp=0, srv_abrt=0)), check=True)
    assert not outcome.failed, outcome.result
    assert (outcome.result['error_rate'], outcome.result['judged'], outcome.result['passed']) == (16.667, True, True)
    assert outcome.result['msg'].endswith('the limit is 20%')
    assert len(sent) == 2


ZERO = dict(hrsp_1xx=0, hrsp_2xx=0, hrsp_3xx=0, hrsp_4xx=0, hrsp_5xx=0, hrsp_other=0, econ=0, eresp=0, srv_abrt=0)


@pytest.mark.parametrize('insufficient', ['fail', 'pass', None])
def test_too_few_requests_is_its_own_outcome(haproxy, insufficient):
    replies, sent = haproxy
    replies['show backend'] = SHOW_BACKEND
    replies['show stat backend_green 2 -1'] = fixture('2.6', 'backend_green_traffic.csv')
    args = dict(backend='backend_green', min_requests=100, baseline=ZERO)
    if insufficient:
        args['insufficient_traffic'] = insufficient
    outcome = run(args)
    # Not enough requests to judge fails unless the caller accepts it (the default is fail).
    assert outcome.failed is (insufficient != 'pass')
    assert (outcome.result['judged'], outcome.result['verdict'], outcome.result['error_rate']) == \
        (False, 'insufficient', 16.667)
    assert outcome.result['passed'] is (insufficient == 'pass')
    assert outcome.result['msg'].startswith('backend_green: insufficient traffic to judge: 60 real requests in ')
    assert outcome.result['failed_requests'] == 10
    assert 'fewer than min_requests 100 (10 failed' in outcome.result['msg']
    if insufficient == 'pass':
        # Ansible reads a `failed` key as the task's outcome: the count has another name.
        assert 'failed' not in outcome.result


def test_own_requests_are_not_real_requests(haproxy):
    """The fixture's 60 responses (40 2xx, 10 4xx, 10 5xx): 35 of the 2xx and 5 of the 5xx were the caller's own."""
    replies, sent = haproxy
    replies['show backend'] = SHOW_BACKEND
    replies['show stat backend_green 2 -1'] = fixture('2.6', 'backend_green_traffic.csv')
    outcome = run(dict(backend='backend_green', min_requests=10, max_error_rate=20, baseline=ZERO,
                       own_requests={'200': 30, '204': 5, 503: 5}))
    result = outcome.result
    assert (result['requests'], result['failed_requests'], result['errors']['hrsp_5xx']) == (20, 5, 5), result
    assert (result['error_rate'], result['verdict']) == (25.0, 'failed'), result
    assert result['own_requests'] == dict(hrsp_2xx=35, hrsp_5xx=5)
    assert outcome.failed
    assert '25% of 20 real requests failed' in result['msg'], result['msg']
    assert "40 requests of the caller's own not counted" in result['msg'], result['msg']


@pytest.mark.parametrize('own, message', [
    # ansible-core 2.17/2.18 say "of type <class 'str'>", 2.19 "of type str".
    ('x', "argument 'own_requests' is of type "),
    ({'OK': 1}, "own_requests keys are HTTP status codes, got 'OK'"),
    ({'200': -1}, 'own_requests[200] cannot be negative, got -1'),
    ({'200': 'many'}, "own_requests[200] must be a whole number, got 'many'"),
])
def test_bad_own_requests_change_nothing(haproxy, own, message):
    replies, sent = haproxy
    outcome = run(dict(backend='backend_green', baseline=ZERO, own_requests=own))
    assert outcome.failed and message in outcome.result['msg'], outcome.result
    assert sent == []


def test_unknown_backend(haproxy):
    replies, sent = haproxy
    replies['show backend'] = SHOW_BACKEND
    outcome = run(dict(backend='backend_purple'))
    assert outcome.failed
    assert outcome.result['msg'] == "backend 'backend_purple' does not exist in HAProxy; backends: backend_blue, backend_green"


def test_bad_options_fail_before_anything_is_sent(haproxy):
    replies, sent = haproxy
    outcome = run(dict(backend='backend_green', max_error_rate=150))
    assert outcome.failed and outcome.result['msg'] == 'max_error_rate is a percentage from 0 to 100, got 150.0'
    outcome = run(dict(backend='backend_green', baseline=dict(hrsp_2xx=1)))
    assert outcome.failed and outcome.result['msg'].startswith('baseline lacks hrsp_1xx')
    outcome = run(dict(backend=' '))
    assert outcome.failed and outcome.result['msg'] == 'backend must name a backend, got an empty string'
    assert sent == []


@pytest.mark.parametrize('smoke, message', [
    ([dict(url='ftp://release.test/')], 'smoke[0]: '),
    ([dict(url='http://release.test/', body_regex='(')], 'smoke[0]: body_regex'),
    ([dict(url='http://release.test/'), dict(url='http://release.test/', status_code=[])], 'smoke[1]: status_code'),
])
def test_bad_smoke_options_change_nothing(haproxy, smoke, message):
    replies, sent = haproxy
    outcome = run(dict(backend='backend_green', baseline=ZERO, duration=5, smoke=smoke))
    assert outcome.failed and outcome.result['msg'].startswith(message), outcome.result
    assert sent == []


def test_the_gate_options_come_from_the_shared_helper_unchanged(monkeypatch):
    """max_error_rate, min_requests and insufficient_traffic are release_step's too (the traffic_gate
    doc fragment), with the types and defaults playbooks were written against."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.traffic import traffic_gate_argument_spec

    assert traffic_gate_argument_spec() == dict(
        max_error_rate=dict(type="float", default=1.0),
        min_requests=dict(type="int", default=20),
        insufficient_traffic=dict(type="str", choices=["fail", "pass"], default="fail"),
    )
    spec = argument_spec_of(haproxy_backend_traffic, monkeypatch)
    shared = traffic_gate_argument_spec()
    assert dict((name, spec[name]) for name in shared) == shared
