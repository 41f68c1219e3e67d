#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_step
short_description: One step of the release engine on one HAProxy node (or the three, for a fleet of one node) in one module run
version_added: 0.2.0
description:
  - The release engine's three steps, used by the C(bluegreen.haproxy.release) role, one module run per node
    each; O(step) says which one. One module for the three, so Ansible builds its payload once per run.
    Status reads with it too (O(step=status)); persist.yml is O(step=prepare) with O(run.action=persist), then
    O(step=finish).
  - O(step=status) (read-only, status.yml) - every key of O(keys) at runtime and in the map file, the release
    lock at O(lock.path), and the health of every backend of O(backends), in one module run. It does not fail
    for what it cannot read - RV(map) (or a RV(health) item) is then failed with the reason - so the report
    shows every node, an unreadable one as unknown.
  - O(step=prepare) - B(READ) every key of O(services) at runtime (C(get map)) and in the map file, and the
    release lock at O(lock.path). From that read each key's target (a rollback picks the other backend,
    or the value a dead run's lock records as C(previous) when O(lock.force) takes it over). A node that
    already runs every target at runtime and on disk, with no lock held, stops there (RV(already_live)) -
    nothing will change on it, so it is neither locked nor checked. Refusals from this node's own read come
    before anything is written (RV(stage=PRECHECK)) - no target, a key missing from the live map, drift
    between runtime and disk (unless O(allow_drift)), another live value than O(services[].expected_current).
    B(LOCK) takes the release lock recording the run (owner, controller, start, the phase C(precheck), the
    map, keys, previous and target values), as M(bluegreen.haproxy.release_lock) does; in check mode it only
    proves the lock could be taken. B(PRECHECK) runs the socket's level, the health gate (waiting up to
    O(health_wait)), the per-server preflight and the current path through this node's listener, as
    M(bluegreen.haproxy.release_precheck) runs them. The action plugin then reads the node's clock,
    bracketed by the controller's (RV(clock)), when the lock was taken (or, in check mode, could be), so the
    fleet's switch instant can be trusted. Whether every node agrees on the live value is the fleet's
    question, judged by the role after this step.
  - O(step=switch) (SWITCH AND PROVE, armed for a fleet's instant; an async task when the fleet has more nodes than forks) - B(SWITCH) records the
    phase C(switching) in the release lock, then moves every key of O(targets) with compare-and-set from
    O(expected) (one key - C(set map); O(bulk) - one C(prepare)/C(commit map) of the whole map), waiting for
    O(switch_at) first and judging the compare-and-set at that instant, and reads the keys back, as
    M(bluegreen.haproxy.haproxy_map) does. The map file is not written (the finish step persists).
    B(SMOKE) takes the live-traffic baseline of each target when O(watch_seconds) is set, then O(requests)
    requests of each service's smoke test through this node's listener, answered by the target (as
    M(bluegreen.haproxy.http_smoke)). B(WATCH) judges real users' requests to each target for
    O(watch_seconds) from HAProxy's counters (as M(bluegreen.haproxy.haproxy_backend_traffic)), the
    engine's own smoke requests taken out; then the keys are read once more (B(WATCH VERIFY)) - a reload
    during the window would have put the map file's values back. The switch's result (RV(switch)) tells
    whether and when this node switched, so the finish step can roll it back.
  - O(step=canary) (C(release_strategy=canary), one run per step, armed like the switch) - every moving key's
    C(<key>.canary) = its target and C(<key>.weight) = O(weight) in one C(prepare)/C(commit map), waiting for
    O(switch_at), a compare-and-set on the stable values O(expected) and on the weights the step before left
    (O(weights)), the phase C(canary <weight>%) recorded in the lock; read back; then the step's analysis
    window of O(watch_seconds) - real users' requests to the canary backend and to the stable one, from
    HAProxy's counters, judged by O(max_error_rate) and O(min_requests). A canary backend that gets no request
    while the stable one gets real traffic fails as "the canary does not route". O(weight=0) ends the canary
    (the abort) - the weights back to 0 at the instant, read back, and the stable version's smoke test through
    this node's listener. The live key itself never moves in this step.
  - O(step=finish) (after the fleet's verdict) - O(outcome=persist) (every node passed) writes O(targets) to
    the map file, a compare-and-set on the live values that never moves traffic (skipped with
    O(persist=false)). O(outcome=rollback) (a node failed) - when this node O(switched), records the phase
    C(rolling back) in the lock, puts O(previous) back at runtime and on disk in one change, reads it back
    (B(ROLLBACK VERIFY)) and smoke-tests the old version through this node's listener; a node that did not
    switch has nothing to roll back. O(outcome=release) - nothing to change (nothing moved anywhere). In
    every case the release lock is released last, also after a failure.
  - O(step=single) (a fleet of one node, the release role's cutover and rollback) - steps C(prepare), C(switch)
    and C(finish) in one module run - with no other node to wait for, the gates between them judge this node
    alone. C(prepare) runs as above; when it passed with something to switch (not in check mode, not a node
    already live, not the end of a canary a dead run left), the switch and its proof run at once (no
    O(switch_at)), to the targets and from the live values C(prepare) read; then C(finish) persists when they
    passed and rolls back when they failed, releasing the lock either way, and rolls back a node whose persist
    failed after it switched. O(drain_seconds) drains the backends a persisted release left. RV(switch_step) and
    RV(finish_step) are those steps' results; otherwise the result is C(prepare)'s alone.
  - The first refusal or failure ends a step; RV(stage) names it. An option another step uses, set with this
    step, is refused before anything is read (RV(stage=INIT)).
  - The precheck's options O(health_wait), O(poll_interval), O(force), O(preflight_validate_certs) and
    O(skip_servers) are step C(prepare)'s, O(allow_no_check) steps C(prepare) and C(status)'s. O(max_error_rate),
    O(min_requests) and O(insufficient_traffic) judge the window of steps C(switch) and C(canary).
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.release_step
  - bluegreen.haproxy.precheck
  - bluegreen.haproxy.traffic_gate
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: partial
    details:
      - O(step=status) only reads. O(step=prepare) runs in check mode and takes no lock. O(step=canary),
        O(step=switch) and O(step=finish) are skipped in check mode (the release role stops before them).
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - O(step=prepare) takes the release lock, which the finish step releases.
      - A node already on O(targets) is not changed by O(step=switch) (the compare-and-set finds nothing to do).
      - Persisting values already on disk, or rolling back a node that is back, changes nothing.
options:
  step:
    description: The step to run on this node.
    type: str
    choices: [status, prepare, canary, switch, finish, single]
    required: true
  keys:
    description: The map keys to read. Step C(status) only, required there.
    type: list
    elements: str
  backends:
    description: The backends whose health is read. Step C(status) only.
    type: list
    elements: str
    default: []
  map:
    description: The map as HAProxy names it (C(show map)).
    type: str
    required: true
  map_file:
    description:
      - The map file on this node. Defaults to O(map).
      - Step C(switch) reads it after the watch window, to tell a reload from a bad release.
    type: path
  lock:
    description:
      - The release lock. Omit it for a run without a lock.
      - Step C(prepare) takes it; steps C(switch) and C(finish) work under it (the phase recorded in it),
        and C(finish) releases it. Step C(status) reads it (O(lock.path) only).
    type: dict
    suboptions:
      path:
        description: The lock file.
        type: path
        required: true
      owner:
        description: The run that holds it. Steps C(switch) and C(finish) only, required there (C(prepare) takes it from O(run.owner)).
        type: str
      force:
        description: Take the lock over whoever holds it (a run that died). Step C(prepare) only.
        type: bool
        default: false
      stale_after:
        description: Seconds after which another owner's lock is taken over; V(0) never. Step C(prepare) only.
        type: int
        default: 0
  run:
    description: The run, as the lock records it. Step C(prepare) only, required there.
    type: dict
    suboptions:
      owner:
        description: Who runs the release (the lock's owner).
        type: str
        required: true
      action:
        description:
          - What the run does. V(persist) writes the live values to the map file, which is what drift calls for.
            Each key's target is its live value, a service's C(target) names what must be live, and there is
            nothing to prove before the lock (no health gate, preflight or current path).
        type: str
        choices: [cutover, rollback, persist]
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
  allow_drift:
    description: Switch even when runtime and disk disagree. Step C(prepare) only.
    type: bool
    default: false
  preflight:
    description: Send the smoke request to every server of each target directly first. Step C(prepare) only.
    type: bool
    default: true
  smoke_current:
    description: Smoke-test the current path through this node's listener first. Step C(prepare) only.
    type: bool
    default: true
  test_listener:
    description:
      - This node's test listener (C(host:port), as seen from the node) - a frontend that routes by the map key
        C(<key>.preview) and refuses requests while the map has none (the C(haproxy) role renders one with
        C(haproxy_test_listener)). Step C(prepare) only.
      - After a passed precheck, B(PREVIEW) sets each moving key's C(<key>.preview) to its target at runtime,
        sends each service's smoke test to this address (the new version through HAProxy itself - its TLS,
        ACLs, rewrites, header rules - before any user), then removes the entries again, whatever happened.
        A failure refuses the node (RV(stage=PRECHECK)) with nothing switched. Not in check mode (it sets runtime
        entries); RV(preview) holds the smoke results.
    type: str
  canary:
    description:
      - The run is a canary (C(release_strategy=canary)) - also read each key's C(<key>.weight), return it in the
        plan (C(weights)), and refuse a node where a canary already runs (a weight above 0). Step C(prepare) only.
    type: bool
    default: false
  weight:
    description: The share of users (0-100) this canary step sends to the target; V(0) ends the canary. Step C(canary) only, required there.
    type: int
  weights:
    description: Each key's C(<key>.weight) as the step before left it (the compare-and-set's expected value). Step C(canary) only.
    type: dict
    default: {}
  canary_header:
    description:
      - The request header the configuration hashes each user's bucket from (C(req.hdr(<name>),crc32(1),mod(100))).
        Set, each canary step first smoke-tests the canary through this node's listener - the smoke requests
        carry a value whose bucket is in the step's share, so HAProxy itself must send them to the target.
        Step C(canary) only.
    type: str
  canary_weight:
    description:
      - After a canary, the last step's weight - the switch then promotes, setting every moving key's
        C(<key>.weight) back to 0 in the same commit as the new live value (a compare-and-set on that weight).
        Step C(switch) only.
    type: int
  targets:
    description:
      - Every key of the run with the value to make live (step C(switch)), or with its new value, persisted
        on success (step C(finish)).
      - Steps C(switch) and C(finish) only, required there.
    type: dict
  expected:
    description: Every key with the value that must still be live at the instant (the compare-and-set). Step C(switch) only, required there.
    type: dict
  bulk:
    description:
      - Switch (or roll back) every key in one C(prepare)/C(commit map) (several services), instead of one C(set map).
      - Steps C(switch) and C(finish) only.
    type: bool
    default: false
  switch_at:
    description: The fleet's instant (epoch seconds of this node's clock); V(null) switches at once. Step C(switch) only.
    type: float
  watch_seconds:
    description: Seconds of the watch window; V(0) for none. Step C(switch) only.
    type: float
    default: 0
  watch_interval:
    description:
      - Seconds between two rounds of smoke requests in the window (counters are read at least every second).
      - Step C(switch) only.
    type: float
    default: 1
  outcome:
    description: The fleet's verdict. Step C(finish) only, required there.
    type: str
    choices: [persist, rollback, release]
  previous:
    description: Every key with the value it had before the run (put back by a rollback). Step C(finish) only, required there.
    type: dict
  switched:
    description: Whether this node's live map moved in this run (only then is there something to roll back). Step C(finish) only.
    type: bool
    default: false
  persist:
    description:
      - Write the new values to the map file on success (V(false) - C(release_persist=manual), persist.yml later).
      - Step C(finish) only.
    type: bool
    default: true
  backup:
    description: Back up the map file before it is replaced. Step C(finish) only.
    type: bool
    default: false
  drain_until:
    description:
      - With O(outcome=persist), after the write - wait until the backends the release left (O(previous), unless
        another key still targets them) hold no session (C(scur) of their servers in C(show stat)), up to this
        instant (epoch seconds of this node's clock), as M(bluegreen.haproxy.haproxy_backend_drain) does.
      - The release role passes the fleet's verdict plus C(release_drain_timeout), so every node's wait ends at
        the same instant whatever batch of forks it ran in. Omitted - no drain. Step C(finish) only.
      - A drain never fails the step - what the old version still holds is reported (RV(drain)).
    type: float
  drain_seconds:
    description:
      - Step C(single) - as O(drain_until), counted from the moment the switch and its proof passed on this node
        (the release role passes C(release_drain_timeout)). Omitted or V(0) - no drain.
    type: float
  drain_shutdown:
    description: After the drain's wait, close the sessions left (C(shutdown sessions server)), so those clients
      reconnect to the new version. Step C(finish) only, with O(drain_until).
    type: bool
    default: false
  requests:
    description:
      - Requests of each smoke test - the current path's (step C(prepare)), the new version's after the switch
        (step C(switch)), the old version's after a rollback (step C(finish)).
  request_timeout:
    description: Seconds for each request (step C(switch) also retries a counter read during a reload that long).
  validate_certs:
    description: Verify TLS certificates of the smoke tests (step C(prepare) - of the current path).
seealso:
  - module: bluegreen.haproxy.release_precheck
  - module: bluegreen.haproxy.release_lock
  - module: bluegreen.haproxy.haproxy_map
  - module: bluegreen.haproxy.haproxy_map_info
"""

EXAMPLES = r"""
- name: STATUS of this node (read-only) - the key live and on disk, the lock, both backends' health
  bluegreen.haproxy.release_step:
    step: status
    map: /etc/haproxy/maps/bluegreen.map
    keys: [active]
    lock:
      path: /etc/haproxy/maps/bluegreen.map.lock
    backends: [backend_blue, backend_green]
  register: status_read

- name: PREPARE this node for backend_green
  bluegreen.haproxy.release_step:
    step: prepare
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

- name: SWITCH AND PROVE this node
  bluegreen.haproxy.release_step:
    step: switch
    map: /etc/haproxy/maps/bluegreen.map
    targets: "{{ prepared.plan.targets }}"
    expected: "{{ prepared.plan.lives }}"
    services:
      - key: active
        smoke_url: http://shop.example.com/health
        smoke_resolve: 127.0.0.1:80
    lock:
      path: /etc/haproxy/maps/bluegreen.map.lock
      owner: "awx-job-{{ awx_job_id | default('manual') }}"
    requests: 10
    watch_seconds: 60
  register: switched

- name: FINISH this node - persist when every node passed, otherwise roll back
  bluegreen.haproxy.release_step:
    step: finish
    map: /etc/haproxy/maps/bluegreen.map
    outcome: "{{ 'rollback' if fleet_failed else 'persist' }}"
    targets: "{{ prepared.plan.targets }}"
    previous: "{{ prepared.plan.lives }}"
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
step:
  description:
    - The step this run was (O(step)), so a result says what ran also when the task's O(step) is a
      template (the role picks V(single) or V(prepare)).
  returned: when the step ran (not for an option refused before it)
  type: str
  sample: switch
map:
  description:
    - What step C(status) read of O(keys) - C(entries), C(disk_entries), C(drift_keys) and more, as
      M(bluegreen.haproxy.haproxy_map_info) returns them; C(failed) and C(msg) when the map (or the lock) could
      not be read.
  returned: step C(status)
  type: dict
health:
  description:
    - Each backend of O(backends), as M(bluegreen.haproxy.haproxy_backend_health) returns it with
      O(bluegreen.haproxy.haproxy_backend_health#module:fail_on_unhealthy=false), plus C(item) (the backend);
      C(failed) and C(msg) when it could not be read (e.g. no such backend). Step C(status).
  returned: step C(status)
  type: list
  elements: dict
stage:
  description:
    - The stage that refused or failed this node, or V(null).
    - V(INIT) (bad options, any step; the only stage of step C(status)); step C(prepare) - V(READ), V(LOCK) or V(PRECHECK);
      step C(canary) - V(CANARY); step C(switch) - V(SWITCH),
      V(SMOKE) or V(WATCH VERIFY); step C(finish) - V(PERSIST), V(ROLLBACK) or V(UNLOCK).
  returned: always
  type: str
entries:
  description: The keys' live values (a key HAProxy does not have is left out). Step C(prepare).
  returned: when the map was read
  type: dict
  sample: {"active": "backend_blue"}
disk_entries:
  description: The keys' values in the map file; V(null) when the file could not be read. Step C(prepare).
  returned: when the map was read
  type: dict
lock:
  description: The release lock as it was found (C(held), C(holder), C(age)). Steps C(prepare) and C(status).
  returned: step C(prepare) when the map was read; step C(status) when O(lock) is set
  type: dict
preview:
  description: Per moving service (with its C(key)), its smoke test through O(test_listener); V(null) without one.
  returned: step C(prepare) with O(test_listener), when the precheck passed
  type: list
  elements: dict
plan:
  description: Per key C(lives), C(disks), C(targets), C(currents), and a dead run's C(recovery) record. Step C(prepare).
  returned: when the map and the lock were read
  type: dict
already_live:
  description: Every target is live at runtime and on disk and no lock is held; nothing was locked or checked.
  returned: step C(prepare)
  type: bool
lock_acquired:
  description: The lock was taken (in check mode - could be taken).
  returned: step C(prepare)
  type: bool
lock_taken:
  description: This run now holds the lock on this node (never in check mode).
  returned: step C(prepare)
  type: bool
holder:
  description: The lock record after the step, or the other holder's when it refused.
  returned: step C(prepare)
  type: dict
precheck:
  description: The precheck, as M(bluegreen.haproxy.release_precheck) returns it; V(null) when it did not run.
  returned: step C(prepare)
  type: dict
clock:
  description: The node's clock against the controller's (C(offset), C(error), C(readings)), read by the action plugin.
  returned: step C(prepare), when the lock was acquired
  type: dict
work_seconds:
  description: How long the step's own work took on the node (reads, waits, requests), within RV(module_seconds).
  returned: step C(prepare), when the options were valid
  type: float
module_started:
  description: When the module run started on the controller's clock (epoch seconds), set by the action plugin.
  returned: always, except for an async task's launch
  type: float
module_seconds:
  description: How long the module run took, on the controller's clock, set by the action plugin.
  returned: always, except for an async task's launch
  type: float
switched:
  description: Whether this node's live map moved (the finish step rolls it back when the fleet failed).
  returned: step C(switch)
  type: bool
switch:
  description: The switch, as M(bluegreen.haproxy.haproxy_map) returns it (C(switched_at), C(late_by), C(runtime_entries), C(refused), ...).
  returned: steps C(switch) and C(canary)
  type: dict
baseline:
  description: Per key, the target's counters read right after the switch (the watch window judges from them).
  returned: step C(switch)
  type: dict
smoke:
  description: Per key, the smoke test as M(bluegreen.haproxy.http_smoke) returns it (step C(canary) - the stable version's, after the canary ended).
  returned: steps C(switch) and C(canary)
  type: dict
traffic:
  description: Per watched key, the watch window as M(bluegreen.haproxy.haproxy_backend_traffic) returns it.
  returned: step C(switch)
  type: dict
watch_verify:
  description: The keys read after the window, as M(bluegreen.haproxy.haproxy_map_info) returns them.
  returned: step C(switch)
  type: dict
persist:
  description: The map file write, as M(bluegreen.haproxy.haproxy_map) returns it; V(null) when not written.
  returned: step C(finish)
  type: dict
rollback:
  description: The rollback's map change, as M(bluegreen.haproxy.haproxy_map) returns it; V(null) when none.
  returned: step C(finish)
  type: dict
rollback_smoke:
  description: Per service (with its C(key)), the old version's smoke test after the rollback.
  returned: step C(finish)
  type: list
  elements: dict
rolled_back:
  description: Whether this node is back on O(previous) (read back).
  returned: step C(finish)
  type: bool
unlocked:
  description: Whether the release lock was released.
  returned: step C(finish)
  type: bool
canary_step:
  description:
    - Per moving key, the canary step's analysis window - C(weight), C(backend), C(requests), C(errors),
      C(error_rate), C(verdict) (C(passed), C(failed), C(insufficient), C(does not route), C(share gone) - the
      share was gone at the end of the window, e.g. HAProxy reloaded - or C(moved)), C(started), C(ended)
      (epoch) and C(stable) (the stable backend's C(requests), C(errors), C(error_rate), C(verdict)).
      With O(weight=0), per key whose share was ended, C(verdict=ended) (and a C(note) when the share was
      already gone at runtime, so nothing was written for it). V(null) when the step failed before its window.
  returned: step C(canary)
  type: dict
canary_verify:
  description:
    - The live values of every moving key, its C(<key>.canary) and its C(<key>.weight) (V(null) when absent),
      read once at the end of the step's window; C(failed) and C(msg) when the map could not be read.
  returned: step C(canary) with O(weight) above 0, when the window ran
  type: dict
weight:
  description: The weight this canary step set.
  returned: step C(canary)
  type: int
drain:
  description:
    - Per key whose previous backend was drained, that backend's report - C(backend), C(sessions_left) (after the
      wait and the shutdown), C(shut_down) (sessions closed), C(waited), C(servers) (C(scur) per server) and more,
      as M(bluegreen.haproxy.haproxy_backend_drain) returns them; C(error) instead when it could not be read.
    - V(null) without O(drain_until), or when no backend was left.
  returned: step C(finish)
  type: dict
  sample: {"active": {"backend": "backend_blue", "sessions_left": 0, "shut_down": 1, "waited": 30.0}}
switch_step:
  description:
    - Step C(single) - the result of the switch and its proof (RV(switched), RV(switch), RV(smoke), RV(traffic),
      RV(watch_verify), RV(stage), ...), as step C(switch) returns it.
  returned: step C(single), when the switch ran
  type: dict
finish_step:
  description:
    - Step C(single) - the result of the last finish (RV(persist), RV(rollback), RV(rollback_smoke), RV(rolled_back),
      RV(drain), RV(unlocked), ...), as step C(finish) returns it.
  returned: step C(single), when the switch ran
  type: dict
failures:
  description:
    - Every failure, each prefixed with its stage and a colon (V(SMOKE), V(PERSIST), ...) - step C(switch) when
      the watch window found several; step C(single) when a step after C(prepare) failed, each failed step's.
  returned: steps C(switch) and C(single), when they failed
  type: list
  elements: str
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import lock_argument_spec
from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileEncodingError,
    MapFileError,
    read_map_file,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import MapChangeError, normalize_entries, validate_key
from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import (
    PrecheckOptionError,
    precheck_argument_spec,
    validate_options as validate_precheck_options,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.release_steps import (
    SERVICE_SPEC,
    finish,
    canary_step,
    prepare,
    single,
    status,
    switch_and_prove,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    escape_argument,
    runtime_api_argument_spec,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import LazyTLSContext, SmokeOptionError, parse_resolve
from ansible_collections.bluegreen.haproxy.plugins.module_utils.traffic import (
    TrafficOptionError,
    traffic_gate_argument_spec,
    validate_options as validate_watch_options,
)

RUN_SPEC = dict(
    owner=dict(type="str", required=True),
    action=dict(type="str", choices=["cutover", "rollback", "persist"], default="cutover"),
    controller=dict(type="str"),
    controller_pid=dict(type="int"),
    started_at=dict(type="str"),
)
LOCK_SPEC = lock_argument_spec()

# Which options each step reads besides the ones every step reads (socket, timeout, step, map,
# map_file, services, lock, requests, request_timeout, validate_certs). Any other option set to
# something else than its default is refused: it would be silently ignored otherwise.
PREPARE_OPTIONS = ("run", "allow_drift", "preflight", "smoke_current", "health_wait", "poll_interval", "allow_no_check",
                   "force", "preflight_validate_certs", "skip_servers", "test_listener", "canary")
STEP_OPTIONS = dict(
    status=("keys", "backends", "allow_no_check"),
    prepare=PREPARE_OPTIONS,
    canary=("targets", "expected", "bulk", "switch_at", "watch_seconds", "watch_interval", "max_error_rate",
            "min_requests", "insufficient_traffic", "weight", "weights", "canary_header"),
    switch=("targets", "expected", "bulk", "switch_at", "watch_seconds", "watch_interval", "max_error_rate",
            "min_requests", "insufficient_traffic", "canary_weight"),
    finish=("outcome", "targets", "previous", "switched", "persist", "bulk", "backup", "drain_until", "drain_shutdown"),
    # A fleet of one node: prepare's, then the switch's and the finish's that PREPARE's read does not decide.
    single=PREPARE_OPTIONS + ("bulk", "watch_seconds", "watch_interval", "max_error_rate", "min_requests",
                              "insufficient_traffic", "persist", "backup", "drain_seconds", "drain_shutdown"),
)
LOCK_OPTIONS = dict(status=("path",), prepare=("path", "force", "stale_after"), switch=("path", "owner"),
                    canary=("path", "owner"), finish=("path", "owner"), single=("path", "force", "stale_after"))
REQUIRED_IF = [
    ("step", "status", ("keys",)),
    ("step", "prepare", ("run", "services")),
    ("step", "single", ("run", "services")),
    ("step", "switch", ("targets", "expected", "services")),
    ("step", "canary", ("targets", "expected", "services", "weight")),
    ("step", "finish", ("outcome", "targets", "previous", "services")),
]


def argument_spec():
    spec = runtime_api_argument_spec()
    spec.update(
        step=dict(type="str", choices=["status", "prepare", "canary", "switch", "finish", "single"], required=True),
        map=dict(type="str", required=True),
        map_file=dict(type="path"),
        services=dict(type="list", elements="dict", options=SERVICE_SPEC),
        # status
        keys=dict(type="list", elements="str", no_log=False),
        backends=dict(type="list", elements="str", default=[]),
        lock=dict(type="dict", options=LOCK_SPEC),
        # prepare
        run=dict(type="dict", options=RUN_SPEC),
        allow_drift=dict(type="bool", default=False),
        preflight=dict(type="bool", default=True),
        smoke_current=dict(type="bool", default=True),
        # the precheck's (and requests, request_timeout, validate_certs: the smoke tests of every step)
        **precheck_argument_spec(),
        test_listener=dict(type="str"),
        canary=dict(type="bool", default=False),
        # switch (and finish)
        targets=dict(type="dict"),
        expected=dict(type="dict"),
        bulk=dict(type="bool", default=False),
        switch_at=dict(type="float"),
        watch_seconds=dict(type="float", default=0),
        watch_interval=dict(type="float", default=1),
        **traffic_gate_argument_spec(),
        canary_weight=dict(type="int"),
        # canary
        weight=dict(type="int"),
        weights=dict(type="dict", default={}),
        canary_header=dict(type="str"),
        # finish
        outcome=dict(type="str", choices=["persist", "rollback", "release"]),
        previous=dict(type="dict"),
        switched=dict(type="bool", default=False),
        persist=dict(type="bool", default=True),
        backup=dict(type="bool", default=False),
        drain_until=dict(type="float"),
        drain_shutdown=dict(type="bool", default=False),
        # single
        drain_seconds=dict(type="float"),
    )
    return spec


def option_refusal(step, params, spec):
    """Why the options do not fit `step` (an option only another step reads, set; the lock's owner
    missing where the lock is not taken but held), or None."""
    shared = ("socket", "timeout", "step", "map", "map_file", "services", "lock", "requests", "request_timeout",
              "validate_certs")
    unused = [name for name in spec
              if name not in shared and name not in STEP_OPTIONS[step] and params[name] != spec[name].get("default")]
    lock = params["lock"]
    if lock:
        unused += ["lock.%s" % name for name in LOCK_SPEC
                   if name not in LOCK_OPTIONS[step] and lock[name] != LOCK_SPEC[name].get("default")]
    if unused:
        users = dict((name, [other for other in STEP_OPTIONS
                             if name in STEP_OPTIONS[other] or name in ["lock.%s" % sub for sub in LOCK_OPTIONS[other]]])
                     for name in unused)
        return "step %s does not use %s: remove %s (%s)" % (
            step, ", ".join(unused), "it" if len(unused) == 1 else "them",
            "; ".join("%s is for step %s" % (name, " and ".join(
                [", ".join(users[name][:-1])] + users[name][-1:] if len(users[name]) > 2 else users[name]))
                for name in unused))
    if lock and step in ("switch", "canary", "finish") and not lock["owner"]:
        return "step %s needs lock.owner, the run that holds the lock %s" % (step, lock["path"])
    return None


def read_disk(params):
    """(the map file's text or None when there is none, why an existing file cannot be read or None)."""
    try:
        return read_map_file(params["map_file"] or params["map"]), None
    except MapFileEncodingError as exc:
        # The file is there but an entry cannot be read for sure: never report its keys as absent.
        return None, str(exc)
    except MapFileError:
        return None, None


def run_prepare(module, params):
    """PREPARE: read, lock, prove (module_utils/release_steps.prepare)."""
    return prepare_step(module, params)[0]


def prepare_step(module, params):
    """(PREPARE's result, the Runtime API client it used): step single goes on with the same client."""
    try:
        skip_servers = validate_precheck_options(params["health_wait"], params["poll_interval"], params["requests"],
                                                 params["request_timeout"], params["skip_servers"])

        client = RuntimeAPIClient(params["socket"], params["timeout"])
        if params["test_listener"]:
            try:
                parse_resolve(params["test_listener"])
            except SmokeOptionError as exc:
                raise PrecheckOptionError("test_listener: %s" % exc)
    except (PrecheckOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, stage="INIT")
    # One context per setting, built by the first https request: the trust store is read at most
    # once for each, and never by a run that only speaks http.
    tls = dict((validate, LazyTLSContext(validate))
               for validate in set((params["validate_certs"], params["preflight_validate_certs"])))

    disk_text, disk_error = read_disk(params)

    started = time.time()
    result = prepare(
        client, params["map"], disk_text, params["services"], params["run"], lock=params["lock"],
        allow_drift=params["allow_drift"], check_mode=module.check_mode, disk_error=disk_error,
        test_listener=params["test_listener"], canary=params["canary"],
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
    return result, client


def check_switch_options(params):
    """Raise TrafficOptionError for a switch or canary option that cannot work (steps switch, canary, single)."""
    if len(params["services"]) > 1 and not params["bulk"]:
        raise TrafficOptionError("several keys switch together only with bulk=true")
    if params["requests"] < 1:
        raise TrafficOptionError("requests must be at least 1, got %d" % params["requests"])
    for name in ("weight", "canary_weight"):
        if params[name] is not None and not 0 <= params[name] <= 100:
            raise TrafficOptionError("%s must be a share of users from 0 to 100, got %d" % (name, params[name]))
    validate_watch_options(params["watch_seconds"], min(params["watch_interval"], 1.0), params["max_error_rate"],
                           params["min_requests"], None, params["insufficient_traffic"], params["watch_interval"])


def switch_options(module, params):
    """(targets, expected, client) of steps switch and canary, every option checked before anything is asked."""
    keys = [service["key"] for service in params["services"]]
    try:
        targets = normalize_entries("targets", params["targets"])
        expected = normalize_entries("expected", params["expected"])
        if sorted(targets) != sorted(keys) or sorted(expected) != sorted(keys):
            raise TrafficOptionError("targets and expected must name exactly the services' keys (%s)" % ", ".join(keys))
        check_switch_options(params)
        return targets, expected, RuntimeAPIClient(params["socket"], params["timeout"])
    except (TrafficOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, switched=False, stage="INIT")


def watch_options(params):
    return dict(seconds=params["watch_seconds"], interval=params["watch_interval"],
                max_error_rate=params["max_error_rate"], min_requests=params["min_requests"],
                insufficient_traffic=params["insufficient_traffic"])


def smoke_options(params):
    return dict(requests=params["requests"], timeout=params["request_timeout"], validate_certs=params["validate_certs"])


def run_canary(module, params):
    """CANARY: one step's share at the instant, read back, its analysis window - or, weight 0, its end (release_steps.canary_step)."""
    targets, expected, client = switch_options(module, params)
    return canary_step(client, params["map"], params["services"], targets, expected, params["weight"], params["weights"],
                       switch_at=params["switch_at"], lock=params["lock"], watch=watch_options(params),
                       smoke=smoke_options(params), smoke_header=params["canary_header"])


def switch_step(client, params, targets, expected, lock):
    try:
        disk_text = read_map_file(params["map_file"] or params["map"]) if params["watch_seconds"] > 0 else None
    except MapFileError:
        disk_text = None  # the reload hint is lost, nothing else
    return switch_and_prove(
        client, params["map"], targets, expected, params["services"], bulk=params["bulk"],
        switch_at=params["switch_at"], lock=lock, smoke=smoke_options(params), watch=watch_options(params),
        disk_text=disk_text, canary_weight=params["canary_weight"])


def finish_step(module, client, params, outcome, targets, previous, switched, lock, drain_until):
    return finish(
        client, params["map"], params["map_file"] or params["map"], params["services"], outcome, targets,
        previous, switched=switched, persist=params["persist"], bulk=params["bulk"], lock=lock,
        smoke=smoke_options(params), backup=module.backup_local if params["backup"] else None, module=module,
        drain=dict(until=drain_until, shutdown=params["drain_shutdown"]) if drain_until is not None else None)


def run_switch(module, params):
    """SWITCH AND PROVE: compare-and-set (at the instant), read back, smoke, watch (release_steps.switch_and_prove)."""
    targets, expected, client = switch_options(module, params)
    return switch_step(client, params, targets, expected, params["lock"])


def run_finish(module, params):
    """FINISH: persist or roll back, then release the lock (release_steps.finish)."""
    try:
        targets = normalize_entries("targets", params["targets"])
        previous = normalize_entries("previous", params["previous"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (MapChangeError, RuntimeAPIError, ValueError) as exc:
        module.fail_json(msg=str(exc), changed=False, stage="INIT")
    return finish_step(module, client, params, params["outcome"], targets, previous, params["switched"],
                       params["lock"], params["drain_until"])


def run_single(module, params):
    """A fleet of one node: PREPARE, SWITCH AND PROVE and FINISH in one run (release_steps.single)."""
    # The later steps' options are proved before PREPARE reads or locks anything.
    try:
        check_switch_options(params)
        if (params["drain_seconds"] or 0) < 0:
            raise TrafficOptionError("drain_seconds must be 0 or more, got %s" % params["drain_seconds"])
    except TrafficOptionError as exc:
        module.fail_json(msg=str(exc), changed=False, stage="INIT")
    prepared, client = prepare_step(module, params)
    plan = prepared.get("plan") or {}
    held = dict(path=params["lock"]["path"], owner=params["run"]["owner"]) if params["lock"] else None
    return single(
        prepared,
        lambda locked: switch_step(client, params, plan["targets"], plan["lives"], held if locked else None),
        lambda outcome, switched, locked, drain_until: finish_step(
            module, client, params, outcome, plan["targets"], plan["lives"], switched, held if locked else None,
            drain_until),
        check_mode=module.check_mode, drain_seconds=params["drain_seconds"])


def run_status(module, params):
    """STATUS: read-only, every key live and on disk, the lock, each backend's health (release_steps.status)."""
    try:
        for key in params["keys"]:
            escape_argument(key)
            validate_key(key)
    except ValueError as exc:  # InvalidMapKeyError too
        module.fail_json(msg="invalid keys: %s" % exc, changed=False, stage="INIT")
    try:
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except RuntimeAPIError as exc:
        module.fail_json(msg=str(exc), changed=False, stage="INIT")
    disk_text, disk_error = read_disk(params)
    return status(client, params["map"], disk_text, params["keys"], lock_path=(params["lock"] or {}).get("path"),
                  backends=params["backends"], allow_no_check=params["allow_no_check"], disk_error=disk_error)


STEPS = dict(status=run_status, prepare=run_prepare, canary=run_canary, switch=run_switch, finish=run_finish,
             single=run_single)


def main():
    spec = argument_spec()
    module = AnsibleModule(argument_spec=spec, required_if=REQUIRED_IF, supports_check_mode=True)
    params = module.params
    step = params["step"]
    if module.check_mode and step not in ("status", "prepare", "single"):
        # As Ansible skips a module without check mode: the release role stops before these steps then.
        module.exit_json(skipped=True, changed=False, msg="step %s does not run in check mode" % step)
    refusal = option_refusal(step, params, spec)
    if refusal:
        module.fail_json(msg=refusal, changed=False, stage="INIT", **(dict(switched=False) if step == "switch" else {}))
    result = STEPS[step](module, params)
    result["step"] = step
    # Through module.warn: a `warnings` key in the result is deprecated (removed in ansible-core 2.23).
    for warning in result.pop("warnings", None) or []:
        module.warn(warning)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
