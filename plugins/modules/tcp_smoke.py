#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: tcp_smoke
short_description: Smoke-test a C(mode tcp) service through a listener with N connections
version_added: 0.2.0
description:
  - Opens O(requests) TCP connections to O(host) and O(port), one after the other. On each it
    optionally sends O(send), optionally reads until the regular expression O(expect) matches
    what was received, then closes it.
  - The check passes only when every connection passes, so one wrong or broken server behind a
    C(mode tcp) frontend is caught when enough connections are made to reach every server.
  - Connection refused, timeouts, a peer that closes before O(expect) matched and an answer
    longer than O(max_bytes) without a match are reported per connection, with what was received.
  - The module only reads; it never reports a change.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.smoke.repeat
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  host:
    description:
      - The address to connect to, usually one HAProxy node's listener, for example C(10.0.0.5),
        C(haproxy1.internal), C(::1) or C([2001:db8::5]). The port goes in O(port).
    type: str
    required: true
  port:
    description:
      - The TCP port of the listener (1-65535).
    type: int
    required: true
  send:
    description:
      - Text sent on each connection once it is open, encoded as UTF-8.
      - "Backslash escapes are decoded: C(\\r), C(\\n), C(\\t), C(\\0), C(\\xHH) (one byte) and
        C(\\\\) (a backslash). So C('GET /release HTTP/1.0\\r\\n\\r\\n') in YAML single quotes,
        where the backslashes stay, sends CR LF. In YAML double quotes YAML itself already turns
        C(\\r\\n) into CR LF, which is sent as it is; a backslash meant for the peer is then written
        C(\\\\\\\\)."
      - Any other backslash sequence is refused before anything is sent.
      - Without it nothing is sent (for services that speak first, like SMTP or SSH).
    type: str
  expect:
    description:
      - A Python regular expression searched for (C(re.search)) in what each connection received
        (decoded as UTF-8). Reading stops as soon as it matches.
      - A connection fails when the peer closes it, O(timeout) runs out or O(max_bytes) were
        received before a match.
      - The text includes everything received, for HTTP the status line and headers too; write
        C((?m)) at its start to make C(^) and C($) match at every line.
      - Without it a connection passes once it is open (and O(send) was written). Behind HAProxy
        that proves only the listener, because HAProxy accepts a connection before it connects to
        a server; O(expect) proves a server answered.
    type: str
  max_bytes:
    description:
      - The most bytes read from each connection while waiting for O(expect) to match; the
        connection fails when that many arrived without a match.
    type: int
    default: 65536
notes:
  - Every connection is independent and closed after its check; nothing else is sent.
  - O(timeout) runs to the match of O(expect), or to sending O(send) when there is no O(expect); a
    peer that trickles bytes slowly fails with C(timed out ...).
seealso:
  - module: bluegreen.haproxy.http_smoke
    description: The same check for HTTP and HTTPS listeners, judging status codes and bodies.
"""

EXAMPLES = r"""
- name: Four connections through the node's TCP listener must reach the green version
  bluegreen.haproxy.tcp_smoke:
    host: "{{ ansible_host }}"
    port: 9000
    send: 'GET /release HTTP/1.0\r\n\r\n'
    expect: version=green
    requests: 4
  delegate_to: localhost

- name: A service that speaks first (an SMTP banner)
  bluegreen.haproxy.tcp_smoke:
    host: 10.0.0.5
    port: 25
    expect: '^220 '
    timeout: 3

- name: Only check that the listener accepts connections, and let the playbook decide
  bluegreen.haproxy.tcp_smoke:
    host: haproxy1.internal
    port: 6379
    send: 'PING\r\n'
    expect: '\+PONG'
    fail_on_error: false
  register: redis_smoke
"""

RETURN = r"""
passed:
  description: Whether every connection passed.
  returned: always
  type: bool
  sample: false
passed_count:
  description: How many connections passed.
  returned: always
  type: int
  sample: 3
failed_count:
  description: How many connections failed.
  returned: always
  type: int
  sample: 1
requests:
  description: How many connections were made.
  returned: always
  type: int
  sample: 4
elapsed:
  description: Seconds all connections took together.
  returned: always
  type: float
  sample: 0.0123
results:
  description: One entry per connection, in the order they were made.
  returned: always
  type: list
  elements: dict
  contains:
    attempt:
      description: The connection's number, from 1.
      type: int
      returned: always
      sample: 1
    elapsed:
      description: Seconds the connection took, from connecting to the match (or the failure).
      type: float
      returned: always
      sample: 0.0031
    connected:
      description: Whether the connection was opened.
      type: bool
      returned: always
      sample: true
    matched:
      description: Whether this connection passed.
      type: bool
      returned: always
      sample: false
    error:
      description: The socket error, for example C(connection refused), C(timed out) or
        C(connection reset); V(null) when there was none.
      type: str
      returned: always
      sample: connection refused
    reason:
      description: Why this connection failed; V(null) when it passed.
      type: str
      returned: always
      sample: "connection closed after 171 bytes without a match of 'version=green'"
    received_bytes:
      description: How many bytes the connection received.
      type: int
      returned: always
      sample: 171
    received_excerpt:
      description:
        - What a failing connection received, on one line, control characters and bytes that are
          not UTF-8 written as escapes (C(\r), C(\n), C(\xHH)); the first and last 120
          characters when longer. V(null) when it passed or received nothing.
      type: str
      returned: always
      sample: 'HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nversion=blue\n'
failures:
  description: The failed connections, with what was expected and what was received.
  returned: always
  type: list
  elements: dict
  contains:
    attempt:
      description: The connection's number, from 1.
      type: int
      returned: always
      sample: 2
    reason:
      description: Why it failed.
      type: str
      returned: always
      sample: connection refused
    expected:
      description: What it had to achieve, for example C(a match of 'version=green').
      type: str
      returned: always
      sample: a match of 'version=green'
    received:
      description: What it received (as RV(results[].received_excerpt)), or V(null).
      type: str
      returned: always
      sample: 'HTTP/1.0 200 OK\r\n\r\nversion=blue\n'
    elapsed:
      description: Seconds it took.
      type: float
      returned: always
      sample: 0.0029
summary:
  description: Counts over all connections.
  returned: always
  type: dict
  contains:
    error_counts:
      description: How often each socket error happened.
      type: dict
      returned: always
      sample: {"connection refused": 1}
    failure_counts:
      description: How often each failure reason happened.
      type: dict
      returned: always
      sample: {"connection refused": 1}
msg:
  description: One line saying how many connections passed or failed, why, and what the first
    failed connection that received anything received.
  returned: always
  type: str
  sample: "2 of 2 connections to tcp://10.0.0.5:9000 failed: 2 x connection closed after 171 bytes
    without a match of 'version=green'; attempt 1 received 'HTTP/1.0 200 OK\\r\\n...version=blue\\n'"
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import exit_smoke, smoke_repeat_argument_spec
from ansible_collections.bluegreen.haproxy.plugins.module_utils.tcp_probe import (
    DEFAULT_MAX_BYTES,
    TcpProbeOptionError,
    prepare,
    probe_once,
    run_tcp_smoke,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            host=dict(type='str', required=True),
            port=dict(type='int', required=True),
            send=dict(type='str'),
            expect=dict(type='str'),
            max_bytes=dict(type='int', default=DEFAULT_MAX_BYTES),
            **smoke_repeat_argument_spec(),
        ),
        supports_check_mode=True,
    )
    params = module.params
    # Every option is checked before the first connection.
    try:
        spec = prepare(params['host'], params['port'], requests=params['requests'], interval=params['interval'],
                       timeout=params['timeout'], send=params['send'], expect=params['expect'],
                       max_bytes=params['max_bytes'])
    except TcpProbeOptionError as e:
        module.fail_json(msg=str(e), passed=False)

    # Check mode runs it too: it only reads, and a dry run should prove the service answers.
    exit_smoke(module, run_tcp_smoke(spec, probe=probe_once, sleep=time.sleep), params['fail_on_error'])


if __name__ == '__main__':
    main()
