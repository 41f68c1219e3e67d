# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Collecting an async job with one look at it (the release_collect action's loop).

A fleet's switch step runs as an async job armed for one instant; looking at a job before it can
have finished costs a command on the node and gives nothing. So the controller first waits,
without touching the node, until the job should be done (`not_before`), and then looks; only a
job still running is looked at again, every `interval` seconds, until `timeout`.

A look reads the job's file (`cat` over the connection) and judges it the way the async_status
module does (`job_result`): reading a small file needs no module run, which costs a Python
process on the node and a worker's module build on the controller for each node.
"""

from __future__ import annotations

import time


def job_result(res, jid, path, parse):
    """async_status's answer from the job's file, as `cat` on the node returned it.

    `res` is the command's {rc, stdout, stderr}. The async wrapper writes the file whole (a rename),
    so an empty one is a job that has not written yet: running, as async_status says. `parse(res)`
    decodes the JSON the way the controller decodes a module's result (the job's result is the
    module's); a file without `started` holds the job's end, its result.
    """
    if res.get("rc") != 0:
        return dict(failed=True, started=True, finished=True, ansible_job_id=jid, results_file=path,
                    msg="could not read async job %s's file %s: %s"
                        % (jid, path, (res.get("stderr") or "").strip() or "rc %s" % res.get("rc")))
    if not (res.get("stdout") or "").strip():
        return dict(started=True, finished=False, ansible_job_id=jid, results_file=path)
    data = dict(parse(res))
    if "started" not in data:
        data.update(finished=True, ansible_job_id=jid)
    elif "finished" not in data:
        data["finished"] = False
    return data


def collect(look, not_before=None, interval=0.5, timeout=60.0, clock=time.time, sleep=time.sleep):
    """Wait until `not_before` (epoch), then call `look()` until its result is finished.

    `look()` returns async_status's result (`finished` true once the job ended, whatever its
    outcome). Returns (result, looks); a job still unfinished `timeout` seconds after the first
    look is returned as it was last seen, with `failed` and a message naming the wait.
    """
    if not_before is not None and not_before > clock():
        sleep(not_before - clock())
    deadline = clock() + max(float(timeout), 0.0)
    looks = 0
    while True:
        result = look()
        looks += 1
        if result.get("finished") or (result.get("failed") and not result.get("started")):
            return result, looks
        if clock() + interval > deadline:
            result = dict(result, failed=True,
                          msg="the async job %s had not finished %.1fs after the first look at it"
                              % (result.get("ansible_job_id", "?"), float(timeout)))
            return result, looks
        sleep(interval)
