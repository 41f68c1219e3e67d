# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the haproxy_map module: the module run against a fake HAProxy (fake_map_haproxy)."""

from __future__ import annotations

import errno
import os
import sys
import time

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.module_utils import lock, map_file  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_map  # noqa: E402

from fake_map_haproxy import FakeHAProxy  # noqa: E402
from module_runner import run_main  # noqa: E402

MAP = '/etc/haproxy/maps/bluegreen.map'
LIVE = [('active', 'backend_blue'), ('shop.example.com', 'shop_blue'), ('api.example.com', 'api_blue'),
        ('legacy', 'backend_old')]


@pytest.fixture
def haproxy(monkeypatch):
    fake = FakeHAProxy({MAP: LIVE})
    monkeypatch.setattr(haproxy_map, 'RuntimeAPIClient', fake.client)
    return fake


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / 'bluegreen.map'
    path.write_text('# switch\n' + ''.join('%s %s\n' % entry for entry in LIVE))
    return path


def run(args, check=False, diff=False):
    return run_main(haproxy_map.main, args, check=check, diff=diff)


def single(value='backend_green', **extra):
    return dict(dict(map=MAP, key='active', value=value), **extra)


def bulk(entries=None, **extra):
    return dict(dict(map=MAP, entries=entries or {'shop.example.com': 'shop_green', 'api.example.com': 'api_green'}),
                **extra)


COMMON_RESULT = {'changed', 'map', 'previous', 'runtime_entries', 'changed_keys', 'switched_at', 'late_by',
                 'persisted', 'runtime_changed', 'disk_changed'}


# -- single key ---------------------------------------------------------


def test_single_key_switch_reads_back_and_reports(haproxy):
    before = time.time()
    outcome = run(single(expected_value='backend_blue'))
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert COMMON_RESULT | {'key', 'previous_value', 'value'} <= set(result)
    assert result['changed'] is True
    assert result['previous'] == {'active': 'backend_blue'} and result['previous_value'] == 'backend_blue'
    assert result['runtime_entries'] == {'active': 'backend_green'}
    assert before <= result['switched_at'] <= time.time()
    assert result['late_by'] == 0.0 and result['persisted'] is False
    assert haproxy.values(MAP)['active'] == 'backend_green'
    assert haproxy.writes == ['set map']


def test_single_key_read_uses_get_map_not_a_dump(haproxy):
    run(single())
    assert not [line for _stamp, line in haproxy.log if line.startswith('show map ')], haproxy.log


def test_value_already_live_changes_nothing(haproxy, disk):
    mtime = os.stat(disk).st_mtime_ns
    outcome = run(single('backend_blue', persist=True, map_file=str(disk)))
    assert outcome.result['changed'] is False
    assert outcome.result['switched_at'] is None and outcome.result['persisted'] is True
    assert haproxy.writes == []
    assert os.stat(disk).st_mtime_ns == mtime
    assert sorted(os.listdir(disk.parent)) == ['bluegreen.map']


@pytest.mark.parametrize('lie', [{'active': 'backend_blue'}, {'active': 'backend_canary'}])
def test_read_back_that_disagrees_fails_the_task(haproxy, disk, lie):
    """The read-back is the verify: a set HAProxy acknowledged but does not serve must fail."""
    haproxy.lie_after_write = lie
    outcome = run(single(persist=True, map_file=str(disk)))
    assert outcome.failed
    assert "now serves '%s' for active instead of 'backend_green'" % lie['active'] in outcome.result['msg']
    assert outcome.result['runtime_entries'] == lie
    assert 'active backend_blue' in disk.read_text(), 'the map file is not written after a failed verify'
    assert outcome.result['persisted'] is False


def test_compare_and_set_refusal_sends_no_write(haproxy):
    outcome = run(single(expected_value='backend_canary'))
    assert outcome.failed
    assert "its live value is 'backend_blue', expected backend_canary; nothing was changed" in outcome.result['msg']
    assert haproxy.writes == []


def test_release_lock_records_the_phase_before_the_switch(haproxy, tmp_path):
    path = str(tmp_path / 'bluegreen.map.lock')
    lock.acquire(path, 'run-1', dict(phase='precheck', previous='backend_blue', target='backend_green'))
    guard = dict(path=path, owner='run-1', phase='switching')
    outcome = run(single(expected_value='backend_blue', release_lock=guard))
    assert not outcome.failed, outcome.result
    assert haproxy.writes == ['set map']
    record = lock.read_lock(path)
    assert (record['owner'], record['phase'], record['target']) == ('run-1', 'switching', 'backend_green')
    # Check mode neither switches nor touches the lock.
    lock.acquire(path, 'run-1', dict(phase='precheck'))
    assert not run(single('backend_blue', release_lock=guard), check=True).failed
    assert lock.read_lock(path)['phase'] == 'precheck' and haproxy.writes == ['set map']


@pytest.mark.parametrize('holder', [None, 'run-2'], ids=['lock-gone', 'another-owner'])
def test_release_lock_not_held_by_the_run_refuses_the_switch(haproxy, tmp_path, holder):
    path = str(tmp_path / 'bluegreen.map.lock')
    if holder:
        lock.acquire(path, holder, dict(phase='precheck'))
    outcome = run(single(release_lock=dict(path=path, owner='run-1', phase='switching')))
    assert outcome.failed and outcome.result['msg'].endswith('; nothing was changed'), outcome.result['msg']
    assert ('held by %s' % (holder or 'nobody (the lock is gone)')) in outcome.result['msg']
    assert haproxy.writes == [] and outcome.result['changed'] is False
    assert haproxy.values(MAP)['active'] == 'backend_blue'
    assert (lock.read_lock(path) or {}).get('owner') == holder  # never taken or rewritten


def test_state_absent_removes_and_missing_key_is_added(haproxy):
    added = run(dict(map=MAP, key='canary', value='backend_green')).result
    assert added['previous_value'] is None and haproxy.values(MAP)['canary'] == 'backend_green'
    removed = run(dict(map=MAP, key='canary', state='absent')).result
    assert removed['changed'] is True and removed['value'] is None
    assert removed['runtime_entries'] == {'canary': None}
    assert 'canary' not in haproxy.values(MAP)
    assert haproxy.writes == ['add map', 'del map']


def test_rejected_huge_value_gives_a_short_message(haproxy):
    """HAProxy drops a command longer than tune.bufsize; the message quotes a prefix only."""
    outcome = run(single('x' * 100000))
    assert outcome.failed
    message = outcome.result['msg']
    assert len(message) < 400, message
    assert '(100000 characters)' in message and 'tune.bufsize' in message
    assert haproxy.values(MAP)['active'] == 'backend_blue'


@pytest.mark.parametrize('option,text', [('value', 'a\n' + 'y' * 100000), ('key', 'k' * 50000 + ' x')])
def test_invalid_long_input_is_quoted_short(haproxy, option, text):
    outcome = run(dict(single(), **{option: text}))
    assert outcome.failed and outcome.result['msg'].startswith('invalid %s:' % option)
    assert len(outcome.result['msg']) < 300
    assert haproxy.log == []


# -- bulk ---------------------------------------------------------------


def test_bulk_switches_in_one_commit_keeping_untouched_entries(haproxy):
    entries = {'shop.example.com': 'shop_green', 'api.example.com': 'api_green', 'new.example.com': 'new_green'}
    outcome = run(bulk(entries, expected_entries={'shop.example.com': 'shop_blue', 'active': 'backend_blue'}))
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert COMMON_RESULT <= set(result) and 'key' not in result
    assert result['previous'] == {'shop.example.com': 'shop_blue', 'api.example.com': 'api_blue',
                                  'new.example.com': None}
    assert result['runtime_entries'] == entries
    assert sorted(result['changed_keys']) == sorted(entries)
    assert haproxy.maps[MAP].entries == [('active', 'backend_blue'), ('shop.example.com', 'shop_green'),
                                         ('api.example.com', 'api_green'), ('legacy', 'backend_old'),
                                         ('new.example.com', 'new_green')]
    assert haproxy.writes.count('commit map') == 1 and 'set map' not in haproxy.writes


def test_bulk_already_live_changes_nothing(haproxy):
    outcome = run(bulk({'shop.example.com': 'shop_blue'}))
    assert outcome.result['changed'] is False and haproxy.writes == []


def test_bulk_compare_and_set_mismatch_changes_nothing(haproxy):
    outcome = run(bulk(expected_entries={'shop.example.com': 'shop_blue', 'api.example.com': 'api_red'}))
    assert outcome.failed
    assert "api.example.com is 'api_blue' (expected api_red)" in outcome.result['msg']
    assert 'nothing was changed' in outcome.result['msg']
    assert haproxy.writes == [] and not any('prepare' in line for _stamp, line in haproxy.log)


def test_bulk_check_and_diff_mode_predict_with_the_same_shape(haproxy, disk):
    args = bulk(persist=True, map_file=str(disk))
    text_before = disk.read_text()
    predicted = run(args, check=True, diff=True).result
    assert haproxy.writes == [] and disk.read_text() == text_before
    runtime_diff, disk_diff = predicted['diff']
    assert runtime_diff['before'] == 'shop.example.com shop_blue\napi.example.com api_blue\n'
    assert runtime_diff['after'] == 'shop.example.com shop_green\napi.example.com api_green\n'
    assert 'shop.example.com shop_green' in disk_diff['after']
    assert predicted['switched_at'] is None
    applied = run(args).result
    assert set(predicted) - {'diff'} == set(applied)
    for name in ('changed', 'previous', 'runtime_entries', 'changed_keys', 'persisted', 'disk_changed'):
        assert predicted[name] == applied[name], name


def test_bulk_payload_that_haproxy_drops_is_never_committed(haproxy):
    outcome = run(bulk({'shop.example.com': 'z' * 17000}))
    assert outcome.failed
    assert 'nothing was changed: the version was not committed' in outcome.result['msg']
    assert len(outcome.result['msg']) < 400
    assert 'commit map' not in haproxy.writes
    assert haproxy.values(MAP)['shop.example.com'] == 'shop_blue'
    assert outcome.result['changed'] is False and outcome.result['runtime_changed'] is False


def test_bulk_of_many_keys_is_chunked_below_the_buffer(haproxy):
    entries = {'svc%05d.example.com' % index: 'backend_green_%05d' % index for index in range(3000)}
    outcome = run(bulk(entries))
    assert not outcome.failed, outcome.result['msg']
    payloads = [line for _stamp, line in haproxy.log if line.endswith('<<')]
    assert len(payloads) > 5
    assert haproxy.values(MAP)['svc02999.example.com'] == 'backend_green_02999'
    assert haproxy.values(MAP)['legacy'] == 'backend_old'


def test_bulk_read_back_that_disagrees_fails(haproxy):
    haproxy.lie_after_write = {'api.example.com': 'api_blue'}
    outcome = run(bulk())
    assert outcome.failed and "now serves 'api_blue' for api.example.com" in outcome.result['msg']


@pytest.mark.parametrize('args,words', [
    (dict(map=MAP, key='active', value='x', entries={'a': 'b'}), 'mutually exclusive'),
    (dict(map=MAP, key='active', value='x', expected_entries={'a': 'b'}), 'expected_entries'),
    (dict(map=MAP), 'one of the following is required'),
    (dict(map=MAP, entries={'two words': 'x'}), 'invalid entries'),
    (dict(map=MAP, entries={'ok': ' padded'}), 'invalid entries'),
    (dict(map=MAP, key='active'), 'state=present needs a value'),
])
def test_bad_option_combinations_are_refused_before_any_command(haproxy, args, words):
    outcome = run(args)
    assert outcome.failed and words in outcome.result['msg']
    assert haproxy.log == []


# -- persist ------------------------------------------------------------


@pytest.mark.parametrize('args', [single(), bulk()], ids=['single', 'bulk'])
def test_unwritable_directory_fails_before_runtime_changes(haproxy, disk, monkeypatch, args):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, 'Permission denied')

    monkeypatch.setattr(map_file.tempfile, 'mkstemp', refuse)
    outcome = run(dict(args, persist=True, map_file=str(disk)))
    assert outcome.failed
    assert 'cannot create a file in %s' % disk.parent in outcome.result['msg']
    assert outcome.result['msg'].endswith('nothing was changed')
    assert haproxy.writes == []
    assert outcome.result['changed'] is False


@pytest.mark.parametrize('args,key', [(single(), 'active'), (bulk(), 'shop.example.com')], ids=['single', 'bulk'])
def test_failed_rename_restores_runtime(haproxy, disk, monkeypatch, args, key):
    def immutable(source, target):
        raise PermissionError(errno.EPERM, 'Operation not permitted')

    before = list(haproxy.maps[MAP].entries)
    monkeypatch.setattr(map_file.os, 'rename', immutable)
    outcome = run(dict(args, persist=True, map_file=str(disk)))
    assert outcome.failed
    assert 'cannot replace map file' in outcome.result['msg']
    assert 'the runtime change was undone, nothing is changed' in outcome.result['msg']
    assert haproxy.maps[MAP].entries == before
    assert outcome.result['runtime_entries'][key] == dict(LIVE)[key]
    assert outcome.result['changed'] is False and outcome.result['persisted'] is False
    assert sorted(os.listdir(disk.parent)) == ['bluegreen.map'], 'the temporary file is removed'


def test_persist_bulk_is_one_atomic_write_and_keeps_crlf(haproxy, tmp_path, monkeypatch):
    path = tmp_path / 'crlf.map'
    path.write_bytes(b'# switch\r\nactive backend_blue\r\nshop.example.com shop_blue\r\n')
    renames = []
    real_rename = map_file.os.rename
    monkeypatch.setattr(map_file.os, 'rename', lambda source, target: renames.append(target) or real_rename(source, target))
    outcome = run(bulk({'shop.example.com': 'shop_green', 'new.example.com': 'new_green'},
                       persist=True, map_file=str(path)))
    assert not outcome.failed, outcome.result['msg']
    assert renames == [str(path)]
    assert path.read_bytes() == (b'# switch\r\nactive backend_blue\r\nshop.example.com shop_green\r\n'
                                 b'new.example.com new_green\r\n')
    assert outcome.result['persisted'] is True and outcome.result['disk_changed'] is True


# -- switch_at ----------------------------------------------------------


def test_switch_at_stages_everything_then_switches_at_the_instant(haproxy):
    instant = time.time() + 0.5
    outcome = run(bulk(switch_at=instant))
    assert not outcome.failed, outcome.result['msg']
    result = outcome.result
    commits = [stamp for stamp, line in haproxy.log if line.startswith('commit map')]
    staging = [stamp for stamp, line in haproxy.log if line.startswith(('prepare map', 'add map', 'show map @'))]
    assert len(commits) == 1 and commits[0] >= instant
    assert staging and max(staging) < instant, 'everything but the commit is done before the instant'
    assert instant <= result['switched_at'] <= commits[0]
    assert 0.0 <= result['late_by'] < 0.2


def test_switch_at_in_the_past_switches_at_once_and_reports_late_by(haproxy):
    outcome = run(single(switch_at=time.time() - 2.5))
    assert not outcome.failed
    assert outcome.result['late_by'] >= 2.5
    assert haproxy.values(MAP)['active'] == 'backend_green'


def test_switch_at_too_far_ahead_is_refused_before_anything(haproxy):
    outcome = run(single(switch_at=time.time() + 3600))
    assert outcome.failed and 'more than 600 s' in outcome.result['msg']
    assert haproxy.log == []
