#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_prepare
short_description: The release's PREPARE step on one HAProxy node - read, lock, prove - in one module run
version_added: 0.2.0
description:
  - The first of the release engine's steps, used by the C(bluegreen.haproxy.release) role; one
    module run per node, in this order, the first refusal ending it.
  - B(READ) every key of O(services) at runtime (C(get map)) and in the map file, and the release
    lock at O(lock.path). From that read each key's target (a rollback picks the other backend,
    or the value a dead run's lock records as C(previous) when O(lock.force) takes it over).
  - A node that already runs every target at runtime and on disk, with no lock held, stops here
    (RV(already_live)) - nothing will change on it, so it is neither locked nor checked.
  - Refusals from this node's own read, before anything is written (RV(stage=PRECHECK)) - no
    target, a key missing from the live map, drift between runtime and disk (unless
    O(allow_drift)), another live value than O(services[].expected_current).
  - B(LOCK) - takes the release lock recording the run (owner, controller, start, the phase
    C(precheck), the map, keys, previous and target values), as M(bluegreen.haproxy.release_lock)
    does. In check mode it only proves the lock could be taken.
  - B(PRECHECK) - the socket's level, the health gate (waiting up to O(health_wait)), the
    per-server preflight and the current path through this node's listener, as
    M(bluegreen.haproxy.release_precheck) runs them.
  - Its action plugin then reads the node's clock, bracketed by the controller's (RV(clock)), when
    the lock was taken (or, in check mode, could be), so the fleet's switch instant can be trusted.
  - Whether every node agrees on the live value is the fleet's question, judged by the role after
    this step.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.release_step
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details: It takes the release lock, which the release role's last step releases.
options:
  map:
    description: The map as HAProxy names it (C(show map)).
    type: str
    required: true
  map_file:
    description: The map file on this node. Defaults to O(map).
    type: path
  run:
    description: The run, as the lock records it.
    type: dict
    required: true
    suboptions:
      owner:
        description: Who runs the release (the lock's owner).
        type: str
        required: true
      action:
        description: What the run does.
        type: str
        choices: [cutover, rollback]
        default: cutover
      controller:
        description: The controller's host name.
        type: str
      controller_pid:
        description: The run's process id on the controller.
        type: int
      started_at:
        description: When the run started (ISO 8601).
        type: str
  lock:
    description: The release lock to take; omit it for a run without a lock.
    type: dict
    suboptions:
      path:
        description: The lock file.
        type: path
        required: true
      force:
        description: Take the lock over whoever holds it (a run that died).
        type: bool
        default: false
      stale_after:
        description: Seconds after which another owner's lock is taken over; V(0) never.
        type: int
        default: 0
  allow_drift:
    description: Switch even when runtime and disk disagree.
    type: bool
    default: false
  preflight:
    description: Send the smoke request to every server of each target directly first.
    type: bool
    default: true
  smoke_current:
    description: Smoke-test the current path through this node's listener first.
    type: bool
    default: true
  health_wait:
    description: Seconds to wait for the targets to become healthy.
    type: float
    default: 0
  poll_interval:
    description: Seconds between two health reads while waiting.
    type: float
    default: 1.0
  allow_no_check:
    description: Count servers without a health check as healthy.
    type: bool
    default: false
  force:
    description: Report the targets' health without judging it (they must still exist).
    type: bool
    default: false
  requests:
    description: Requests of the current path's smoke test.
    type: int
    default: 1
  request_timeout:
    description: Seconds for each request.
    type: float
    default: 5.0
  validate_certs:
    description: Verify TLS certificates of the current path.
    type: bool
    default: true
  preflight_validate_certs:
    description: Verify TLS certificates of the servers in the preflight.
    type: bool
    default: false
  skip_servers:
    description: Servers the preflight leaves out.
    type: list
    elements: str
    default: []
seealso:
  - module: bluegreen.haproxy.release_precheck
  - module: bluegreen.haproxy.release_lock
  - module: bluegreen.haproxy.haproxy_map_info
"""

EXAMPLES = r"""
- name: PREPARE this node for backend_green
  bluegreen.haproxy.release_prepare:
    map: /etc/haproxy/maps/bluegreen.map
    services:
      - key: active
        target: backend_green
        backends: [backend_blue, backend_green]
        smoke_url: http://shop.example.com/health
        smoke_resolve: 127.0.0.1:80
    run:
      owner: "awx-job-{{ awx_job_id | default('manual') }}"
    lock:
      path: /etc/haproxy/maps/bluegreen.map.lock
    health_wait: 30
  register: prepared
"""

RETURN = r"""
entries:
  description: The keys' live values (a key HAProxy does not have is left out).
  returned: when the map was read
  type: dict
  sample: {"active": "backend_blue"}
disk_entries:
  description: The keys' values in the map file; V(null) when the file could not be read.
  returned: when the map was read
  type: dict
lock:
  description: The release lock as it was found (C(held), C(holder), C(age)).
  returned: when the map was read
  type: dict
plan:
  description: Per key C(lives), C(disks), C(targets), C(currents), and a dead run's C(recovery) record.
  returned: when the map and the lock were read
  type: dict
already_live:
  description: Every target is live at runtime and on disk and no lock is held; nothing was locked or checked.
  returned: always
  type: bool
lock_acquired:
  description: The lock was taken (in check mode - could be taken).
  returned: always
  type: bool
lock_taken:
  description: This run now holds the lock on this node (never in check mode).
  returned: always
  type: bool
holder:
  description: The lock record after the step, or the other holder's when it refused.
  returned: always
  type: dict
precheck:
  description: The precheck, as M(bluegreen.haproxy.release_precheck) returns it; V(null) when it did not run.
  returned: always
  type: dict
stage:
  description: The stage that refused this node (V(READ), V(LOCK) or V(PRECHECK)), or V(null).
  returned: always
  type: str
clock:
  description: The node's clock against the controller's (C(offset), C(error), C(readings)), read by the action plugin.
  returned: when the lock was acquired
  type: dict
module_started:
  description: When the module run started on the controller's clock (epoch seconds).
  returned: always
  type: float
module_seconds:
  description: How long the module run took, on the controller's clock.
  returned: always
  type: float
work_seconds:
  description: How long the step's own work took on the node (reads, waits, requests), within RV(module_seconds).
  returned: when the options were valid
  type: float
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileEncodingError,
    MapFileError,
    read_map_file,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import PrecheckOptionError, validate_options
from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import SERVICE_SPEC, prepare
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import build_tls_context

RUN_SPEC = dict(
    owner=dict(type="str", required=True),
    action=dict(type="str", choices=["cutover", "rollback"], default="cutover"),
    controller=dict(type="str"),
    controller_pid=dict(type="int"),
    started_at=dict(type="str"),
)
LOCK_SPEC = dict(
    path=dict(type="path", required=True),
    force=dict(type="bool", default=False),
    stale_after=dict(type="int", default=0),
)


def argument_spec():
    spec = runtime_api_argument_spec()
    spec.update(
        map=dict(type="str", required=True),
        map_file=dict(type="path"),
        services=dict(type="list", elements="dict", required=True, options=SERVICE_SPEC),
        run=dict(type="dict", required=True, options=RUN_SPEC),
        lock=dict(type="dict", options=LOCK_SPEC),
        allow_drift=dict(type="bool", default=False),
        preflight=dict(type="bool", default=True),
        smoke_current=dict(type="bool", default=True),
        health_wait=dict(type="float", default=0),
        poll_interval=dict(type="float", default=1.0),
        allow_no_check=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        requests=dict(type="int", default=1),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=True),
        preflight_validate_certs=dict(type="bool", default=False),
        skip_servers=dict(type="list", elements="str", default=[]),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = module.params
    # Every option is checked before anything is asked.
    try:
        skip_servers = validate_options(params["health_wait"], params["poll_interval"], params["requests"],
                                        params["request_timeout"], params["skip_servers"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
        # One context per setting, so the trust store is read at most once for each.
        tls = dict((validate, build_tls_context(validate))
                   for validate in set((params["validate_certs"], params["preflight_validate_certs"])))
    except (PrecheckOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, stage="INIT")
    except Exception as exc:  # pylint: disable=broad-except  # e.g. an unreadable system trust store
        module.fail_json(msg="cannot set up TLS for the precheck's requests: %s" % exc, changed=False, stage="INIT")

    map_file = params["map_file"] or params["map"]
    disk_text, disk_error = None, None
    try:
        disk_text = read_map_file(map_file)
    except MapFileEncodingError as exc:
        # The file is there but an entry cannot be read for sure: never report its keys as absent.
        disk_error = str(exc)
    except MapFileError:
        disk_text = None

    started = time.time()
    result = prepare(
        client, params["map"], disk_text, params["services"], params["run"], lock=params["lock"],
        allow_drift=params["allow_drift"], check_mode=module.check_mode, disk_error=disk_error,
        precheck=dict(preflight=params["preflight"], smoke_current=params["smoke_current"],
                      health_wait=params["health_wait"], poll_interval=params["poll_interval"],
                      allow_no_check=params["allow_no_check"], force=params["force"], requests=params["requests"],
                      request_timeout=params["request_timeout"], validate_certs=params["validate_certs"],
                      preflight_validate_certs=params["preflight_validate_certs"], skip_servers=skip_servers,
                      tls_context=tls[params["validate_certs"]],
                      preflight_tls_context=tls[params["preflight_validate_certs"]]))
    # The node's own work (waits, requests): the rest of the module run's time is what any module
    # run costs at this forks setting, which the fleet's switch lead is estimated from.
    result["work_seconds"] = round(time.time() - started, 3)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
