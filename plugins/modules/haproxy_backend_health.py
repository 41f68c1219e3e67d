#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_backend_health
short_description: Gate on the health of an HAProxy backend's servers
version_added: 0.1.0
description:
  - Reads the servers of one backend through the HAProxy Runtime API (C(show stat)) and decides
    whether enough of them are healthy to send traffic there. This is the gate before a switch.
  - A server counts as healthy only when its status is exactly C(UP) and its last health check
    passed. C(DOWN), C(MAINT), C(MAINT (via ...)), C(DRAIN), C(NOLB), C(UP n/m) (failing checks),
    C(DOWN n/m) (still rising) and C(no check) are not healthy (see O(allow_no_check)).
  - A backend with no servers is never healthy.
  - Optionally waits for the backend to become healthy, looking again every O(poll_interval)
    seconds until O(wait_timeout) has passed.
  - While waiting, a look that fails with a transient socket error (the socket missing or refusing
    connections, a connection reset, a timeout, an answer cut short - what a reload of HAProxy
    causes) is retried like an unhealthy look. If the last look still fails when O(wait_timeout) is
    up, the module fails naming the last error. Other errors (permission denied, an unknown
    backend) fail at once.
  - Fails when the backend is not healthy after the wait, naming each unhealthy server and its
    status, unless O(fail_on_unhealthy=false).
  - Only reads; never changes anything, so RV(ignore:changed) is always V(false).
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  backend:
    description:
      - Name of the backend to check, as in the HAProxy configuration.
      - An unknown backend is an error that lists the backends HAProxy has.
    type: str
    required: true
  min_healthy:
    description:
      - How many servers must be healthy.
      - A count such as V(2), or a percentage of the backend's servers such as V(50%), rounded
        up (V(50%) of 3 servers requires 2).
      - Must be at least 1 (or above V(0%)). A count larger than the number of servers in the
        backend is an error.
      - When not set, every server of the backend must be healthy.
    type: raw
  wait_timeout:
    description:
      - Seconds to wait for the backend to become healthy.
      - V(0) looks exactly once. Otherwise the module looks at once, then every O(poll_interval)
        seconds, and a last time when O(wait_timeout) is up.
    type: float
    default: 0
  poll_interval:
    description:
      - Seconds between two looks while waiting (see O(wait_timeout)).
    type: float
    default: 1.0
  allow_no_check:
    description:
      - Count servers without a health check (status C(no check)) as healthy.
      - By default they are unhealthy, because nothing proves they answer.
    type: bool
    default: false
  fail_on_unhealthy:
    description:
      - Fail when the backend is not healthy after the wait.
      - Set to V(false) to only report (RV(healthy=false)) without failing, for status reports.
      - Errors (unknown backend, unreachable socket, invalid options) fail either way.
    type: bool
    default: true
notes:
  - Server states come from C(show stat <backend> 4 -1); the columns are looked up by name, so
    HAProxy 2.6 and 3.0 are both understood.
seealso:
  - module: bluegreen.haproxy.haproxy_map
  - name: HAProxy management guide, show stat
    description: Server status strings and check columns.
    link: https://docs.haproxy.org/2.6/management.html#9.3-show%20stat
"""

EXAMPLES = r"""
- name: Gate the switch on every green server being up with a passing check
  bluegreen.haproxy.haproxy_backend_health:
    backend: backend_green

- name: Wait up to two minutes for the new release to pass its checks
  bluegreen.haproxy.haproxy_backend_health:
    socket: /run/haproxy/admin.sock
    backend: backend_green
    wait_timeout: 120
    poll_interval: 2

- name: Half the servers are enough
  bluegreen.haproxy.haproxy_backend_health:
    backend: backend_green
    min_healthy: "50%"

- name: Report on blue through the TCP stats socket, without failing
  bluegreen.haproxy.haproxy_backend_health:
    socket: ipv4@127.0.0.1:9999
    backend: backend_blue
    fail_on_unhealthy: false
  register: blue_health

- name: Show the servers that are not healthy
  ansible.builtin.debug:
    msg: "{{ blue_health.unhealthy_servers }}"
  when: not blue_health.healthy
"""

RETURN = r"""
healthy:
  description: Whether at least RV(required) servers are healthy (after the wait).
  returned: always
  type: bool
  sample: false
backend:
  description: The backend that was checked.
  returned: always
  type: str
  sample: backend_green
total:
  description: Number of servers in the backend.
  returned: always
  type: int
  sample: 2
healthy_count:
  description: Number of healthy servers at the last look.
  returned: always
  type: int
  sample: 1
unhealthy_count:
  description: Number of servers that are not healthy at the last look.
  returned: always
  type: int
  sample: 1
required:
  description:
    - The number of healthy servers O(min_healthy) resolves to for this backend (at least 1).
  returned: always
  type: int
  sample: 2
waited:
  description: Seconds spent waiting, from the first look to the last.
  returned: always
  type: float
  sample: 3.012
attempts:
  description: How many times the backend was looked at (1 when O(wait_timeout=0)).
  returned: always
  type: int
  sample: 4
transient_errors:
  description: How many of those looks failed with a transient socket error and were retried.
  returned: always
  type: int
  sample: 0
servers:
  description: Every server of the backend at the last look.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Server name.
      type: str
      sample: green2
    status:
      description: HAProxy's status string, such as C(UP), C(DOWN), C(DOWN 1/2), C(MAINT), C(DRAIN), C(NOLB), C(no check).
      type: str
      sample: DOWN
    healthy:
      description: Whether this server counts as healthy.
      type: bool
      sample: false
    reason:
      description: Why the server is not healthy; V(null) when it is.
      type: str
      sample: status 'DOWN'
    check_status:
      description: Result of the last health check (such as C(L7OK), C(L4CON), C(L7STS)); V(null) without a check or in maintenance.
      type: str
      sample: L7STS
    check_code:
      description: Layer 7 response code of the last check, when there is one.
      type: int
      sample: 503
    check_description:
      description: HAProxy's description of the last check result.
      type: str
      sample: Layer7 wrong status
    weight:
      description: The server's effective weight.
      type: int
      sample: 1
    current_sessions:
      description: Sessions currently on the server.
      type: int
      sample: 0
    address:
      description: The server's address and port.
      type: str
      sample: 10.0.0.12:8080
  sample:
    - name: green1
      status: UP
      healthy: true
      reason: null
      check_status: L7OK
      check_code: 200
      check_description: Layer7 check passed
      weight: 1
      current_sessions: 0
      address: 10.0.0.11:8080
unhealthy_servers:
  description: Names of the servers that are not healthy.
  returned: always
  type: list
  elements: str
  sample: ["green2"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.health import (
    HealthOptionError,
    failure_message,
    parse_min_healthy,
    query_backend_servers,
    validate_wait,
    wait_for_health,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(
        backend=dict(type="str", required=True),
        min_healthy=dict(type="raw"),
        wait_timeout=dict(type="float", default=0),
        poll_interval=dict(type="float", default=1.0),
        allow_no_check=dict(type="bool", default=False),
        fail_on_unhealthy=dict(type="bool", default=True),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    backend = params["backend"]

    # Every option is checked before anything is sent to HAProxy.
    try:
        if not backend or not backend.strip():
            raise HealthOptionError("backend must name a backend, got an empty string")
        min_healthy = parse_min_healthy(params["min_healthy"])
        validate_wait(params["wait_timeout"], params["poll_interval"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (HealthOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False)

    try:
        result = wait_for_health(
            lambda: query_backend_servers(client, backend),
            backend,
            min_healthy,
            allow_no_check=params["allow_no_check"],
            wait_timeout=params["wait_timeout"],
            poll_interval=params["poll_interval"],
        )
    except (HealthOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, backend=backend)

    if not result["healthy"] and params["fail_on_unhealthy"]:
        message = failure_message(result, result["waited"] if params["wait_timeout"] else None)
        module.fail_json(msg=message, changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
