# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for the haproxy_map_info module: the module run against a fake HAProxy (fake_map_haproxy)."""

from __future__ import annotations

import os
import sys

import pytest

try:  # ansible-test puts the tree on the path
    import ansible_collections.bluegreen.haproxy  # noqa: F401  pylint: disable=unused-import
except ImportError:  # plain pytest from the repo root: use the `make collection` tree
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections'))


from ansible_collections.bluegreen.haproxy.plugins.module_utils import lock  # noqa: E402
from ansible_collections.bluegreen.haproxy.plugins.modules import haproxy_map_info  # noqa: E402

from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy  # noqa: E402
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.module_runner import run_main  # noqa: E402

MAP = '/etc/haproxy/maps/hosts.map'
LIVE = [('active', 'backend_green'), ('shop.example.com', 'shop_blue'), ('api.example.com', 'api_blue')]
DISK = '# hosts\nactive backend_blue\nshop.example.com   shop_blue\nold.example.com old_blue\n'


@pytest.fixture
def haproxy(monkeypatch):
    fake = FakeHAProxy({MAP: LIVE})
    monkeypatch.setattr(haproxy_map_info, 'RuntimeAPIClient', fake.client)
    return fake


@pytest.fixture
def disk(tmp_path):
    path = tmp_path / 'hosts.map'
    path.write_text(DISK)
    return str(path)


def run(args):
    return run_main(haproxy_map_info.main, args)


@pytest.mark.parametrize('keys,entries,disk_entries,drift_keys,missing', [
    (['shop.example.com'], {'shop.example.com': 'shop_blue'}, {'shop.example.com': 'shop_blue'}, [], []),
    (['active'], {'active': 'backend_green'}, {'active': 'backend_blue'}, ['active'], []),
    (['old.example.com', 'nope'], {}, {'old.example.com': 'old_blue'}, ['old.example.com'],
     ['old.example.com', 'nope']),
    (['api.example.com'], {'api.example.com': 'api_blue'}, {}, ['api.example.com'], []),
])
def test_keys_return_only_those_keys(haproxy, disk, keys, entries, disk_entries, drift_keys, missing):
    result = run(dict(map=MAP, map_file=disk, keys=keys)).result
    assert result['entries'] == entries
    assert result['disk_entries'] == disk_entries
    assert result['drift_keys'] == drift_keys and result['drift'] is bool(drift_keys)
    assert result['missing_keys'] == missing
    assert result['changed'] is False and result['map_id'] == 2


def test_keys_never_dump_the_map(haproxy, disk):
    run(dict(map=MAP, map_file=disk, keys=['active', 'shop.example.com']))
    dumps = [line for _stamp, line in haproxy.log if line.startswith('show map ')]
    assert dumps == [], dumps


def test_without_keys_the_whole_map_once_per_side(haproxy, disk):
    result = run(dict(map=MAP, map_file=disk)).result
    assert result['entries'] == dict(LIVE)
    assert result['disk_entries'] == {'active': 'backend_blue', 'shop.example.com': 'shop_blue',
                                      'old.example.com': 'old_blue'}
    assert result['drift_keys'] == ['active', 'api.example.com', 'old.example.com']
    assert 'runtime_entries' not in result, 'no second copy of the runtime map'
    assert result['missing_keys'] == []


def test_unreadable_file_gives_null_drift(haproxy, tmp_path):
    result = run(dict(map=MAP, map_file=str(tmp_path / 'missing.map'), keys=['active'])).result
    assert result['disk_entries'] is None and result['drift'] is None
    assert result['entries'] == {'active': 'backend_green'}


@pytest.mark.parametrize('key,words', [('two words', 'blank'), ('a\nb', 'LF'), ('#0x1', "'#'")])
def test_bad_keys_are_refused_before_any_command(haproxy, key, words):
    outcome = run(dict(map=MAP, keys=[key]))
    assert outcome.failed and outcome.result['msg'].startswith('invalid keys:') and words in outcome.result['msg']
    assert haproxy.log == []


def test_unknown_map_lists_loaded_maps(haproxy):
    outcome = run(dict(map='/nope.map', keys=['active']))
    assert outcome.failed and MAP in outcome.result['msg']


def test_lock_path_reports_the_release_lock_in_the_same_run(haproxy, disk, tmp_path):
    lock_file = tmp_path / 'hosts.map.lock'
    free = run(dict(map=MAP, map_file=disk, keys=['active'], lock_path=str(lock_file))).result
    assert free['lock'] == {'held': False, 'holder': None, 'age': None}
    assert free['entries'] == {'active': 'backend_green'}

    lock.acquire(str(lock_file), 'run-7', facts=dict(phase='switching', previous='backend_blue', target='backend_green'))
    held = run(dict(map=MAP, map_file=disk, keys=['active'], lock_path=str(lock_file))).result
    assert held['lock']['held'] is True and held['lock']['age'] >= 0
    assert (held['lock']['holder']['owner'], held['lock']['holder']['phase']) == ('run-7', 'switching')
    assert 'lock' not in run(dict(map=MAP, map_file=disk, keys=['active'])).result


def test_an_unreadable_lock_fails_naming_it(haproxy, disk, tmp_path):
    lock_dir = tmp_path / 'not-a-file.lock'
    lock_dir.mkdir()
    outcome = run(dict(map=MAP, map_file=disk, keys=['active'], lock_path=str(lock_dir)))
    assert outcome.failed and outcome.result['msg'].startswith('cannot read release lock %s: ' % lock_dir)


@pytest.mark.parametrize('keys', [None, ['active']], ids=['whole-map', 'keys'])
def test_latin1_comment_is_read_and_the_keys_are_found(haproxy, tmp_path, keys):
    path = tmp_path / 'latin1.map'
    path.write_bytes(b'# h\xf4tes (latin-1)\n' + DISK.encode())
    result = run(dict(map=MAP, map_file=str(path), keys=keys)).result
    assert result['disk_entries']['active'] == 'backend_blue', 'never reported absent'
    assert result['drift_keys'][:1] == ['active']


def test_non_utf8_entry_line_fails_naming_the_offset(haproxy, tmp_path):
    path = tmp_path / 'latin1.map'
    path.write_bytes(DISK.encode() + b'caf\xe9.example.com x\n')
    outcome = run(dict(map=MAP, map_file=str(path), keys=['active']))
    assert outcome.failed
    assert 'line 5 (byte offset %d)' % (len(DISK) + 3) in outcome.result['msg'] and 'not UTF-8' in outcome.result['msg']


def test_value_with_unicode_line_separators_is_read_whole(haproxy, tmp_path):
    haproxy.maps[MAP].entries.append(('odd', 'a\u2028b\x85c'))
    path = tmp_path / 'odd.map'
    path.write_bytes('odd a\u2028b\x85c\nactive backend_green\n'.encode())
    result = run(dict(map=MAP, map_file=str(path))).result
    assert result['entries']['odd'] == result['disk_entries']['odd'] == 'a\u2028b\x85c'
    assert 'odd' not in result['drift_keys']
