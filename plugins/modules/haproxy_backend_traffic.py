#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_backend_traffic
short_description: Gate on the error rate of real traffic to an HAProxy backend
version_added: 0.1.0
description:
  - The live-traffic error gate. Reads HAProxy's own counters for one backend (the backend row of
    C(show stat <backend> 2 -1), columns looked up by name, so HAProxy 2.6 and 3.0 are both
    understood) and judges the error rate of the requests real users sent it, as deltas from a
    baseline.
  - The baseline is O(baseline) (the RV(counters) of an earlier call, for example at the start of a
    watch window) or, by default, the counters read when the module starts.
  - Reads the counters every O(interval) seconds for O(duration) seconds. Fails as soon as at least
    O(min_requests) requests were counted and the error rate is above O(max_error_rate), with a
    message naming the backend, the rate, the counts and the window.
  - With fewer than O(min_requests) real requests there is nothing to judge (RV(verdict=insufficient)),
    which fails unless O(insufficient_traffic=pass). A call that only takes a baseline (no O(baseline),
    O(duration=0)) judges nothing and never fails (RV(verdict=baseline)).
  - 'Only real users'' requests are judged. The caller''s own requests to the backend (for example a
    release''s smoke requests, which go through the same listener and land in the same counters) are
    subtracted exactly, by status class: those answered before this call as O(own_requests), and
    those this module sends itself during the window as O(smoke). The module sends the O(smoke)
    requests one round at a time between two reads of the counters, each answered before the next
    read, and never after the last read. HAProxy counts a response when it handles its headers,
    before the client gets them, so every smoke request is in the next read and none is in flight
    while the counters are read: nothing is guessed from timestamps.'
  - 'How requests and failures are counted (measured on HAProxy 2.6): RV(requests) is the sum of
    the deltas of C(hrsp_1xx), C(hrsp_2xx), C(hrsp_3xx), C(hrsp_4xx), C(hrsp_5xx) and C(hrsp_other),
    the responses HAProxy sent for this backend. The failed requests are the delta of C(hrsp_5xx)
    plus the delta of C(srv_abrt), at most RV(requests); RV(error_rate) is 100 times failed divided
    by requests.'
  - 'Why not add C(eresp) and C(econ): when a server refuses the connection, resets it, closes it
    without an answer or does not answer in time, HAProxy answers the user a 503, 502 or 504 itself
    and counts that answer in C(hrsp_5xx); C(econ) and C(eresp) count the same request again (a
    reset even counts twice in C(eresp)), and C(econ) also counts the 503 given when no server is
    available. The one failure C(hrsp_5xx) misses is a response cut off by the server after its
    status line was sent (the user got a 200 with a truncated body), which C(srv_abrt) counts. A
    5xx that is also cut off counts twice; the error rate errs towards failing.'
  - Client aborts (C(cli_abrt)) and retries that ended well (C(wretr), C(wredis)) are not failures.
  - A smoke request that gets no answer (a timeout, a reset) cannot be placed in the counters; it is
    reported in RV(own_unanswered), not subtracted, and fails the smoke test, so the task fails.
  - Counters that go down between two reads were reset (a reload starts a new worker at 0); that
    read counts from 0 (RV(counter_resets)), so a reload during the window never gives negative
    numbers. Requests the old worker counted after the previous read are not seen.
  - A read that fails with a transient socket error (HAProxy reloading) is skipped; the last read
    is retried for up to O(timeout) seconds.
  - Only reads; never changes anything.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.traffic_gate
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  backend:
    description:
      - Name of the backend whose traffic is judged, as in the HAProxy configuration. It must be in
        C(mode http).
      - An unknown backend is an error that lists the backends HAProxy has.
    type: str
    required: true
  duration:
    description:
      - Seconds to watch the counters.
      - V(0) reads once. Without O(baseline) that one read is the baseline, so nothing is judged; use
        it to take a baseline for a later call.
    type: float
    default: 0
  interval:
    description:
      - Seconds between two reads while watching.
    type: float
    default: 1
  baseline:
    description:
      - The counters the deltas are taken from, as returned in RV(counters) by an earlier call of
        this module for the same backend.
      - When not set, the counters read when the module starts.
    type: dict
  own_requests:
    description:
      - 'The caller''s own requests to this backend since O(baseline), all answered before this call
        starts, as a dictionary of status code to count (for example the C(summary.status_counts)
        of an M(bluegreen.haproxy.http_smoke) run through the listener, such as C({"200": 10})).'
      - Subtracted from the response counters of their status class, so only real users' requests
        are judged (RV(own_requests)).
    type: dict
  smoke:
    description:
      - Smoke requests to send through the listener during the window, one round (one request per
        item) every O(smoke_interval) seconds, each answered before the next read of the counters.
        They are subtracted from the counters exactly (RV(own_requests)).
      - Every request must pass, like M(bluegreen.haproxy.http_smoke); the first failed one ends
        the watch and fails the task (RV(smoke)).
      - Each item must send its requests to this backend, or they would be subtracted from the
        wrong counters.
    type: list
    elements: dict
    suboptions:
      url:
        description: The absolute C(http://) or C(https://) URL to request (see M(bluegreen.haproxy.http_smoke)).
        type: str
        required: true
      resolve:
        description: Send the requests to this address, keeping the URL's host (as in M(bluegreen.haproxy.http_smoke)).
        type: str
      headers:
        description: Extra request headers.
        type: dict
        default: {}
      status_code:
        description: The status codes a passing answer may have.
        type: list
        elements: int
        default: [200]
      body_regex:
        description: A Python regular expression every answer's body must match.
        type: str
      timeout:
        description: Seconds each request may take as a whole.
        type: float
        default: 5
      validate_certs:
        description: Whether to verify the server's TLS certificate.
        type: bool
        default: true
  smoke_interval:
    description:
      - Seconds between two rounds of O(smoke) requests.
    type: float
    default: 1
notes:
  - The counters come from the HAProxy process the socket reaches (one node). In a fleet, call it on
    every node.
seealso:
  - module: bluegreen.haproxy.haproxy_backend_health
  - name: HAProxy management guide, show stat
    description: The counters of the CSV statistics.
    link: https://docs.haproxy.org/2.6/management.html#9.1
"""

EXAMPLES = r"""
- name: Watch real traffic to green for a minute; fail above 1% errors
  bluegreen.haproxy.haproxy_backend_traffic:
    backend: backend_green
    duration: 60
    interval: 2
    max_error_rate: 1.0
    min_requests: 50

- name: Take a baseline when the switch happens
  bluegreen.haproxy.haproxy_backend_traffic:
    backend: backend_green
  register: green_at_switch

- name: Later, judge everything since the switch
  bluegreen.haproxy.haproxy_backend_traffic:
    backend: backend_green
    baseline: "{{ green_at_switch.counters }}"
    max_error_rate: 0.5
  register: green_traffic

- name: Watch for 30 s, smoke-testing green through the listener meanwhile; the 10 smoke requests sent before are not users
  bluegreen.haproxy.haproxy_backend_traffic:
    backend: backend_green
    baseline: "{{ green_at_switch.counters }}"
    duration: 30
    own_requests: {"200": 10}
    smoke:
      - url: http://release.example.com/release
        resolve: 127.0.0.1:80
        body_regex: version=green
    insufficient_traffic: pass
  register: green_traffic

- name: Say when there was too little traffic to judge
  ansible.builtin.debug:
    msg: "{{ green_traffic.msg }}"
  when: green_traffic.verdict == 'insufficient'
"""

RETURN = r"""
backend:
  description: The backend judged.
  returned: always
  type: str
  sample: backend_green
counters:
  description:
    - The counters of the last read (the backend row of C(show stat)), plus C(read_at), when they
      were read (epoch seconds). Pass them as O(baseline) to a later call.
  returned: always
  type: dict
  sample: {"req_tot": 1200, "hrsp_1xx": 0, "hrsp_2xx": 1180, "hrsp_3xx": 0, "hrsp_4xx": 5, "hrsp_5xx": 15,
           "hrsp_other": 0, "econ": 0, "eresp": 3, "srv_abrt": 0, "cli_abrt": 1, "wretr": 0, "wredis": 0,
           "read_at": 1795788062.123}
baseline:
  description: The counters the deltas were taken from (O(baseline), or the first read).
  returned: always
  type: dict
requests:
  description:
    - Real requests in the window - the responses HAProxy sent for the backend (the sum of the
      C(hrsp_*) deltas) less the caller's own (RV(own_requests)).
  returned: always
  type: int
  sample: 200
errors:
  description: The deltas of the error counters in the window.
  returned: always
  type: dict
  contains:
    hrsp_5xx:
      description: 5xx responses to real requests, from the servers or from HAProxy itself (502, 503, 504).
      type: int
    srv_abrt:
      description: Responses the server cut off after their status was sent.
      type: int
    eresp:
      description: Response errors; already in C(hrsp_5xx) unless the status was sent (then in C(srv_abrt)). Not added.
      type: int
    econ:
      description: Connection errors, including no server available; already in C(hrsp_5xx). Not added.
      type: int
  sample: {"hrsp_5xx": 12, "srv_abrt": 3, "eresp": 3, "econ": 0}
failed_requests:
  description: The requests counted as failed, C(hrsp_5xx) plus C(srv_abrt), at most RV(requests).
  returned: always
  type: int
  sample: 15
error_rate:
  description: RV(failed_requests) in percent of RV(requests) (V(0) without requests).
  returned: always
  type: float
  sample: 7.5
judged:
  description: Whether at least O(min_requests) real requests were counted, so the rate was judged.
  returned: always
  type: bool
  sample: true
verdict:
  description:
    - V(passed) (enough real requests, the rate at most O(max_error_rate)), V(failed) (enough, the
      rate above it), V(insufficient) (fewer than O(min_requests) real requests; fails unless
      O(insufficient_traffic=pass)) or V(baseline) (the call only read the counters).
  returned: always
  type: str
  sample: insufficient
passed:
  description:
    - Whether the gate passed - RV(verdict) V(passed) or V(baseline), or V(insufficient) with
      O(insufficient_traffic=pass) - and every O(smoke) request passed.
  returned: always
  type: bool
  sample: false
own_requests:
  description:
    - The caller's own requests subtracted, by response counter - O(own_requests) plus the O(smoke)
      requests answered in the window.
  returned: always
  type: dict
  sample: {"hrsp_2xx": 24}
own_unanswered:
  description: O(smoke) requests that got no answer, so could not be subtracted (they fail the smoke test).
  returned: always
  type: int
  sample: 0
smoke:
  description: What the O(smoke) requests gave; V(null) without O(smoke).
  returned: always
  type: dict
  contains:
    passed:
      description: Whether every smoke request passed.
      type: bool
    passed_count:
      description: Smoke requests that passed.
      type: int
    failed_count:
      description: Smoke requests that failed.
      type: int
    requests:
      description: Smoke requests sent.
      type: int
    unanswered:
      description: Smoke requests that got no answer.
      type: int
    summary:
      description: Status, body and failure counts, as in M(bluegreen.haproxy.http_smoke)'s RV(bluegreen.haproxy.http_smoke#module:summary).
      type: dict
    msg:
      description: One line per URL saying how many requests passed or failed, and why.
      type: str
  sample: {"passed": true, "passed_count": 30, "failed_count": 0, "requests": 30, "unanswered": 0,
           "msg": "all 30 requests to http://release.example.com/release (via 127.0.0.1:80) passed"}
elapsed:
  description: Seconds this call watched.
  returned: always
  type: float
  sample: 12.004
window:
  description: Seconds between the baseline and the last read (longer than RV(elapsed) with an earlier O(baseline)).
  returned: always
  type: float
  sample: 12.0
reads:
  description: How many times the counters were read (or tried) after the baseline.
  returned: always
  type: int
  sample: 7
counter_resets:
  description: How many times the counters went down between two reads (a reload); see the description.
  returned: always
  type: int
  sample: 0
missed_reads:
  description: Reads that failed with a transient socket error and were skipped or retried.
  returned: always
  type: int
  sample: 0
last_missed_read_error:
  description: The error of the last missed read; V(null) when none was missed.
  returned: always
  type: str
max_error_rate:
  description: The limit applied, in percent.
  returned: always
  type: float
  sample: 1.0
min_requests:
  description: The fewest requests judged.
  returned: always
  type: int
  sample: 20
insufficient_traffic:
  description: What too few real requests meant, O(insufficient_traffic).
  returned: always
  type: str
  sample: fail
msg:
  description:
    - What was counted and what it means, also when the gate passes or does not judge.
  returned: always
  type: str
  sample: "backend_green: 7.5% of 200 real requests failed (hrsp_5xx 12, srv_abrt 3; eresp 3, econ 0) in 12s; the limit is 1%"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.traffic import (
    TrafficOptionError,
    normalize_baseline,
    own_counters,
    smoke_sender,
    traffic_gate_argument_spec,
    validate_options,
    watch_backend,
)


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(traffic_gate_argument_spec())
    argument_spec.update(
        backend=dict(type="str", required=True),
        duration=dict(type="float", default=0),
        interval=dict(type="float", default=1),
        baseline=dict(type="dict"),
        own_requests=dict(type="dict"),
        smoke=dict(type="list", elements="dict", options=dict(
            url=dict(type="str", required=True),
            resolve=dict(type="str"),
            headers=dict(type="dict", default={}),
            status_code=dict(type="list", elements="int", default=[200]),
            body_regex=dict(type="str"),
            timeout=dict(type="float", default=5),
            validate_certs=dict(type="bool", default=True),
        )),
        smoke_interval=dict(type="float", default=1),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    backend = params["backend"]

    # Every option is checked before anything is sent to HAProxy.
    try:
        if not backend or not backend.strip():
            raise TrafficOptionError("backend must name a backend, got an empty string")
        validate_options(params["duration"], params["interval"], params["max_error_rate"],
                         params["min_requests"], params["baseline"], params["insufficient_traffic"],
                         params["smoke_interval"])
        baseline = normalize_baseline(params["baseline"]) if params["baseline"] is not None else None
        own = own_counters(params["own_requests"])
        send_round, smoke_targets = smoke_sender(params["smoke"]) if params["smoke"] else (None, [])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (TrafficOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False)

    try:
        result = watch_backend(client, backend, baseline=baseline, duration=params["duration"],
                               interval=params["interval"], max_error_rate=params["max_error_rate"],
                               min_requests=params["min_requests"], retry_for=params["timeout"], own=own,
                               smoke=(send_round, smoke_targets) if send_round is not None else None,
                               smoke_interval=params["smoke_interval"],
                               insufficient_traffic=params["insufficient_traffic"])
    except RuntimeAPIError as exc:
        module.fail_json(msg=str(exc), changed=False, backend=backend)
    if not result["passed"]:
        module.fail_json(changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
