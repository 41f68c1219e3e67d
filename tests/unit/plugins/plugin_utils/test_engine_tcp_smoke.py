# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release engine's smoke tests on a `mode tcp` service: a tcp://HOST:PORT smoke URL.

smoke.send_request is the one place that dispatches: every smoke test of the engine (precheck's
current path, the preflight of each server, SMOKE and the rollback's smoke, the watch window's
rounds) sends through it, so each of them is proved here against small socket servers that
answer like the lab's apps behind a `mode tcp` frontend; and INIT's input checks (controller
side) accept tcp:// URLs, prove `smoke_send` parses and refuse a watch window for them.
"""

from __future__ import annotations

import os
import re
import socket
import sys

import pytest

_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import (  # noqa: E402
    precheck,
    preflight,
    release_steps,
    smoke,
    traffic,
)
from ansible_collections.bluegreen.haproxy.plugins.plugin_utils import release_engine  # noqa: E402

# test_tcp_probe's small socket servers and what the lab's apps answer. (This file tests the
# engine's controller code too, so it lives with the controller's tests: ansible-test runs
# tests/unit/plugins/module_utils without the controller's `ansible` packages.)
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.module_utils.test_tcp_probe import (  # noqa: E402
    BLUE_ANSWER,
    GREEN_ANSWER,
    REQUEST,
    Server,
    answering,
)

URL = 'tcp://db.release.test:5432'


@pytest.fixture
def server():
    servers = []

    def start(behaviour):
        servers.append(Server(behaviour))
        return servers[-1]

    yield start
    for started in servers:
        started.stop()


@pytest.fixture
def refused_port():
    """A port bound but not listening: the kernel refuses connections to it."""
    holder = socket.socket()
    holder.bind(('127.0.0.1', 0))
    yield holder.getsockname()[1]
    holder.close()


def green(port):
    return ('127.0.0.1', port)


# ---------------------------------------------------------------- the URL

def test_a_tcp_url_is_the_engines_only():
    with pytest.raises(smoke.SmokeOptionError, match="unsupported scheme 'tcp'; use http or https"):
        smoke.parse_url(URL)  # http_smoke and the preflight module stay HTTP
    target = smoke.parse_url(URL, smoke.ENGINE_SCHEMES)
    assert (target.scheme, target.host, target.port) == ('tcp', 'db.release.test', 5432)
    assert smoke.parse_url('tcp://10.0.0.5:6379/', smoke.ENGINE_SCHEMES).port == 6379


@pytest.mark.parametrize('url, fragment', [
    ('tcp://db.release.test', 'needs a port'),
    ('tcp://db.release.test:5432/release', 'tcp://HOST:PORT only'),
    ('tcp://db.release.test:5432?x=1', 'tcp://HOST:PORT only'),
    ('tcp://user@db.release.test:5432', 'tcp://HOST:PORT only'),
    ('ftp://db.release.test:21', 'use http, https or tcp'),
])
def test_a_bad_tcp_url_is_named(url, fragment):
    with pytest.raises(smoke.SmokeOptionError, match=re.escape(fragment)):
        smoke.parse_url(url, smoke.ENGINE_SCHEMES)


# ---------------------------------------------------------------- the one dispatch

def test_send_request_sends_a_tcp_url_as_one_tcp_attempt(server):
    listener = server(answering(GREEN_ANSWER))
    result = smoke.send_request(URL, connect_address=green(listener.port), tcp_send=REQUEST,
                                body_regex=re.compile('version=green'), status_codes=[204], headers={'X-No': '1'})
    assert (result['matched'], result['status'], result['error'], result['reason']) == (True, None, None, None)
    assert listener.received == [b'GET /release HTTP/1.0\r\n\r\n']  # the escapes decoded, nothing HTTP added


def test_a_wrong_answer_fails_and_says_what_was_received(server):
    listener = server(answering(BLUE_ANSWER))
    result = smoke.send_request(URL, connect_address=green(listener.port), tcp_send=REQUEST,
                                body_regex=re.compile('version=green'))
    assert not result['matched'] and result['status'] is None
    assert result['reason'] == "connection closed after %d bytes without a match of 'version=green'" % len(BLUE_ANSWER)
    assert result['body_excerpt'].endswith('version=blue\\n')


def test_run_smoke_over_tcp_counts_attempts_and_quotes_the_first_wrong_answer(server, refused_port):
    listener = server(answering(BLUE_ANSWER))
    result = smoke.run_smoke(URL, requests=3, resolve_text='127.0.0.1:%d' % listener.port,
                             connect_address=green(listener.port), tcp_send=REQUEST,
                             body_regex=re.compile('version=green'))
    assert (result['passed'], result['failed_count'], listener.accepted) == (False, 3, 3)
    assert result['msg'].startswith('3 of 3 requests to %s (via 127.0.0.1:%d) failed: 3 x connection closed after'
                                    % (URL, listener.port))
    assert "received 'HTTP/1.0 200 OK" in result['msg'] and 'version=blue' in result['msg']
    refused = smoke.run_smoke(URL, connect_address=green(refused_port), body_regex=None)
    assert refused['msg'] == '1 of 1 request to %s failed: 1 x connection refused' % URL


# ---------------------------------------------------------------- every call site

def test_precheck_current_path_and_preflight_speak_tcp(server):
    blue, good, wrong = server(answering(BLUE_ANSWER)), server(answering(GREEN_ANSWER)), server(answering(BLUE_ANSWER))
    (service,) = precheck.prepare_services([dict(
        key='tcp', backend='backend_tcp_green', url=URL, resolve='127.0.0.1:%d' % blue.port, send=REQUEST,
        body_regex='version=green', current_body_regex='version=blue')])
    options = dict(requests=2, request_timeout=2.0, validate_certs=True, preflight_validate_certs=False,
                   tls_context=None, preflight_tls_context=None, send=smoke.send_request, skip_servers=[])
    current = precheck._current(None, service, options)
    assert current['passed'] and blue.accepted == 2, current['msg']
    servers = [dict(name='green1', address='127.0.0.1', port=good.port, ssl=False, maintenance=False),
               dict(name='green2', address='127.0.0.1', port=wrong.port, ssl=False, maintenance=False)]
    result = preflight.preflight(servers, URL, body_regex=re.compile('version=green'), tcp_send=REQUEST,
                                 backend='backend_tcp_green')
    assert result['failed_servers'] == ['green2'] and good.received == wrong.received == [b'GET /release HTTP/1.0\r\n\r\n']
    (entry,) = [entry for entry in result['servers'] if entry['name'] == 'green2']
    assert "without a match of 'version=green' (got 'HTTP/1.0 200 OK" in entry['reason'] and 'version=blue' in entry['reason']


def test_precheck_refuses_a_send_with_an_unknown_escape_before_anything_is_sent():
    with pytest.raises(precheck.PrecheckOptionError, match=r"service 'tcp': send .* has the unknown escape '\\\\d'"):
        precheck.prepare_services([dict(key='tcp', backend='backend_tcp_green', url=URL, send='\\d')])


def test_the_engines_smoke_and_rollback_smoke_speak_tcp(server):
    listener = server(answering(GREEN_ANSWER))
    services = [dict(key='tcp', smoke_url=URL, smoke_resolve='127.0.0.1:%d' % listener.port, smoke_send=REQUEST,
                     smoke_bodies={'backend_tcp_green': 'version=green'}, smoke_status_codes=[200], smoke_headers={})]
    (check,) = release_steps._smoke_services(smoke.run_smoke, services, {'tcp': 'backend_tcp_green'},
                                             dict(requests=2, timeout=2))
    assert (check['passed'], check['key'], listener.accepted) == (True, 'tcp', 2), check['msg']
    (old,) = release_steps._smoke_services(smoke.run_smoke, services, {'tcp': 'backend_tcp_blue'}, dict(timeout=2))
    assert not old['passed'] and "without a match of 'version=tcp_blue'" in old['msg']


def test_the_watch_windows_rounds_speak_tcp(server):
    listener = server(answering(GREEN_ANSWER))
    services = [dict(key='tcp', smoke_url=URL, smoke_resolve='127.0.0.1:%d' % listener.port, smoke_send=REQUEST,
                     smoke_bodies={'backend_tcp_green': 'version=green'})]
    (item,) = release_steps.watch_items(services, {'tcp': 'backend_tcp_green'}, {}, {}, timeout=2)
    send_round, targets = traffic.smoke_sender(item['smoke'])
    (result,) = send_round()
    assert result['matched'] and result['status'] is None and listener.received == [b'GET /release HTTP/1.0\r\n\r\n']
    assert targets == [(URL, '127.0.0.1:%d' % listener.port)]


# ---------------------------------------------------------------- INIT, on the controller

def inputs(**changes):
    given = dict(action='cutover', target='backend_tcp_green', backends=['backend_tcp_blue', 'backend_tcp_green'],
                 persist='on_success', smoke_url=URL, smoke_resolve='127.0.0.1:9000', smoke_send=REQUEST,
                 smoke_status_codes=[200], smoke_headers={}, smoke_bodies={}, smoke_requests=10, smoke_timeout=5,
                 watch_seconds=0, watch_interval=1, health_wait=30, max_error_rate=1.0, min_requests=20,
                 clock_tolerance=0.5, switch_lead=0, preflight_skip_servers=[], map_key='tcp')
    given.update(changes)
    return given


def test_init_accepts_a_tcp_service():
    assert release_engine.input_errors(inputs()) == []
    assert release_engine.input_errors(inputs(smoke_send='')) == []


@pytest.mark.parametrize('changes, expected', [
    (dict(smoke_send='GET /\\q'), "release_smoke_send: send 'GET /\\\\q' has the unknown escape '\\\\q'"),
    (dict(smoke_send=['x']), 'release_smoke_send: send must be a string'),
    (dict(smoke_url='tcp://db.release.test'), 'release_smoke_url: url '),
    (dict(watch_seconds=30), 'release_watch_seconds is 30 but release_smoke_url is smoke-tested over tcp://'),
])
def test_init_names_a_bad_tcp_input(changes, expected):
    errors = release_engine.input_errors(inputs(**changes))
    assert len(errors) == 1 and errors[0].startswith(expected), errors


def test_init_takes_smoke_send_per_service():
    defaults = dict(inputs(), map_key='active')
    given = [dict(key='tcp', target='backend_tcp_green', smoke_url=URL, smoke_send='PING\\r\\n'),
             dict(key='release.test', target='backend_green', smoke_url='http://release.test/release')]
    services = release_engine.services(given, defaults)
    assert [service['smoke_send'] for service in services] == ['PING\\r\\n', REQUEST]
    assert release_engine.input_errors(dict(inputs(), given_services=given, services=services)) == []
    bad = [dict(given[0], smoke_send='\\z'), given[1]]
    errors = release_engine.input_errors(dict(inputs(), given_services=bad,
                                              services=release_engine.services(bad, defaults)))
    assert len(errors) == 1 and errors[0].startswith('release_services[tcp].smoke_send: send'), errors
    watched = release_engine.input_errors(dict(inputs(watch_seconds=10), given_services=given, services=services))
    assert watched and 'release_services tcp are smoke-tested over tcp://' in watched[0], watched
