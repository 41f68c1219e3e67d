# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the release lock (module_utils/lock.py), including real processes racing for it.

Each guard has a test that fails when the guard is removed: exclusive link() on creation
(test_create_lock_never_overwrites, the races), the owner check on release
(test_release_by_another_owner_is_refused), the stale_after comparison
(test_stale_after_takes_over_only_older_locks), ownership kept on update
(test_owner_update_keeps_ownership).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))

from ansible_collections.bluegreen.haproxy.plugins.module_utils import lock  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import (  # noqa: E402
    LockHeldError,
    LockOptionError,
)

NOW = 1795788062.0
RUN = dict(controller='ctl1', controller_pid=31337, started='2026-11-27T14:01:00Z', phase='PRECHECK',
           map='/etc/haproxy/maps/bluegreen.map', key='active', previous='backend_blue', target='backend_green')


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'bluegreen.map.lock')


def write(path, record):
    with open(path, 'w') as handle:
        json.dump(record, handle)


def on_disk(path):
    with open(path) as handle:
        return json.load(handle)


def test_take_a_free_lock_records_the_run(path):
    result = lock.acquire(path, 'job-1', dict(RUN, ticket='CHG-7'), now=NOW)
    assert result['changed'] is True
    assert result['taken_over'] is False
    assert result['previous_holder'] is None
    assert on_disk(path) == result['holder']
    assert list(result['holder']) == ['owner', 'controller', 'controller_pid', 'started', 'acquired',
                                      'acquired_epoch', 'phase', 'map', 'key', 'previous', 'target', 'ticket']
    assert result['holder']['owner'] == 'job-1'
    assert result['holder']['acquired'] == '2026-11-27T14:01:02Z'
    assert result['holder']['acquired_epoch'] == NOW
    # The module is a short-lived process on the node: its pid says nothing about the run.
    assert 'pid' not in result['holder']
    assert oct(os.stat(path).st_mode & 0o777) == '0o644'


def test_started_defaults_to_the_time_the_lock_was_taken(path):
    holder = lock.acquire(path, 'job-1', now=NOW)['holder']
    assert holder == dict(owner='job-1', started='2026-11-27T14:01:02Z', acquired='2026-11-27T14:01:02Z',
                          acquired_epoch=NOW)


def test_create_lock_never_overwrites(path):
    """The exclusive-create guard: creating an existing lock fails and leaves the holder's record."""
    write(path, dict(owner='job-1'))
    assert lock.create_lock(path, dict(owner='job-2')) is False
    assert on_disk(path) == dict(owner='job-1')


def test_create_after_a_read_that_saw_no_lock_is_refused(path, monkeypatch):
    """Two runs both read 'no lock'; the one that creates second is refused, not silently winning."""
    write(path, dict(owner='job-1', acquired_epoch=NOW))
    real_read = lock.read_lock
    reads = []

    def first_read_saw_no_lock(p):
        reads.append(p)
        return None if len(reads) == 1 else real_read(p)

    monkeypatch.setattr(lock, 'read_lock', first_read_saw_no_lock)
    with pytest.raises(LockHeldError) as raised:
        lock.acquire(path, 'job-2', now=NOW)
    assert raised.value.holder['owner'] == 'job-1'
    assert on_disk(path)['owner'] == 'job-1'


def test_another_owner_is_refused_and_told_who_holds_it(path):
    lock.acquire(path, 'job-1', RUN, now=NOW)
    before = on_disk(path)
    with pytest.raises(LockHeldError) as raised:
        lock.acquire(path, 'job-2', dict(RUN, phase='LOCK'), now=NOW + 93)
    assert str(raised.value) == (
        "release lock %s is held by job-1 since 2026-11-27T14:01:02Z (%s ago) "
        "(controller ctl1 pid 31337, phase PRECHECK): another release of this map is in progress, so the lock "
        "cannot be taken. If that run is gone, take it over with force (playbooks: -e release_lock_force=true) "
        "or remove the file"
        % (path, lock.describe_age(before))
    )
    assert on_disk(path) == before


def test_unreadable_record_is_held_by_an_unknown_owner(path):
    with open(path, 'w') as handle:
        handle.write('{half a rec')
    with pytest.raises(LockHeldError) as raised:
        lock.acquire(path, 'job-2', stale_after=1, now=NOW)
    assert 'an unknown owner (unreadable lock record)' in str(raised.value)
    assert lock.lock_info(path) == dict(held=True, holder={}, age=None)
    # force still works: the operator decided the holder is gone.
    assert lock.acquire(path, 'job-2', force=True, now=NOW)['taken_over'] is True


def test_owner_update_keeps_ownership(path):
    lock.acquire(path, 'job-1', RUN, now=NOW)
    taken = on_disk(path)
    inode = os.stat(path).st_ino

    result = lock.acquire(path, 'job-1', dict(phase='SWITCH', switched_at=12.5), now=NOW + 50)
    assert result['changed'] is True
    assert result['taken_over'] is False
    assert result['previous_holder'] == taken
    holder = on_disk(path)
    assert holder == result['holder']
    assert holder['phase'] == 'SWITCH' and holder['switched_at'] == 12.5
    for name in ('owner', 'acquired', 'acquired_epoch', 'controller', 'controller_pid', 'started', 'target'):
        assert holder[name] == taken[name], name
    # Written beside the lock and renamed over it: a new inode, no temp file left.
    assert os.stat(path).st_ino != inode
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)]

    again = lock.acquire(path, 'job-1', dict(phase='SWITCH'), now=NOW + 60)
    assert again['changed'] is False
    assert on_disk(path) == holder


def test_details_cannot_change_ownership(path):
    lock.acquire(path, 'job-1', now=NOW)
    for field in lock.OWNERSHIP_FIELDS:
        with pytest.raises(LockOptionError) as raised:
            lock.run_fields(dict(phase='SWITCH'), {field: 'job-2'})
        assert str(raised.value) == 'details cannot set %s: ownership changes only by taking the lock' % field
    # Even if a caller built the facts by hand, the update keeps the owner and the time taken.
    holder = lock.acquire(path, 'job-1', dict(owner='job-2', acquired_epoch=1.0), now=NOW)['holder']
    assert (holder['owner'], holder['acquired_epoch']) == ('job-1', NOW)
    assert on_disk(path)['owner'] == 'job-1'


def test_named_fields_win_over_details_and_none_is_not_recorded():
    facts = lock.run_fields(dict(phase='SWITCH', target=None), dict(phase='LOCK', target='backend_green', extra=1))
    assert facts == dict(phase='SWITCH', target='backend_green', extra=1)


def test_update_refused_when_the_lock_was_forced_away_meanwhile(path, monkeypatch):
    lock.acquire(path, 'job-1', now=NOW)
    real_read = lock.read_lock
    reads = []

    def forced_away_after_first_read(p):
        reads.append(p)
        if len(reads) == 2:  # between our read and our write, job-2 forced the lock
            lock.replace_lock(p, dict(owner='job-2', acquired_epoch=NOW + 1))
        return real_read(p)

    monkeypatch.setattr(lock, 'read_lock', forced_away_after_first_read)
    with pytest.raises(LockHeldError) as raised:
        lock.acquire(path, 'job-1', dict(phase='SWITCH'), now=NOW)
    assert 'so the lock cannot be updated' in str(raised.value)
    assert on_disk(path) == dict(owner='job-2', acquired_epoch=NOW + 1)


@pytest.mark.parametrize('age, stale_after, taken', [
    (100, 50, True),     # older than stale_after: stale
    (10, 50, False),     # younger: still held
    (50, 50, False),     # exactly stale_after is not yet older
    (10 ** 6, 0, False),  # 0: never stale
])
def test_stale_after_takes_over_only_older_locks(path, age, stale_after, taken):
    write(path, dict(owner='job-1', acquired_epoch=NOW - age))
    assert lock.is_stale(dict(acquired_epoch=NOW - age), stale_after, now=NOW) is taken
    if taken:
        result = lock.acquire(path, 'job-2', stale_after=stale_after, now=NOW)
        assert (result['changed'], result['taken_over']) == (True, True)
        assert result['previous_holder']['owner'] == 'job-1'
        assert on_disk(path)['owner'] == 'job-2'
    else:
        with pytest.raises(LockHeldError):
            lock.acquire(path, 'job-2', stale_after=stale_after, now=NOW)
        assert on_disk(path)['owner'] == 'job-1'


def test_no_readable_age_is_never_stale(path):
    write(path, dict(owner='job-1'))
    with pytest.raises(LockHeldError):
        lock.acquire(path, 'job-2', stale_after=1, now=NOW)


def test_force_takes_over_any_lock(path):
    lock.acquire(path, 'job-1', RUN, now=NOW)
    result = lock.acquire(path, 'job-2', dict(phase='ROLLBACK'), force=True, now=NOW + 5)
    assert (result['changed'], result['taken_over']) == (True, True)
    assert on_disk(path)['owner'] == 'job-2'
    assert on_disk(path)['acquired_epoch'] == NOW + 5
    # The new owner's record does not inherit the dead run's facts.
    assert 'target' not in on_disk(path)


def test_check_mode_changes_nothing(path):
    assert lock.acquire(path, 'job-1', check_mode=True, now=NOW)['changed'] is True
    assert not os.path.exists(path)
    lock.acquire(path, 'job-1', now=NOW)
    before = on_disk(path)
    assert lock.acquire(path, 'job-1', dict(phase='SWITCH'), check_mode=True)['changed'] is True
    assert lock.acquire(path, 'job-2', force=True, check_mode=True)['taken_over'] is True
    assert lock.release(path, 'job-1', check_mode=True)['changed'] is True
    assert on_disk(path) == before


def test_release_by_the_owner(path):
    lock.acquire(path, 'job-1', now=NOW)
    taken = on_disk(path)
    result = lock.release(path, 'job-1')
    assert result == dict(changed=True, holder=None, previous_holder=taken, taken_over=False)
    assert not os.path.exists(path)
    assert lock.release(path, 'job-1') == dict(changed=False, holder=None, previous_holder=None, taken_over=False)


def test_release_by_another_owner_is_refused(path):
    """The owner guard: job-2 cannot release job-1's lock."""
    lock.acquire(path, 'job-1', RUN, now=NOW)
    before = on_disk(path)
    with pytest.raises(LockHeldError) as raised:
        lock.release(path, 'job-2')
    assert str(raised.value).startswith("release lock %s is held by job-1" % path)
    assert 'so the lock cannot be released' in str(raised.value)
    assert 'release it with force' in str(raised.value)
    assert on_disk(path) == before
    # An unreadable record has no owner to match either.
    with open(path, 'w') as handle:
        handle.write('')
    with pytest.raises(LockHeldError):
        lock.release(path, 'job-2')
    assert os.path.exists(path)


def test_release_with_force_removes_anyones_lock(path):
    lock.acquire(path, 'job-1', now=NOW)
    result = lock.release(path, 'job-2', force=True)
    assert result['changed'] is True and result['previous_holder']['owner'] == 'job-1'
    assert not os.path.exists(path)


def test_release_keeps_a_lock_forced_away_meanwhile(path, monkeypatch):
    lock.acquire(path, 'job-1', now=NOW)
    real_read = lock.read_lock
    reads = []

    def forced_away(p):
        reads.append(p)
        if len(reads) == 2:
            lock.replace_lock(p, dict(owner='job-2', acquired_epoch=NOW + 1))
        return real_read(p)

    monkeypatch.setattr(lock, 'read_lock', forced_away)
    with pytest.raises(LockHeldError):
        lock.release(path, 'job-1')
    assert on_disk(path)['owner'] == 'job-2'


def test_lock_info(path):
    assert lock.lock_info(path) == dict(held=False, holder=None, age=None)
    lock.acquire(path, 'job-1', RUN, now=NOW)
    info = lock.lock_info(path, now=NOW + 93.4567)
    assert info == dict(held=True, holder=on_disk(path), age=93.457)


def test_empty_owner_is_refused(path):
    with pytest.raises(LockOptionError):
        lock.acquire(path, '')
    assert not os.path.exists(path)


def test_message_quotes_a_short_prefix_of_a_long_owner(path):
    write(path, dict(owner='x' * 5000, acquired_epoch=NOW))
    with pytest.raises(LockHeldError) as raised:
        lock.acquire(path, 'job-2', now=NOW)
    assert len(str(raised.value)) < 600


# -- real processes racing for one lock ---------------------------------------------------------

ROUNDS = 60
RACERS = 4


def _racer(path, owner, barrier, results, use_create_only):
    barrier.wait()
    try:
        if use_create_only:
            won = lock.create_lock(path, lock.new_record(owner, {}))
        else:
            lock.acquire(path, owner)
            won = True
    except LockHeldError as refused:
        # A loser must see the winner's whole record, never an empty lock.
        won = refused.holder.get('owner') or 'unknown'
    results.put((owner, won))


def race(tmp_path, use_create_only):
    context = multiprocessing.get_context('fork')
    for round_number in range(ROUNDS):
        path = str(tmp_path / ('round%d.lock' % round_number))
        barrier = context.Barrier(RACERS)
        results = context.Queue()
        racers = [context.Process(target=_racer, args=(path, 'job-%d' % index, barrier, results, use_create_only))
                  for index in range(RACERS)]
        for racer in racers:
            racer.start()
        outcome = dict(results.get(timeout=30) for dummy in racers)
        for racer in racers:
            racer.join(timeout=30)
            assert racer.exitcode == 0
        winners = sorted(owner for owner, won in outcome.items() if won is True)
        assert len(winners) == 1, "round %d: %s all took the lock" % (round_number, winners)
        assert on_disk(path)['owner'] == winners[0], "round %d: the file names another owner" % round_number
        if not use_create_only:
            seen = dict((owner, won) for owner, won in outcome.items() if won is not True)
            assert set(seen.values()) == {winners[0]}, "round %d: losers saw %s" % (round_number, seen)
    assert sorted(os.listdir(str(tmp_path))) == sorted('round%d.lock' % n for n in range(ROUNDS)), \
        "temporary record files were left behind"


def test_racing_processes_exactly_one_creates(tmp_path):
    """RACERS processes released together by a barrier call create_lock; one wins each round."""
    race(tmp_path, use_create_only=True)


def test_racing_processes_exactly_one_acquires(tmp_path):
    """The same race through acquire() (read, then create): still exactly one owner per round."""
    race(tmp_path, use_create_only=False)
