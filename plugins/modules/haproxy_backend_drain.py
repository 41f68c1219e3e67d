#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_backend_drain
short_description: Wait until an HAProxy backend holds no session, optionally closing what remains
version_added: 0.2.0
description:
  - After a switch, new requests go to the new backend at once, but sessions already open on the
    previous one (a streaming response, a long poll, a websocket, a C(mode tcp) connection) stay
    there until they end. This module tells when the previous version can be stopped.
  - Reads the current sessions (C(scur) of C(show stat)) of every server of O(backend), and reads
    again every O(poll_interval) seconds until none is left or O(wait_timeout) seconds passed.
  - With O(shutdown=true), closes the sessions still open after the wait, with
    C(shutdown sessions server <backend>/<server>) for each server holding some, and reads again.
    The clients see their connection closed and reconnect, through the switch, to the new version.
    The servers stay UP.
  - Sessions left after the wait are reported (RV(sessions_left), RV(drained=false)), not a
    failure. Errors (an unknown backend, an unreachable socket, a shutdown HAProxy refuses) fail.
  - A look that fails with a transient socket error (HAProxy reloading) is retried until
    O(wait_timeout); if the last look still fails, the module fails naming the last error.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: full
    details: Waits and reads as usual; closes nothing and reports in RV(would_shut_down) what O(shutdown) would close.
  diff_mode:
    support: none
  idempotent:
    support: full
    details: A second run finds no session to close and reports no change.
options:
  backend:
    description:
      - The backend to drain, normally the previous version after a switch (C(backend_blue)).
      - An unknown backend is an error that lists the backends HAProxy has.
    type: str
    required: true
  wait_timeout:
    description:
      - Seconds to wait for the backend's sessions to end by themselves.
      - V(0) looks exactly once. Otherwise the module looks at once, then every O(poll_interval)
        seconds, and a last time when O(wait_timeout) is up.
    type: float
    default: 0
  poll_interval:
    description:
      - Seconds between two looks while waiting.
    type: float
    default: 0.5
  shutdown:
    description:
      - Close the sessions still open after the wait (C(shutdown sessions server)), so their
        clients reconnect to the new version.
      - Needs a socket at C(level admin); on an operator-level socket HAProxy answers
        C(Permission denied) and the module fails, closing nothing.
    type: bool
    default: false
notes:
  - Sessions are counted by the HAProxy worker that answers the socket. After a reload, sessions
    the previous worker still carries are not counted and not closed; HAProxy's
    C(hard-stop-after) bounds them.
  - The switch itself is M(bluegreen.haproxy.haproxy_map); run this module after it, with the
    backend that was live before.
seealso:
  - module: bluegreen.haproxy.haproxy_map
  - module: bluegreen.haproxy.haproxy_backend_health
  - name: HAProxy management guide, shutdown sessions
    description: The Runtime API command that closes a server's sessions.
    link: https://docs.haproxy.org/2.6/management.html#9.3-shutdown%20sessions%20server
"""

EXAMPLES = r"""
- name: Switch to green
  bluegreen.haproxy.haproxy_map:
    map: /etc/haproxy/maps/bluegreen.map
    entries:
      active: backend_green

- name: Give blue's open streams five minutes, then close what is left
  bluegreen.haproxy.haproxy_backend_drain:
    backend: backend_blue
    wait_timeout: 300
    poll_interval: 2
    shutdown: true
  register: blue_drain

- name: Stop blue only when it holds no session
  ansible.builtin.debug:
    msg: "{{ blue_drain.msg }}"
  failed_when: not blue_drain.drained

- name: Only report blue's open sessions (one look)
  bluegreen.haproxy.haproxy_backend_drain:
    socket: ipv4@127.0.0.1:9999
    backend: backend_blue
"""

RETURN = r"""
msg:
  description: One line saying what was found and done.
  returned: always
  type: str
  sample: "backend_blue: closed 1 session (blue1) after 30s; it holds no session now"
backend:
  description: The backend that was drained.
  returned: always
  type: str
  sample: backend_blue
sessions_left:
  description: Sessions still open on the backend's servers after the wait and the shutdown.
  returned: always
  type: int
  sample: 0
shut_down:
  description:
    - Sessions the shutdown closed (the drop of its servers' C(scur)); V(0) without O(shutdown)
      and in check mode.
  returned: always
  type: int
  sample: 1
would_shut_down:
  description: In check mode with O(shutdown=true), the sessions a real run would close; V(0) otherwise.
  returned: always
  type: int
  sample: 0
shutdown_servers:
  description: The servers a shutdown was sent to (in check mode, would be sent to).
  returned: always
  type: list
  elements: str
  sample: ["blue1"]
drained:
  description: Whether the backend holds no session (RV(sessions_left) is V(0)).
  returned: always
  type: bool
  sample: true
waited:
  description: Seconds from the first look to the end of the wait (the shutdown not included).
  returned: always
  type: float
  sample: 30.004
servers:
  description: Current sessions (C(scur)) of each server of the backend at the last look.
  returned: always
  type: dict
  sample: {"blue1": 0, "blue2": 0}
attempts:
  description: How many times the backend was read.
  returned: always
  type: int
  sample: 61
transient_errors:
  description: How many of those reads failed with a transient socket error and were retried.
  returned: always
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.drain import (
    DrainOptionError,
    describe,
    drain,
    validate_options,
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
        wait_timeout=dict(type="float", default=0),
        poll_interval=dict(type="float", default=0.5),
        shutdown=dict(type="bool", default=False),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    backend = params["backend"]

    # Every option is checked before anything is sent to HAProxy.
    try:
        validate_options(backend, params["wait_timeout"], params["poll_interval"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (DrainOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False)

    try:
        result = drain(client, backend, params["wait_timeout"], params["poll_interval"],
                       shutdown=params["shutdown"], check_mode=module.check_mode)
    except (DrainOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, backend=backend)

    changed = bool(result["shut_down"] or result["would_shut_down"])
    module.exit_json(changed=changed, msg=describe(result, module.check_mode), **result)


if __name__ == "__main__":
    main()
