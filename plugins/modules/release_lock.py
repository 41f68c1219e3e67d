#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_lock
short_description: Take, update or release the lock that keeps two releases of one map from interleaving
version_added: 0.1.0
description:
  - Creates a lock file atomically and exclusively (a finished record linked to the lock's name) on the HAProxy node. The file is the run's record
    (JSON) - who holds it (O(owner)), from which controller (O(controller), O(controller_pid)), when
    the run started and took the lock, the phase it reached, the map and key it switches, the
    previous and the target value, and any O(details). After a crash it tells the operator what the
    dead run was doing (see M(bluegreen.haproxy.release_lock_info)).
  - A run with another O(owner) is refused with a message naming the holder, its controller, phase
    and the lock's age, and changes nothing.
  - The owner calling again with O(state=present) updates the record (for example O(phase)) by
    writing a new file beside the lock and renaming it over the lock, so a reader never sees half a
    record. It reports RV(ignore:changed) only when the record differs. The owner and the time the
    lock was taken never change this way.
  - O(state=absent) removes the lock, only when O(owner) holds it (or with O(force)).
  - The record holds no process id of this module, which is a short-lived process on the node. The
    run is identified by O(owner), O(controller) and O(controller_pid).
  - The cutover and rollback playbooks take it on every node before PRECHECK, record each phase,
    and release it at the end.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
options:
  path:
    description:
      - The lock file, normally beside the map file (for example C(/etc/haproxy/maps/bluegreen.map.lock)).
    type: path
    required: true
  state:
    description:
      - V(present) takes the lock (or, for its owner, updates the record); V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  owner:
    description:
      - Who takes, updates or releases the lock; a run identifier such as the AWX job id.
    type: str
    required: true
  force:
    description:
      - The override for a stale lock left by a run that died. With O(state=present) the lock is taken
        over whoever holds it; with O(state=absent) it is removed whoever holds it.
      - Use it only after making sure the holder is no longer running.
    type: bool
    default: false
  stale_after:
    description:
      - Seconds after which another owner's lock is treated as stale and taken over without O(force);
        a lock taken more than O(stale_after) seconds ago is stale, a younger one is not.
      - A record without a readable age is never stale. V(0) means never.
    type: int
    default: 0
  controller:
    description:
      - The host the run is controlled from (the Ansible controller).
    type: str
  controller_pid:
    description:
      - The process id of the run on the controller (for example the C(ansible-playbook) process).
    type: int
  started:
    description:
      - When the run started, as the controller tells it (for example an ISO 8601 time).
      - Defaults to the time the lock is taken.
    type: str
  phase:
    description:
      - The phase the run has reached (for example V(PRECHECK), V(SWITCH), V(PERSIST)).
    type: str
  map:
    description:
      - The map the run switches.
    type: str
  key:
    description:
      - The key (or keys) of the map the run switches.
    type: raw
  previous:
    description:
      - The value (or, for several keys, the dict of values) live before the run.
    type: raw
  target:
    description:
      - The value (or dict of values) the run switches to.
    type: raw
  details:
    description:
      - Any other facts to record in the lock file, shown to whoever is refused.
      - They are written at the top level of the record. The named options above take precedence
        over the same names here. C(owner), C(acquired) and C(acquired_epoch) are refused here.
    type: dict
    default: {}
seealso:
  - module: bluegreen.haproxy.release_lock_info
"""

EXAMPLES = r"""
- name: Take the release lock, recording the run
  bluegreen.haproxy.release_lock:
    path: /etc/haproxy/maps/bluegreen.map.lock
    owner: "awx-job-{{ awx_job_id | default('manual') }}"
    controller: "{{ lookup('ansible.builtin.pipe', 'hostname') }}"
    started: "{{ now(utc=true).isoformat() }}"
    phase: PRECHECK
    map: /etc/haproxy/maps/bluegreen.map
    key: active
    previous: backend_blue
    target: backend_green

- name: Record that the switch is next (only the owner may; ownership does not change)
  bluegreen.haproxy.release_lock:
    path: /etc/haproxy/maps/bluegreen.map.lock
    owner: "awx-job-{{ awx_job_id | default('manual') }}"
    phase: SWITCH

- name: Release it
  bluegreen.haproxy.release_lock:
    path: /etc/haproxy/maps/bluegreen.map.lock
    owner: "awx-job-{{ awx_job_id | default('manual') }}"
    state: absent
"""

RETURN = r"""
holder:
  description: The lock record after the task (V(null) when released).
  returned: always
  type: dict
  sample:
    owner: awx-job-42
    controller: ctl1.example.com
    controller_pid: 31337
    started: "2026-11-27T14:01:00Z"
    acquired: "2026-11-27T14:01:02Z"
    acquired_epoch: 1795788062.1
    phase: SWITCH
    map: /etc/haproxy/maps/bluegreen.map
    key: active
    previous: backend_blue
    target: backend_green
previous_holder:
  description: The record found before the task, V(null) when there was no lock, V({}) when it could not be read.
  returned: always
  type: dict
taken_over:
  description: Whether another owner's lock was taken over (O(force) or O(stale_after)).
  returned: always
  type: bool
clock:
  description:
    - The node's clock compared with the controller's, added by the module's action plugin after the module ran
      (the node's C(date +%s.%N), bracketed by the controller's clock for that one command, the tightest of up to
      three readings). The release playbooks refuse a node when RV(clock.offset) + RV(clock.error) exceeds
      C(release_clock_tolerance).
  returned: with O(state=present), when the module succeeded and did not run asynchronously
  type: dict
  contains:
    offset:
      description: Seconds the node's clock is ahead of the controller's (negative when behind); V(null) when it could not be read.
      type: float
    error:
      description: The bound of that measurement in seconds (half the bracket, plus half the reading's resolution).
      type: float
    readings:
      description: How many readings were taken.
      type: int
    problem:
      description: Why the clock could not be read, when it could not.
      type: str
      returned: when no reading succeeded
  sample:
    offset: 0.0012
    error: 0.0046
    readings: 3
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import (
    RUN_FIELDS,
    LockError,
    LockHeldError,
    acquire,
    lock_argument_spec,
    read_lock,
    release,
    run_fields,
)


def read_or_none(path):
    """The record for an error report; an unreadable file must not hide the real error."""
    try:
        return read_lock(path)
    except OSError:
        return None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            lock_argument_spec(),
            owner=dict(type="str", required=True),  # the one who takes, updates or releases it
            state=dict(type="str", choices=["present", "absent"], default="present"),
            controller=dict(type="str"),
            controller_pid=dict(type="int"),
            started=dict(type="str"),
            phase=dict(type="str"),
            map=dict(type="str"),
            key=dict(type="raw", no_log=False),
            previous=dict(type="raw"),
            target=dict(type="raw"),
            details=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    params = module.params
    path, owner = params["path"], params["owner"]
    try:
        if params["state"] == "present":
            facts = run_fields(dict((name, params[name]) for name in RUN_FIELDS), params["details"])
            result = acquire(path, owner, facts, force=params["force"], stale_after=params["stale_after"],
                             check_mode=module.check_mode)
        else:
            result = release(path, owner, force=params["force"], check_mode=module.check_mode)
    except LockHeldError as exc:
        module.fail_json(msg=str(exc), changed=False, holder=exc.holder, previous_holder=read_or_none(path),
                         taken_over=False)
    except LockError as exc:
        module.fail_json(msg=str(exc), changed=False)
    except OSError as exc:
        module.fail_json(msg="cannot change release lock %s: %s (is its directory writable by this user?)"
                         % (path, exc), changed=False, previous_holder=read_or_none(path))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
