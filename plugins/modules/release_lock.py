#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_lock
short_description: Take or release the lock that keeps two releases of one map from interleaving
version_added: 0.1.0
description:
  - Creates a lock file atomically (C(O_EXCL)) on the HAProxy node, recording who holds it and since
    when. A second run with another O(owner) is refused with a message naming the holder and the
    lock's age, and changes nothing.
  - The same O(owner) may take the lock again (a retried task stays idempotent).
  - The cutover and rollback playbooks take it on every node before PRECHECK and release it at the
    end, success or failure.
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
      - V(present) takes the lock, V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  owner:
    description:
      - Who takes or releases the lock; a run identifier such as the AWX job id.
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
      - Seconds after which another owner's lock is treated as stale and taken over without O(force).
        V(0) means never.
    type: int
    default: 0
  details:
    description:
      - Extra facts to record in the lock file (for example the target backend), shown to whoever is refused.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Take the release lock
  bluegreen.haproxy.release_lock:
    path: /etc/haproxy/maps/bluegreen.map.lock
    owner: "awx-job-{{ awx_job_id | default('manual') }}"
    details:
      target: backend_green

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
  sample: {"owner": "awx-job-42", "acquired": "2026-11-27T14:01:02Z", "acquired_epoch": 1795788062.1, "pid": 4242}
previous_holder:
  description: The record found before the task, V(null) when there was no lock.
  returned: always
  type: dict
taken_over:
  description: Whether another owner's lock was taken over (O(force) or O(stale_after)).
  returned: always
  type: bool
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import (
    LockHeldError,
    create_lock,
    holder_record,
    lock_age,
    read_lock,
    replace_lock,
)


def acquire(module, path, owner, previous):
    params = module.params
    if previous is not None and previous.get("owner") == owner:
        return dict(changed=False, holder=previous, taken_over=False)
    stale = params["stale_after"] > 0 and (lock_age(previous or {}) or 0) > params["stale_after"]
    if previous is not None and not (params["force"] or stale):
        raise LockHeldError(path, previous)
    record = holder_record(owner, params["details"])
    if module.check_mode:
        return dict(changed=True, holder=record, taken_over=previous is not None)
    if previous is None:
        if not create_lock(path, record):
            # Another run created it between our read and our create.
            raise LockHeldError(path, read_lock(path) or {})
    else:
        replace_lock(path, record)
    return dict(changed=True, holder=record, taken_over=previous is not None)


def release(module, path, owner, previous):
    if previous is None:
        return dict(changed=False, holder=None, taken_over=False)
    if previous.get("owner") != owner and not module.params["force"]:
        raise LockHeldError(path, previous)
    if not module.check_mode:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return dict(changed=True, holder=None, taken_over=False)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            owner=dict(type="str", required=True),
            force=dict(type="bool", default=False),
            stale_after=dict(type="int", default=0),
            details=dict(type="dict", default={}),
        ),
        supports_check_mode=True,
    )
    path, owner = module.params["path"], module.params["owner"]
    previous = read_lock(path)
    action = acquire if module.params["state"] == "present" else release
    try:
        result = action(module, path, owner, previous)
    except LockHeldError as exc:
        module.fail_json(msg=str(exc), holder=exc.holder, previous_holder=previous, taken_over=False)
    except OSError as exc:
        module.fail_json(msg="cannot change release lock %s: %s" % (path, exc), previous_holder=previous)
    module.exit_json(previous_holder=previous, **result)


if __name__ == "__main__":
    main()
