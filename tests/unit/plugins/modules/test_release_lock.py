# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the release_lock module: options in, record on disk, result out."""

from __future__ import annotations

import json
import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.modules import release_lock  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import argument_spec_of, run_main  # noqa: E402


def run(args, check=False):
    return run_main(release_lock.main, args, check=check)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'bluegreen.map.lock')


def on_disk(path):
    with open(path) as handle:
        return json.load(handle)


RUN = dict(controller='ctl1', controller_pid=31337, started='2026-11-27T14:01:00Z', phase='PRECHECK',
           map='/etc/haproxy/maps/bluegreen.map', key='active', previous='backend_blue', target='backend_green')


def test_take_records_every_run_field(path):
    outcome = run(dict(path=path, owner='job-1', details=dict(ticket='CHG-7'), **RUN))
    assert not outcome.failed, outcome.result
    result = outcome.result
    assert (result['changed'], result['taken_over'], result['previous_holder']) == (True, False, None)
    holder = on_disk(path)
    assert holder == result['holder']
    for name, value in RUN.items():
        assert holder[name] == value
    assert holder['ticket'] == 'CHG-7'
    assert holder['owner'] == 'job-1'
    assert 'pid' not in holder


def test_bulk_values_are_recorded_as_given(path):
    previous = dict(active='backend_blue', api='backend_blue')
    target = dict(active='backend_green', api='backend_green')
    run(dict(path=path, owner='job-1', key=['active', 'api'], previous=previous, target=target))
    holder = on_disk(path)
    assert (holder['key'], holder['previous'], holder['target']) == (['active', 'api'], previous, target)


def test_owner_updates_phase_and_nothing_else(path):
    run(dict(path=path, owner='job-1', **RUN))
    taken = on_disk(path)
    updated = run(dict(path=path, owner='job-1', phase='SWITCH'))
    assert not updated.failed, updated.result
    assert (updated.result['changed'], updated.result['taken_over']) == (True, False)
    assert on_disk(path) == dict(taken, phase='SWITCH')
    same = run(dict(path=path, owner='job-1', phase='SWITCH'))
    assert same.result['changed'] is False


def test_another_owner_is_refused_with_the_record(path):
    run(dict(path=path, owner='job-1', **RUN))
    taken = on_disk(path)
    refused = run(dict(path=path, owner='job-2', phase='PRECHECK'))
    assert refused.failed
    assert refused.result['changed'] is False
    assert refused.result['holder'] == taken
    assert "held by job-1" in refused.result['msg']
    assert '(controller ctl1 pid 31337, phase PRECHECK)' in refused.result['msg']
    assert 'release_lock_force=true' in refused.result['msg']
    assert on_disk(path) == taken

    released = run(dict(path=path, owner='job-2', state='absent'))
    assert released.failed
    assert 'so the lock cannot be released' in released.result['msg']
    assert on_disk(path) == taken


def test_force_takes_over_and_force_releases(path):
    run(dict(path=path, owner='job-1', **RUN))
    taken = run(dict(path=path, owner='job-2', force=True, phase='ROLLBACK'))
    assert not taken.failed
    assert (taken.result['changed'], taken.result['taken_over']) == (True, True)
    assert taken.result['previous_holder']['owner'] == 'job-1'
    assert on_disk(path)['owner'] == 'job-2'
    released = run(dict(path=path, owner='job-3', state='absent', force=True))
    assert (released.failed, released.result['changed'], released.result['holder']) == (False, True, None)
    assert not os.path.exists(path)


def test_owner_releases_then_nothing_to_release(path):
    run(dict(path=path, owner='job-1'))
    first = run(dict(path=path, owner='job-1', state='absent'))
    assert (first.failed, first.result['changed']) == (False, True)
    assert not os.path.exists(path)
    second = run(dict(path=path, owner='job-1', state='absent'))
    assert (second.failed, second.result['changed'], second.result['previous_holder']) == (False, False, None)


def test_stale_after_option(path):
    with open(path, 'w') as handle:
        json.dump(dict(owner='job-1', acquired_epoch=1.0), handle)
    taken = run(dict(path=path, owner='job-2', stale_after=3600))
    assert not taken.failed, taken.result
    assert taken.result['taken_over'] is True


def test_check_mode(path):
    outcome = run(dict(path=path, owner='job-1', **RUN), check=True)
    assert (outcome.failed, outcome.result['changed']) == (False, True)
    assert not os.path.exists(path)


def test_details_cannot_set_the_owner(path):
    outcome = run(dict(path=path, owner='job-1', details=dict(owner='job-2')))
    assert outcome.failed
    assert outcome.result['msg'] == 'details cannot set owner: ownership changes only by taking the lock'
    assert not os.path.exists(path)


def test_unwritable_directory_is_reported(tmp_path):
    outcome = run(dict(path=str(tmp_path / 'missing-dir' / 'x.lock'), owner='job-1'))
    assert outcome.failed
    assert outcome.result['msg'].startswith('cannot change release lock %s' % (tmp_path / 'missing-dir' / 'x.lock'))
    assert 'directory writable' in outcome.result['msg']


def test_the_lock_options_come_from_the_shared_helper_unchanged(monkeypatch):
    """path, owner, force and stale_after are release_step's lock suboptions too, the owner required here."""
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import lock_argument_spec

    assert lock_argument_spec() == dict(
        path=dict(type="path", required=True),
        owner=dict(type="str"),
        force=dict(type="bool", default=False),
        stale_after=dict(type="int", default=0),
    )
    spec = argument_spec_of(release_lock, monkeypatch)
    assert dict((name, spec[name]) for name in ("path", "force", "stale_after")) == dict(
        (name, lock_argument_spec()[name]) for name in ("path", "force", "stale_after"))
    assert spec["owner"] == dict(type="str", required=True)
