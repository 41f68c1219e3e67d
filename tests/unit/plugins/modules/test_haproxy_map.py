# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the haproxy_map module: the module run against a fake HAProxy (fake_map_haproxy)."""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.module_utils import lock, map_file, maps  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_map  # noqa: E402

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules import fake_map_haproxy  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy, RuntimeServer  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

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


@pytest.mark.parametrize('args,option', [
    (single('x' * 100000), 'value'),
    (single(expected_value='x' * 100000), 'expected_value'),
    (dict(map=MAP, key='k' * 100000, state='absent'), 'key'),
    (dict(map='/m' * 50000, key='active', value='v'), 'map'),
    (bulk({'shop.example.com': 'x' * 100000}), 'entries'),
    (bulk(expected_entries={'shop.example.com': 'x' * 100000}), 'expected_entries'),
], ids=['value', 'expected_value', 'key', 'map', 'entries', 'expected_entries'])
def test_input_longer_than_haproxy_buffer_is_refused_before_connecting(haproxy, args, option):
    """HAProxy drops (or, at 16 KB, mishandles) a command longer than tune.bufsize: refused before
    anything is asked, in a short message, and the result does not carry the input back."""
    outcome = run(args)
    assert outcome.failed
    message = outcome.result['msg']
    assert message.startswith('invalid %s:' % option) and len(message) < 400, message
    assert 'characters)' in message and 'tune.bufsize' in message and 'nothing was changed' in message
    assert 'x' * 100 not in message
    assert len(json.dumps(outcome.result)) < 1000, 'no result field echoes the input'
    assert haproxy.log == []


def test_value_that_fits_a_command_is_accepted(haproxy):
    value = 'v' * (maps.COMMAND_BUDGET - 200)
    outcome = run(single(value))
    assert not outcome.failed, outcome.result['msg']
    assert haproxy.values(MAP)['active'] == value


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


def test_bulk_payload_that_haproxy_drops_is_never_committed(haproxy, monkeypatch):
    """HAProxy drops a command bigger than its buffer with the reply of a success: the read-back of the
    staged version catches it (a smaller buffer here; inputs that cannot fit are refused before)."""
    monkeypatch.setattr(fake_map_haproxy, 'BUFSIZE', 100)
    outcome = run(bulk({'shop.example.com': 'z' * 200}))
    assert outcome.failed
    assert 'nothing was changed: the version was not committed' in outcome.result['msg']
    assert len(outcome.result['msg']) < 400
    assert 'commit map' not in haproxy.writes
    assert haproxy.values(MAP)['shop.example.com'] == 'shop_blue'
    assert outcome.result['changed'] is False and outcome.result['runtime_changed'] is False


def test_bulk_staged_version_with_a_wrong_value_is_never_committed(haproxy):
    """The staged version's read-back compares values, not only the number of entries."""
    haproxy.payload_mangler = lambda key, value: (key, 'api_red' if key == 'api.example.com' else value)
    outcome = run(bulk())
    assert outcome.failed
    assert len(haproxy.maps[MAP].versions[1]) == len(LIVE), 'HAProxy holds the right number of entries'
    assert 'HAProxy holds 3 of the 4 entries' in outcome.result['msg']
    assert 'first missing or different: api.example.com' in outcome.result['msg']
    assert 'commit map' not in haproxy.writes
    assert haproxy.values(MAP)['api.example.com'] == 'api_blue' and outcome.result['changed'] is False


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
    monkeypatch.setattr(map_file.os, 'rename', lambda source, target: renames.append(os.fsdecode(target)) or real_rename(source, target))
    outcome = run(bulk({'shop.example.com': 'shop_green', 'new.example.com': 'new_green'},
                       persist=True, map_file=str(path)))
    assert not outcome.failed, outcome.result['msg']
    assert renames == [str(path)]
    assert path.read_bytes() == (b'# switch\r\nactive backend_blue\r\nshop.example.com shop_green\r\n'
                                 b'new.example.com new_green\r\n')
    assert outcome.result['persisted'] is True and outcome.result['disk_changed'] is True


def test_persist_keeps_the_map_files_owner_mode_and_extended_attributes(haproxy, tmp_path):
    # The commit goes through AnsibleModule.atomic_move (issue 16): on EL9 the SELinux
    # context travels the same way as this user.* attribute.
    path = tmp_path / 'bluegreen.map'
    path.write_bytes(b'active backend_blue\nshop.example.com shop_blue\n')
    os.chmod(path, 0o640)
    os.chown(path, 4321, 4322)
    os.setxattr(path, 'user.bluegreen.origin', b'provisioned')
    outcome = run(bulk({'shop.example.com': 'shop_green'}, persist=True, map_file=str(path)))
    assert not outcome.failed, outcome.result['msg']
    assert b'shop.example.com shop_green' in path.read_bytes()
    after = os.stat(path)
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == (0o640, 4321, 4322)
    assert os.getxattr(path, 'user.bluegreen.origin') == b'provisioned'


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


# -- the compare-and-set at the instant (issue 13, finding 1) ------------


@pytest.fixture
def hand_during_lead(monkeypatch):
    """`hand_during_lead(change)`: `change()` runs while the armed switch waits for its instant."""
    def arm(change):
        def wait(instant, clock=None, sleep=None):
            change()
        monkeypatch.setattr(maps, 'wait_until', wait)
    return arm


def set_by_hand(haproxy, key, value):
    """What a person's `set map` / `add map` on another connection does to the live map."""
    fake = haproxy.maps[MAP]
    if any(entry_key == key for entry_key, _value in fake.entries):
        fake.entries = [(k, value if k == key else v) for k, v in fake.entries]
    else:
        fake.entries.append((key, value))


def delete_by_hand(haproxy, key):
    haproxy.maps[MAP].entries = [(k, v) for k, v in haproxy.maps[MAP].entries if k != key]


def test_single_key_moved_during_the_lead_is_refused_at_the_instant(haproxy, hand_during_lead):
    hand_during_lead(lambda: set_by_hand(haproxy, 'active', 'backend_canary'))
    outcome = run(single(expected_value='backend_blue', switch_at=time.time() + 1))
    assert outcome.failed
    message = outcome.result['msg']
    assert "its live value is 'backend_canary', expected backend_blue" in message, message
    assert 'at the instant of the switch' in message and message.endswith('nothing was changed')
    assert haproxy.values(MAP)['active'] == 'backend_canary' and haproxy.writes == []
    result = outcome.result
    # The report is what HAProxy holds, never the expectation.
    assert result['previous_value'] == 'backend_canary' and result['value'] == 'backend_canary'
    assert result['previous'] == result['runtime_entries'] == {'active': 'backend_canary'}
    assert result['refused'] is True and result['changed'] is False and result['switched_at'] is None
    assert result['conflicts'] == {'active': {'expected': 'backend_blue', 'live': 'backend_canary'}}


def test_single_key_removed_during_the_lead_is_refused_and_not_added_back(haproxy, hand_during_lead):
    """An absent key is never the expected value (a mutation accepting None must fail here)."""
    hand_during_lead(lambda: delete_by_hand(haproxy, 'active'))
    outcome = run(single(expected_value='backend_blue', switch_at=time.time() + 1))
    assert outcome.failed and "its live value is absent, expected backend_blue" in outcome.result['msg']
    assert 'active' not in haproxy.values(MAP) and haproxy.writes == []
    assert outcome.result['previous_value'] is None and outcome.result['refused'] is True


def test_compare_and_set_on_an_absent_key_is_refused_when_planned(haproxy):
    outcome = run(dict(map=MAP, key='canary', value='backend_green', expected_value='backend_blue'))
    assert outcome.failed and "canary" in outcome.result['msg']
    assert "its live value is absent, expected backend_blue; nothing was changed" in outcome.result['msg']
    assert haproxy.writes == [] and 'canary' not in haproxy.values(MAP)
    assert outcome.result['refused'] is True and outcome.result['previous_value'] is None
    assert outcome.result['runtime_entries'] == {'canary': None}


def test_refusal_when_planned_reports_the_live_value(haproxy):
    outcome = run(single(expected_value='backend_canary'))
    assert outcome.failed and outcome.result['refused'] is True
    assert outcome.result['previous_value'] == outcome.result['value'] == 'backend_blue'
    assert outcome.result['runtime_entries'] == {'active': 'backend_blue'}


def test_without_compare_and_set_the_switch_goes_from_what_is_live_at_the_instant(haproxy, hand_during_lead):
    hand_during_lead(lambda: delete_by_hand(haproxy, 'active'))
    outcome = run(single(switch_at=time.time() + 1))
    assert not outcome.failed, outcome.result['msg']
    # Planned as a `set map`, which fails on an absent key: the instant's read makes it an `add map`.
    assert haproxy.writes == ['add map'] and haproxy.values(MAP)['active'] == 'backend_green'
    assert outcome.result['previous_value'] is None and outcome.result['value'] == 'backend_green'


def test_key_already_at_its_goal_at_the_instant_sends_nothing(haproxy, hand_during_lead):
    hand_during_lead(lambda: set_by_hand(haproxy, 'active', 'backend_green'))
    outcome = run(single(expected_value='backend_blue', switch_at=time.time() + 1))
    assert not outcome.failed and outcome.result['changed'] is False, outcome.result
    assert haproxy.writes == [] and outcome.result['switched_at'] is None
    assert outcome.result['previous_value'] == 'backend_green'


def test_the_instant_read_and_the_write_share_one_connection(haproxy, monkeypatch):
    sessions = []
    real = fake_map_haproxy.FakeClient.session

    def session(self):
        opened = real(self)
        sessions.append(opened)
        return opened

    monkeypatch.setattr(fake_map_haproxy.FakeClient, 'session', session)
    outcome = run(single(expected_value='backend_blue'))
    assert not outcome.failed and len(sessions) == 1
    lines = [line for _stamp, line in haproxy.log]
    switch = lines.index('set map %s active backend_green' % MAP)
    assert lines[switch - 1] == 'get map %s active' % MAP, lines


@pytest.mark.parametrize('change,key,armed,live', [
    (lambda fake: set_by_hand(fake, 'brand-new.example.com', 'new_backend'), 'brand-new.example.com', None,
     'new_backend'),
    (lambda fake: set_by_hand(fake, 'legacy', 'backend_hand'), 'legacy', 'backend_old', 'backend_hand'),
    (lambda fake: delete_by_hand(fake, 'legacy'), 'legacy', 'backend_old', None),
    (lambda fake: set_by_hand(fake, 'api.example.com', 'api_hand'), 'api.example.com', 'api_blue', 'api_hand'),
], ids=['added', 'unlisted-moved', 'unlisted-removed', 'listed-moved'])
def test_bulk_switch_refuses_when_the_map_moved_during_the_lead(haproxy, hand_during_lead, change, key, armed, live):
    """The staged version was built from the map as it was when armed: committing it would undo the hand."""
    hand_during_lead(lambda: change(haproxy))
    outcome = run(bulk(switch_at=time.time() + 1))
    assert outcome.failed
    message = outcome.result['msg']
    assert '%s was %s when the switch was armed, is %s now' % (
        key, "'%s'" % armed if armed else 'absent', "'%s'" % live if live else 'absent') in message, message
    assert 'nothing was changed (the new version was not committed)' in message
    assert 'commit map' not in haproxy.writes
    assert haproxy.values(MAP).get(key) == live, 'the hand\'s change is still live'
    result = outcome.result
    assert result['refused'] is True and result['changed'] is False and result['switched_at'] is None
    assert result['conflicts'][key] == {'expected': armed, 'live': live}
    assert result['runtime_entries'] == result['previous'] == {
        name: haproxy.values(MAP).get(name) for name in ('shop.example.com', 'api.example.com')}


def test_bulk_key_put_at_its_goal_by_a_hand_is_not_a_conflict(haproxy, hand_during_lead):
    hand_during_lead(lambda: set_by_hand(haproxy, 'api.example.com', 'api_green'))
    outcome = run(bulk(switch_at=time.time() + 1))
    assert not outcome.failed, outcome.result['msg']
    assert haproxy.values(MAP)['shop.example.com'] == 'shop_green'


# -- a lost reply after a write (finding 10) ------------------------------


@pytest.fixture
def served(tmp_path):
    """The fake HAProxy on a real unix socket, reached by the module's real client."""
    fake = FakeHAProxy({MAP: list(LIVE)})
    server = RuntimeServer(fake, str(tmp_path / 'admin.sock'))
    server.start()
    yield fake, server
    server.stop()


@pytest.fixture
def warnings_given(monkeypatch):
    """Every module.warn() of the run (Ansible's own store depends on global state)."""
    given = []
    monkeypatch.setattr(haproxy_map.AnsibleModule, 'warn', lambda self, warning: given.append(warning))
    return given


@pytest.mark.parametrize('args,verb,key,goal', [
    (single(), 'set map', 'active', 'backend_green'),
    (bulk(), 'commit map', 'api.example.com', 'api_green'),
], ids=['single', 'bulk'])
def test_reply_lost_after_haproxy_applied_the_change_reports_the_read_back(
        served, warnings_given, args, verb, key, goal):
    fake, server = served
    server.drop_reply = {verb}
    outcome = run(dict(args, socket=server.path))
    assert server.dropped, 'the reply was dropped'
    assert not outcome.failed, outcome.result['msg']
    assert outcome.result['changed'] is True and outcome.result['runtime_changed'] is True
    assert outcome.result['runtime_entries'][key] == goal == fake.values(MAP)[key]
    assert any("was lost" in warning and "the change was applied" in warning for warning in warnings_given)


def test_reply_lost_and_the_change_not_applied_says_nothing_was_changed(served, monkeypatch):
    fake, server = served
    server.drop_reply = {'set map'}
    real = fake.exchange
    # HAProxy closed the connection before running the command: nothing moved.
    monkeypatch.setattr(fake, 'exchange', lambda text: '' if text.startswith('set map') else real(text))
    outcome = run(single(socket=server.path))
    assert outcome.failed
    assert 'was lost' in outcome.result['msg'] and outcome.result['msg'].endswith('nothing was changed')
    assert outcome.result['changed'] is False and outcome.result['runtime_entries'] == {'active': 'backend_blue'}
    assert outcome.result['switched_at'] is None


def test_reply_lost_and_read_back_failing_says_the_state_is_unknown(served):
    fake, server = served
    server.drop_reply = {'set map'}
    server.refuse_after_drop = True  # the socket goes away with the reply
    outcome = run(single(socket=server.path))
    assert outcome.failed
    message = outcome.result['msg']
    assert 'unknown' in message and "get map %s active" % MAP in message and server.path in message, message
    assert 'nothing was changed' not in message
    assert fake.values(MAP)['active'] == 'backend_green', 'HAProxy did apply it'
    result = outcome.result
    assert result['changed'] is True and result['runtime_unknown'] is True and result['runtime_entries'] is None
    assert result['value'] is None and result['switched_at'] is not None


# -- the socket's level (finding 9) --------------------------------------


@pytest.mark.parametrize('level', ['user', 'operator'])
def test_socket_below_admin_is_refused_before_any_change(haproxy, level):
    haproxy.level = level
    outcome = run(single(persist=False))
    assert outcome.failed
    assert 'is at level %s' % level in outcome.result['msg']
    assert "'stats socket /run/haproxy/admin.sock ... level admin'" in outcome.result['msg']
    assert haproxy.writes == [] and [line for _stamp, line in haproxy.log] == ['show cli level']


def test_haproxy_without_show_cli_level_is_not_refused(haproxy):
    haproxy.level = None  # `show cli level` answers "Unknown command" (before 2.0)
    assert not run(single()).failed
    assert haproxy.writes == ['set map']


# -- what the read-back and the map file hold (findings 8 and 9) -----------


@pytest.mark.parametrize('value', ['backend\u2028green', 'backend\x85green', 'green\x0cx\x1ey\u2029z'],
                         ids=['U+2028', 'U+0085', 'FF-RS-U+2029'])
def test_value_with_unicode_line_separators_round_trips(haproxy, disk, value):
    outcome = run(single(value, persist=True, map_file=str(disk)))
    assert not outcome.failed, outcome.result['msg']
    assert outcome.result['value'] == value and haproxy.values(MAP)['active'] == value
    assert outcome.result['disk_value'] == value
    again = run(single(value, persist=True, map_file=str(disk)))
    assert again.result['changed'] is False, 'the read-back and the file both hold the value'


def test_latin1_comment_in_the_map_file_is_kept_and_the_key_is_found(haproxy, tmp_path):
    path = tmp_path / 'latin1.map'
    path.write_bytes(b'# caf\xe9 switch (latin-1)\nactive backend_blue\n')
    outcome = run(single(persist=True, map_file=str(path)))
    assert not outcome.failed, outcome.result['msg']
    assert outcome.result['previous_disk_value'] == 'backend_blue', 'never reported absent'
    assert path.read_bytes() == b'# caf\xe9 switch (latin-1)\nactive backend_green\n'
    runtime_only = run(single('backend_blue', map_file=str(path)))
    assert runtime_only.result['previous_disk_value'] == 'backend_green'


@pytest.mark.parametrize('persist', [True, False])
def test_non_utf8_entry_line_is_refused_naming_the_offset(haproxy, tmp_path, persist):
    path = tmp_path / 'latin1.map'
    path.write_bytes(b'# switch\nactive backend_blue\ncaf\xe9 backend_x\n')
    outcome = run(single(persist=persist, map_file=str(path)))
    assert outcome.failed
    message = outcome.result['msg']
    assert 'line 3 (byte offset 32)' in message and '0xe9' in message and 'not UTF-8' in message, message
    assert 'nothing was changed' in message and haproxy.writes == []


# -- restoring after a failed rename ----------------------------------------


def immutable_rename(monkeypatch, then=None):
    def rename(source, target):
        if then:
            then()
        raise PermissionError(errno.EPERM, 'Operation not permitted')
    monkeypatch.setattr(map_file.os, 'rename', rename)


def test_failed_rename_whose_restore_fails_too_says_runtime_has_the_new_value(haproxy, disk, monkeypatch):
    immutable_rename(monkeypatch, lambda: haproxy.fail_commands.update({'set map': 'Permission denied\n\n'}))
    outcome = run(single(persist=True, map_file=str(disk)))
    assert outcome.failed
    assert 'restoring the previous runtime values failed too' in outcome.result['msg']
    assert 'the live values are now the new ones' in outcome.result['msg']
    assert haproxy.values(MAP)['active'] == 'backend_green'
    assert outcome.result['changed'] is True and outcome.result['value'] == 'backend_green'


def test_failed_rename_whose_restore_is_not_served_says_what_is(haproxy, disk, monkeypatch):
    immutable_rename(monkeypatch, lambda: setattr(haproxy, 'lie_after_write', {'active': 'backend_other'}))
    outcome = run(single(persist=True, map_file=str(disk)))
    assert outcome.failed
    assert "restoring the previous runtime values left {'active': 'backend_other'}" in outcome.result['msg']
    assert outcome.result['changed'] is True and outcome.result['value'] == 'backend_other'
