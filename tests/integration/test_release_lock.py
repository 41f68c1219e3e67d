# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""release_lock and release_lock_info run the way Ansible runs them, and real module processes racing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from lab import COLLECTIONS, REPO

MODULE_FILE = os.path.join(REPO, "plugins", "modules", "release_lock.py")

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  vars:
    lock: {lock}
  tasks:
    - name: take
      bluegreen.haproxy.release_lock:
        path: "{{{{ lock }}}}"
        owner: job-1
        controller: ctl1
        controller_pid: 31337
        phase: PRECHECK
        map: /etc/haproxy/maps/bluegreen.map
        key: active
        previous: backend_blue
        target: backend_green
    - name: phase
      bluegreen.haproxy.release_lock:
        path: "{{{{ lock }}}}"
        owner: job-1
        phase: SWITCH
    - name: phase again
      bluegreen.haproxy.release_lock:
        path: "{{{{ lock }}}}"
        owner: job-1
        phase: SWITCH
    - name: other owner takes
      bluegreen.haproxy.release_lock:
        path: "{{{{ lock }}}}"
        owner: job-2
      ignore_errors: true
    - name: other owner releases
      bluegreen.haproxy.release_lock:
        path: "{{{{ lock }}}}"
        owner: job-2
        state: absent
      ignore_errors: true
    - name: info held
      bluegreen.haproxy.release_lock_info:
        path: "{{{{ lock }}}}"
    - name: release
      bluegreen.haproxy.release_lock:
        path: "{{{{ lock }}}}"
        owner: job-1
        state: absent
    - name: info free
      bluegreen.haproxy.release_lock_info:
        path: "{{{{ lock }}}}"
"""


def results_by_task(report):
    return {task["task"]["name"]: task["hosts"]["localhost"] for task in report["plays"][0]["tasks"]}


def test_lifecycle_through_ansible(run_playbook, tmp_path):
    lock = tmp_path / "bluegreen.map.lock"
    playbook = tmp_path / "lock.yml"
    playbook.write_text(PLAYBOOK.format(lock=lock))
    started = time.time()
    rc, report = run_playbook(str(playbook))
    run_time = time.time() - started
    assert rc == 0, report
    results = results_by_task(report)

    taken = results["take"]
    assert (taken["changed"], taken["taken_over"]) == (True, False)
    assert taken["holder"]["controller_pid"] == 31337 and "pid" not in taken["holder"]

    phase = results["phase"]
    assert phase["changed"] is True
    assert phase["holder"] == dict(taken["holder"], phase="SWITCH")
    assert results["phase again"]["changed"] is False

    for name in ("other owner takes", "other owner releases"):
        refused = results[name]
        assert refused.get("failed") is True, refused
        assert refused["changed"] is False
        assert "held by job-1" in refused["msg"] and "phase SWITCH" in refused["msg"]

    info = results["info held"]
    assert (info["changed"], info["held"]) == (False, True)
    assert info["holder"] == phase["holder"]
    assert 0 <= info["age"] <= run_time + 1, (info["age"], run_time)  # taken during this run

    assert results["release"]["changed"] is True
    assert (results["info free"]["held"], results["info free"]["holder"], results["info free"]["age"]) == (False, None, None)
    assert not os.path.exists(lock)


# Start every racer's module at the same instant: Python and Ansible start-up
# take a varying few hundred ms, which would otherwise serialize the race, so
# the imports happen before the wait and the module runs right after it.
RACER = """\
import runpy, sys, time
import ansible.module_utils.basic
import ansible_collections.bluegreen.haproxy.plugins.module_utils.lock
start = float(sys.argv[2])
time.sleep(max(0.0, start - time.time()))
sys.argv = [sys.argv[3], sys.argv[1]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

ROUNDS = 8
RACERS = 3


def test_module_processes_racing_for_one_lock(tmp_path):
    env = dict(os.environ, PYTHONPATH=COLLECTIONS)
    for round_number in range(ROUNDS):
        lock = str(tmp_path / ("round%d.lock" % round_number))
        start = time.time() + 1.5
        racers = []
        for index in range(RACERS):
            args = tmp_path / ("args-%d-%d.json" % (round_number, index))
            args.write_text(json.dumps(dict(ANSIBLE_MODULE_ARGS=dict(path=lock, owner="job-%d" % index))))
            racers.append(subprocess.Popen([sys.executable, "-c", RACER, str(args), repr(start), MODULE_FILE],
                                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outcomes = {}
        for index, racer in enumerate(racers):
            stdout, stderr = racer.communicate(timeout=60)
            outcomes["job-%d" % index] = json.loads(stdout)
        winners = [owner for owner, result in outcomes.items() if not result.get("failed")]
        assert len(winners) == 1, "round %d: winners %s: %s" % (round_number, winners, outcomes)
        with open(lock) as handle:
            assert json.load(handle)["owner"] == winners[0]
        for owner, result in outcomes.items():
            if owner != winners[0]:
                assert "held by %s" % winners[0] in result["msg"], result
