# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests for plugin_utils/collect.py: one look at an async job once it should be done, and
how a look judges the job's file (as the async_status module does)."""

from __future__ import annotations

import json
import os
import sys

_COLLECTIONS = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, '.collections')
if os.path.isdir(_COLLECTIONS):
    sys.path.insert(0, os.path.abspath(_COLLECTIONS))

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.collect import collect, job_result  # noqa: E402


class Job(object):
    """A fake job on a fake clock: finished from `done_at` on; records when it was looked at."""

    def __init__(self, done_at, now=100.0):
        self.now, self.done_at, self.looked_at = now, done_at, []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert seconds >= 0
        self.now += seconds

    def look(self):
        self.looked_at.append(self.now)
        self.now += 0.2  # a look costs time too
        if self.now >= self.done_at:
            return dict(ansible_job_id="j1", started=1, finished=1, changed=True)
        return dict(ansible_job_id="j1", started=1, finished=0)


def test_the_first_look_waits_until_the_job_should_be_done_and_is_the_only_one():
    job = Job(done_at=102.0)
    result, looks = collect(job.look, not_before=102.0, interval=0.5, timeout=10, clock=job.clock, sleep=job.sleep)
    assert (looks, job.looked_at, result["finished"]) == (1, [102.0], 1)


def test_a_job_still_running_is_looked_at_again_every_interval():
    job = Job(done_at=103.1)
    result, looks = collect(job.look, not_before=102.0, interval=0.5, timeout=10, clock=job.clock, sleep=job.sleep)
    assert looks == 3 and result["finished"] == 1
    assert [round(at, 1) for at in job.looked_at] == [102.0, 102.7, 103.4]


def test_a_time_already_past_looks_at_once():
    """A later batch of forks finds the instant past: no wait."""
    job = Job(done_at=90.0)
    result, looks = collect(job.look, not_before=95.0, clock=job.clock, sleep=job.sleep)
    assert (looks, job.looked_at) == (1, [100.0])


def test_a_job_that_does_not_finish_fails_naming_the_wait():
    job = Job(done_at=1000.0)
    result, looks = collect(job.look, not_before=None, interval=1.0, timeout=3, clock=job.clock, sleep=job.sleep)
    assert result["failed"] is True and result["finished"] == 0
    assert result["msg"] == "the async job j1 had not finished 3.0s after the first look at it"
    assert looks == 3


def test_a_job_whose_file_cannot_be_read_ends_the_wait():
    result, looks = collect(lambda: job_result(dict(rc=1, stdout="", stderr="cat: /r/.ansible_async/j1: No such file or directory\n"),
                                               "j1", "/r/.ansible_async/j1", json_result),
                            clock=lambda: 0.0, sleep=lambda seconds: None)
    assert looks == 1 and result["failed"] is True and result["finished"] is True
    assert result["msg"] == "could not read async job j1's file /r/.ansible_async/j1: cat: /r/.ansible_async/j1: No such file or directory"


# What a look reads: the job's file as the async wrapper wrote it.

def json_result(res):
    return json.loads(res["stdout"])


def read(text, rc=0):
    return job_result(dict(rc=rc, stdout=text, stderr=""), "j1", "/r/.ansible_async/j1", json_result)


def test_the_wrappers_first_record_is_a_job_running():
    assert read('{"started": 1, "finished": 0, "ansible_job_id": "j1"}') == dict(started=1, finished=0, ansible_job_id="j1")


def test_an_empty_file_is_a_job_running_as_async_status_says():
    assert read("") == dict(started=True, finished=False, ansible_job_id="j1", results_file="/r/.ansible_async/j1")


def test_a_record_without_finished_is_running():
    assert read('{"started": 1, "ansible_job_id": "j1"}')["finished"] is False


def test_the_modules_result_is_the_job_finished_with_its_id():
    result = read('{"changed": true, "switched": true, "stage": null, "invocation": {"module_args": {"step": "switch"}}}')
    assert result == dict(changed=True, switched=True, stage=None, invocation={"module_args": {"step": "switch"}},
                          finished=True, ansible_job_id="j1")


def test_a_failed_job_is_finished_and_failed():
    result = read('{"failed": true, "msg": "SMOKE: 2 of 6 requests failed", "stage": "SMOKE"}')
    assert result["finished"] is True and result["failed"] is True and result["stage"] == "SMOKE"
