#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_switch
short_description: The release's SWITCH AND PROVE step on one HAProxy node, in one module run
version_added: 0.2.0
description:
  - The second of the release engine's steps, used by the C(bluegreen.haproxy.release) role; one
    module run per node (armed as an async task for a fleet's instant), the first failure ending it.
  - B(SWITCH) - records the phase C(switching) in the release lock, then moves every key of
    O(targets) with compare-and-set from O(expected) (one key - C(set map); O(bulk) - one
    C(prepare)/C(commit map) of the whole map), waiting for O(switch_at) first and judging the
    compare-and-set at that instant, and reads the keys back, as M(bluegreen.haproxy.haproxy_map)
    does. The map file is not written (the last step persists).
  - B(SMOKE) - the live-traffic baseline of each target when O(watch_seconds) is set, then
    O(requests) requests of each service's smoke test through this node's listener, answered by
    the target (as M(bluegreen.haproxy.http_smoke)).
  - B(WATCH) - for O(watch_seconds), real users' requests to each target are judged from HAProxy's
    counters (as M(bluegreen.haproxy.haproxy_backend_traffic)), the engine's own smoke requests
    taken out; then the keys are read once more (B(WATCH VERIFY)) - a reload during the window
    would have put the map file's values back.
  - A failure says which stage failed (RV(stage)); the switch's result (RV(switch)) tells whether
    and when this node switched, so the last step can roll it back.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.release_step
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: none
    details: The release role stops before this step in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A node already on O(targets) is not changed (the compare-and-set finds nothing to do).
options:
  map:
    description: The map as HAProxy names it (C(show map)).
    type: str
    required: true
  map_file:
    description: The map file, read after the watch window to tell a reload from a bad release. Defaults to O(map).
    type: path
  targets:
    description: Every key of the run with the value to make live.
    type: dict
    required: true
  expected:
    description: Every key with the value that must still be live at the instant (the compare-and-set).
    type: dict
    required: true
  bulk:
    description: Switch every key in one C(prepare)/C(commit map) (several services), instead of one C(set map).
    type: bool
    default: false
  switch_at:
    description: The fleet's instant (epoch seconds of this node's clock); V(null) switches at once.
    type: float
  lock:
    description: The release lock this run holds, to record the phase C(switching) in before anything moves.
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
  requests:
    description: Requests of each service's smoke test after the switch.
    type: int
    default: 1
  request_timeout:
    description: Seconds for each request, and to retry a counter read during a reload.
    type: float
    default: 5.0
  validate_certs:
    description: Verify TLS certificates of the smoke tests.
    type: bool
    default: true
  watch_seconds:
    description: Seconds of the watch window; V(0) for none.
    type: float
    default: 0
  watch_interval:
    description: Seconds between two rounds of smoke requests in the window (counters are read at least every second).
    type: float
    default: 1
  max_error_rate:
    description: The highest share of real requests (percent) that may fail in the window.
    type: float
    default: 1.0
  min_requests:
    description: The fewest real requests to judge the error rate from.
    type: int
    default: 20
  insufficient_traffic:
    description: Whether too few real requests in the window fail the step (V(fail)) or pass it (V(pass)).
    type: str
    choices: [fail, pass]
    default: fail
seealso:
  - module: bluegreen.haproxy.release_prepare
  - module: bluegreen.haproxy.release_finish
  - module: bluegreen.haproxy.haproxy_map
"""

EXAMPLES = r"""
- name: SWITCH AND PROVE this node
  bluegreen.haproxy.release_switch:
    map: /etc/haproxy/maps/bluegreen.map
    targets: {active: backend_green}
    expected: {active: backend_blue}
    services:
      - key: active
        smoke_url: http://shop.example.com/health
        smoke_resolve: 127.0.0.1:80
    requests: 10
    watch_seconds: 60
  register: switched
"""

RETURN = r"""
switched:
  description: Whether this node's live map moved (the last step rolls it back when the fleet failed).
  returned: always
  type: bool
switch:
  description: The switch, as M(bluegreen.haproxy.haproxy_map) returns it (C(switched_at), C(late_by), C(runtime_entries), C(refused), ...).
  returned: always
  type: dict
baseline:
  description: Per key, the target's counters read right after the switch (the watch window judges from them).
  returned: always
  type: dict
smoke:
  description: Per key, the smoke test as M(bluegreen.haproxy.http_smoke) returns it.
  returned: always
  type: dict
traffic:
  description: Per watched key, the watch window as M(bluegreen.haproxy.haproxy_backend_traffic) returns it.
  returned: always
  type: dict
watch_verify:
  description: The keys read after the window, as M(bluegreen.haproxy.haproxy_map_info) returns them.
  returned: always
  type: dict
stage:
  description: The stage that failed (V(SWITCH), V(SMOKE), V(WATCH VERIFY)), or V(null).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import MapFileError, read_map_file
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import normalize_entries
from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import SERVICE_SPEC, switch_and_prove
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.traffic import TrafficOptionError, validate_options


def argument_spec():
    spec = runtime_api_argument_spec()
    spec.update(
        map=dict(type="str", required=True),
        map_file=dict(type="path"),
        targets=dict(type="dict", required=True),
        expected=dict(type="dict", required=True),
        bulk=dict(type="bool", default=False),
        switch_at=dict(type="float"),
        lock=dict(type="dict", options=dict(path=dict(type="path", required=True),
                                            owner=dict(type="str", required=True))),
        services=dict(type="list", elements="dict", required=True, options=SERVICE_SPEC),
        requests=dict(type="int", default=1),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=True),
        watch_seconds=dict(type="float", default=0),
        watch_interval=dict(type="float", default=1),
        max_error_rate=dict(type="float", default=1.0),
        min_requests=dict(type="int", default=20),
        insufficient_traffic=dict(type="str", choices=["fail", "pass"], default="fail"),
    )
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=False)
    params = module.params
    keys = [service["key"] for service in params["services"]]
    # Every option is checked before anything is asked.
    try:
        targets = normalize_entries("targets", params["targets"])
        expected = normalize_entries("expected", params["expected"])
        if sorted(targets) != sorted(keys) or sorted(expected) != sorted(keys):
            raise TrafficOptionError("targets and expected must name exactly the services' keys (%s)" % ", ".join(keys))
        if len(keys) > 1 and not params["bulk"]:
            raise TrafficOptionError("several keys switch together only with bulk=true")
        if params["requests"] < 1:
            raise TrafficOptionError("requests must be at least 1, got %d" % params["requests"])
        validate_options(params["watch_seconds"], min(params["watch_interval"], 1.0), params["max_error_rate"],
                         params["min_requests"], None, params["insufficient_traffic"], params["watch_interval"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (TrafficOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, switched=False, stage="INIT")
    try:
        disk_text = read_map_file(params["map_file"] or params["map"]) if params["watch_seconds"] > 0 else None
    except MapFileError:
        disk_text = None  # the reload hint is lost, nothing else

    result = switch_and_prove(
        client, params["map"], targets, expected, params["services"], bulk=params["bulk"],
        switch_at=params["switch_at"], lock=params["lock"],
        smoke=dict(requests=params["requests"], timeout=params["request_timeout"],
                   validate_certs=params["validate_certs"]),
        watch=dict(seconds=params["watch_seconds"], interval=params["watch_interval"],
                   max_error_rate=params["max_error_rate"], min_requests=params["min_requests"],
                   insufficient_traffic=params["insufficient_traffic"]),
        disk_text=disk_text)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
