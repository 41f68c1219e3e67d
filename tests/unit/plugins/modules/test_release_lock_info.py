# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the release_lock_info module."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.modules import release_lock_info  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402


def run(args, check=False):
    return run_main(release_lock_info.main, args, check=check)


@pytest.fixture
def path(tmp_path):
    return str(tmp_path / 'bluegreen.map.lock')


def test_no_lock(path):
    outcome = run(dict(path=path))
    assert not outcome.failed
    assert outcome.result == dict(changed=False, held=False, holder=None, age=None)


@pytest.mark.parametrize('check', [False, True])
def test_held_lock_with_its_record_and_age(path, check):
    written = time.time()
    record = dict(owner='job-1', controller='ctl1', controller_pid=31337, acquired_epoch=written - 90,
                  phase='SWITCH', previous='backend_blue', target='backend_green')
    with open(path, 'w') as handle:
        json.dump(record, handle)
    outcome = run(dict(path=path), check=check)
    since_written = time.time() - written
    assert not outcome.failed
    assert (outcome.result['changed'], outcome.result['held'], outcome.result['holder']) == (False, True, record)
    assert 90 <= outcome.result['age'] <= 90 + since_written + 1, (outcome.result['age'], since_written)


def test_unreadable_record_is_held_by_nobody_known(path):
    with open(path, 'w') as handle:
        handle.write('')
    outcome = run(dict(path=path))
    assert outcome.result == dict(changed=False, held=True, holder={}, age=None)


def test_unreadable_file_is_an_error(tmp_path):
    directory = tmp_path / 'lock-as-dir'
    directory.mkdir()
    outcome = run(dict(path=str(directory)))
    assert outcome.failed
    assert outcome.result['msg'].startswith('cannot read release lock %s' % directory)
