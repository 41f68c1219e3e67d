#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_finish
short_description: The release's FINISH step on one HAProxy node - persist or roll back, then unlock
version_added: 0.2.0
description:
  - The last of the release engine's steps, used by the C(bluegreen.haproxy.release) role; one module
    run per node, after the fleet's verdict.
  - O(outcome=persist) (every node passed) - writes O(targets) to the map file, a compare-and-set on
    the live values that never moves traffic (skipped with O(persist=false)).
  - O(outcome=rollback) (a node failed) - when this node O(switched), records the phase C(rolling back)
    in the lock, puts O(previous) back at runtime and on disk in one change, reads it back
    (B(ROLLBACK VERIFY)) and smoke-tests the old version through this node's listener. A node that
    did not switch has nothing to roll back.
  - O(outcome=release) - nothing to change (nothing moved anywhere).
  - In every case the release lock is released last, also after a failure; RV(stage) names what failed.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.release_step
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: none
    details: The release role stops before the switch in check mode, and takes no lock then.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: Persisting values already on disk, or rolling back a node that is back, changes nothing.
options:
  map:
    description: The map as HAProxy names it (C(show map)).
    type: str
    required: true
  map_file:
    description: The map file on this node. Defaults to O(map).
    type: path
  outcome:
    description: The fleet's verdict.
    type: str
    choices: [persist, rollback, release]
    required: true
  targets:
    description: Every key of the run with its new value (persisted on success).
    type: dict
    required: true
  previous:
    description: Every key with the value it had before the run (put back by a rollback).
    type: dict
    required: true
  switched:
    description: Whether this node's live map moved in this run (only then is there something to roll back).
    type: bool
    default: false
  persist:
    description: Write the new values to the map file on success (V(false) - C(release_persist=manual), persist.yml later).
    type: bool
    default: true
  bulk:
    description: Change every key in one C(prepare)/C(commit map) (several services).
    type: bool
    default: false
  lock:
    description: The release lock this run holds, released at the end.
    type: dict
    suboptions:
      path:
        description: The lock file.
        type: path
        required: true
      owner:
        description: The run that holds it.
        type: str
        required: true
  backup:
    description: Back up the map file before it is replaced.
    type: bool
    default: false
  requests:
    description: Requests of each service's smoke test of the old version after a rollback.
    type: int
    default: 1
  request_timeout:
    description: Seconds for each request.
    type: float
    default: 5.0
  validate_certs:
    description: Verify TLS certificates of the smoke tests.
    type: bool
    default: true
seealso:
  - module: bluegreen.haproxy.release_prepare
  - module: bluegreen.haproxy.release_switch
"""

EXAMPLES = r"""
- name: FINISH this node - persist when every node passed, otherwise roll back
  bluegreen.haproxy.release_finish:
    map: /etc/haproxy/maps/bluegreen.map
    outcome: "{{ 'rollback' if fleet_failed else 'persist' }}"
    targets: {active: backend_green}
    previous: {active: backend_blue}
    switched: "{{ switched.switched }}"
    services:
      - key: active
        smoke_url: http://shop.example.com/health
        smoke_resolve: 127.0.0.1:80
    lock:
      path: /etc/haproxy/maps/bluegreen.map.lock
      owner: "awx-job-{{ awx_job_id | default('manual') }}"
"""

RETURN = r"""
persist:
  description: The map file write, as M(bluegreen.haproxy.haproxy_map) returns it; V(null) when not written.
  returned: always
  type: dict
rollback:
  description: The rollback's map change, as M(bluegreen.haproxy.haproxy_map) returns it; V(null) when none.
  returned: always
  type: dict
rollback_smoke:
  description: Per service (with its C(key)), the old version's smoke test after the rollback.
  returned: always
  type: list
  elements: dict
rolled_back:
  description: Whether this node is back on O(previous) (read back).
  returned: always
  type: bool
unlocked:
  description: Whether the release lock was released.
  returned: always
  type: bool
stage:
  description: The stage that failed (V(PERSIST), V(ROLLBACK), V(UNLOCK)), or V(null).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import MapChangeError, normalize_entries
from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import SERVICE_SPEC, finish
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)


def argument_spec():
    spec = runtime_api_argument_spec()
    spec.update(
        map=dict(type="str", required=True),
        map_file=dict(type="path"),
        outcome=dict(type="str", choices=["persist", "rollback", "release"], required=True),
        targets=dict(type="dict", required=True),
        previous=dict(type="dict", required=True),
        switched=dict(type="bool", default=False),
        persist=dict(type="bool", default=True),
        bulk=dict(type="bool", default=False),
        lock=dict(type="dict", options=dict(path=dict(type="path", required=True),
                                            owner=dict(type="str", required=True))),
        backup=dict(type="bool", default=False),
        services=dict(type="list", elements="dict", required=True, options=SERVICE_SPEC),
        requests=dict(type="int", default=1),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=True),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=False)
    params = module.params
    try:
        targets = normalize_entries("targets", params["targets"])
        previous = normalize_entries("previous", params["previous"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (MapChangeError, RuntimeAPIError, ValueError) as exc:
        module.fail_json(msg=str(exc), changed=False, stage="INIT")
    result = finish(
        client, params["map"], params["map_file"] or params["map"], params["services"], params["outcome"], targets,
        previous, switched=params["switched"], persist=params["persist"], bulk=params["bulk"], lock=params["lock"],
        smoke=dict(requests=params["requests"], timeout=params["request_timeout"],
                   validate_certs=params["validate_certs"]),
        backup=module.backup_local if params["backup"] else None, module=module)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
