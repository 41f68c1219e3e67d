"""The master CLI parsers, fed with `show proc` and `reload` replies captured from HAProxy 2.6 and 3.0."""

from __future__ import annotations

import os

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils.master_cli import (
    describe_processes,
    parse_reload_reply,
    parse_show_proc,
    reload_confirmed,
)

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "fixtures")
VERSIONS = ["2.6", "3.0"]


def fixture(version, name):
    with open(os.path.join(FIXTURES, "haproxy-" + version, name), newline="") as handle:
        return handle.read()


@pytest.mark.parametrize("version", VERSIONS)
def test_show_proc_lists_master_and_current_worker(version):
    proc = parse_show_proc(fixture(version, "master_show_proc.txt"))
    assert proc["master"]["type"] == "master"
    assert proc["master"]["failed"] == 0
    assert proc["master"]["version"].startswith(version + ".")
    assert len(proc["workers"]) == 1
    assert proc["workers"][0]["pid"] != proc["master"]["pid"]
    facts = describe_processes(proc)
    assert facts["workers"] == [proc["workers"][0]["pid"]] and facts["failed_reloads"] == 0


@pytest.mark.parametrize("version", VERSIONS)
def test_reload_is_confirmed_by_a_new_worker_and_refused_by_the_failure_counter(version):
    before = parse_show_proc(fixture(version, "master_show_proc.txt"))
    after = parse_show_proc(fixture(version, "master_show_proc_after_reload.txt"))
    failed = parse_show_proc(fixture(version, "master_show_proc_reload_failed.txt"))
    assert reload_confirmed(before, before) is None, "not reloaded yet: keep polling"
    assert after["master"]["reloads"] > before["master"]["reloads"]
    assert reload_confirmed(before, after) is True
    assert failed["master"]["failed"] >= 1
    assert reload_confirmed(after, failed) is False


def test_reload_reply_is_empty_on_26_and_says_success_from_27():
    assert parse_reload_reply(fixture("2.6", "master_reload.txt")) == (None, "")
    assert parse_reload_reply(fixture("3.0", "master_reload.txt"))[0] is True
    status, detail = parse_reload_reply(fixture("3.0", "master_reload_failed.txt"))
    assert status is False
    assert "ALERT" in detail


def test_show_proc_without_master_line_has_no_master():
    assert parse_show_proc("")["master"] is None
    assert describe_processes(parse_show_proc("")) == {}
