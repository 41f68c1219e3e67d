#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_lock_info
short_description: Tell whether a release lock is held, by which run, and for how long
version_added: 0.1.0
description:
  - Reads the lock file that M(bluegreen.haproxy.release_lock) writes and returns its record, so a
    status report can say which run holds a node (owner, controller, phase reached, map, key,
    previous and target value) and how long ago it took the lock.
  - After a controller died mid-release, this record is what tells the operator that a run died
    and what it was doing.
  - Only reads; never changes anything.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  path:
    description:
      - The lock file, as given to M(bluegreen.haproxy.release_lock).
    type: path
    required: true
seealso:
  - module: bluegreen.haproxy.release_lock
"""

EXAMPLES = r"""
- name: Who holds the release lock?
  bluegreen.haproxy.release_lock_info:
    path: /etc/haproxy/maps/bluegreen.map.lock
  register: release_lock_state

- name: Report a run that holds it
  ansible.builtin.debug:
    msg: >-
      held by {{ release_lock_state.holder.owner | default('an unknown owner') }}
      for {{ release_lock_state.age | default(0) | int }}s,
      phase {{ release_lock_state.holder.phase | default('unknown') }}
  when: release_lock_state.held
"""

RETURN = r"""
held:
  description: Whether the lock file exists.
  returned: always
  type: bool
  sample: true
holder:
  description:
    - The lock record, V(null) when the lock is not held.
    - V({}) when the file exists but holds no readable record (for example a run that died while
      creating it); the lock is then held by an unknown owner.
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
age:
  description: Seconds since the lock was taken; V(null) when it is not held or its record has no readable time.
  returned: always
  type: float
  sample: 93.412
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import lock_info


def main():
    module = AnsibleModule(
        argument_spec=dict(path=dict(type="path", required=True)),
        supports_check_mode=True,
    )
    path = module.params["path"]
    try:
        result = lock_info(path)
    except OSError as exc:
        module.fail_json(msg="cannot read release lock %s: %s (run as a user that may read it)" % (path, exc),
                         changed=False)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
