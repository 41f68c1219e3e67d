#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_backend_preflight
short_description: Send the smoke request straight to every server of an HAProxy backend
version_added: 0.1.0
description:
  - Before a backend gets traffic, sends the public smoke request to each of its servers
    directly, so a server that passes its health checks but serves the wrong thing (an old
    build, another release, an error page) is named before any user reaches it.
  - The servers' addresses, ports and whether they speak TLS come from HAProxy itself, through
    the Runtime API (the C(srv_addr), C(srv_port) and C(srv_use_ssl) columns of
    C(show servers state <backend>)), so the check reaches exactly what HAProxy would reach.
  - Each request carries the host of O(url) in the C(Host) header and, for TLS servers, in the
    TLS SNI, like a user's request arriving through HAProxy. Plain servers get C(http://), TLS
    servers C(https://), whatever the scheme of O(url).
  - A server passes when its answer has one of O(status_code) and, with O(body_regex), a body
    that matches. Redirects are not followed; proxies from the environment are not used.
  - Servers in maintenance (any C(MAINT) admin state, for example after C(disable server), a
    C(disabled) keyword, a tracked server in maintenance, or unresolved DNS) get no traffic from
    HAProxy and are skipped and listed. Servers in C(DRAIN) are checked.
  - Fails naming each wrong server, its address and why, for example that its body did not
    match V(version=green), quoting the first line it answered instead. Also fails when the backend has no servers or when no server was checked (all skipped),
    because then nothing is proven.
  - Only reads (HAProxy and the servers); it never reports a change and runs in check mode.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.smoke
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  backend:
    description:
      - Name of the backend whose servers are checked, as in the HAProxy configuration.
      - An unknown backend is an error that lists the backends HAProxy has.
    type: str
    required: true
  request_timeout:
    description:
      - Seconds each server's request may take as a whole, from connecting (and the TLS
        handshake) to the last byte of the answer read.
      - Servers are checked one after the other.
    type: float
    default: 5
  validate_certs:
    description:
      - Whether to verify a TLS server's certificate (against the system's trust store) and
        that it is valid for the host of O(url).
      - Off by default, because the certificates on the servers behind HAProxy are usually
        internal or self-signed, and HAProxy's own C(verify) setting governs that hop; the
        preflight judges what the servers answer.
    type: bool
    default: false
  skip_servers:
    description:
      - Names of servers not to check, for example servers this host cannot reach directly.
      - They are listed in RV(skipped_servers). A name the backend does not have is an error.
    type: list
    elements: str
    default: []
notes:
  - Each server gets one request on a new connection, closed after the answer.
  - Run it where the servers can be reached directly, usually on the HAProxy node itself.
seealso:
  - module: bluegreen.haproxy.haproxy_backend_health
  - module: bluegreen.haproxy.http_smoke
"""

EXAMPLES = r"""
- name: Every green server answers the new version before the switch
  bluegreen.haproxy.haproxy_backend_preflight:
    backend: backend_green
    url: https://release.example.com/release
    body_regex: '^version=green$'

- name: A server this node cannot reach is left out
  bluegreen.haproxy.haproxy_backend_preflight:
    socket: /run/haproxy/admin.sock
    backend: backend_green
    url: http://release.example.com/healthz
    status_code: [200, 204]
    request_timeout: 3
    skip_servers: [green_dr1]
  register: preflight

- name: Show which servers were checked
  ansible.builtin.debug:
    msg: "{{ preflight.passed_count }} passed, skipped: {{ preflight.skipped_servers }}"
"""

RETURN = r"""
servers:
  description: One entry per server of the backend, in HAProxy's order.
  returned: success or when servers were checked
  type: list
  elements: dict
  contains:
    name:
      description: The server's name.
      type: str
      returned: always
      sample: green2
    address:
      description: The server's address as HAProxy has it (C(srv_addr)); V(null) while a server
        named by DNS is not resolved.
      type: str
      returned: always
      sample: 127.0.0.1
    port:
      description: The server's port (C(srv_port)).
      type: int
      returned: always
      sample: 8082
    ssl:
      description: Whether HAProxy speaks TLS to the server (C(srv_use_ssl)), so the request was sent over HTTPS.
      type: bool
      returned: always
      sample: false
    status:
      description: The HTTP status the server answered; V(null) when it was skipped or no answer came.
      type: int
      returned: always
      sample: 200
    passed:
      description: Whether the server's answer passed; V(null) when the server was skipped.
      type: bool
      returned: always
      sample: false
    reason:
      description: Why the server failed, or why it was skipped; V(null) when it passed.
      type: str
      returned: always
      sample: "body did not match 'version=green' (got 'version=blue')"
    skipped:
      description: Whether the server was not checked (in maintenance, or in O(skip_servers)).
      type: bool
      returned: always
      sample: false
failed_servers:
  description: Names of the checked servers that failed.
  returned: success or when servers were checked
  type: list
  elements: str
  sample: [green2]
skipped_servers:
  description: Names of the servers that were not checked (in maintenance, or in O(skip_servers)).
  returned: success or when servers were checked
  type: list
  elements: str
  sample: [green3]
passed_count:
  description: How many servers passed.
  returned: success or when servers were checked
  type: int
  sample: 1
failed_count:
  description: How many checked servers failed.
  returned: success or when servers were checked
  type: int
  sample: 1
msg:
  description: One line naming each failed server with its address and why, or saying all passed.
  returned: always
  type: str
  sample: "backend 'backend_green': 1 of 2 servers failed the preflight of http://release.test/release:
    green2 127.0.0.1:8082: body did not match 'version=green' (got 'version=blue')"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.preflight import (
    failed,
    message,
    preflight,
    query_servers,
    validate_skip_servers,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import (
    SmokeOptionError,
    build_tls_context,
    compile_body_regex,
    parse_url,
    smoke_request_argument_spec,
    validate_headers,
    validate_max_body_bytes,
    validate_status_codes,
    validate_timeout,
)


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(smoke_request_argument_spec())
    argument_spec.update(
        backend=dict(type="str", required=True),
        request_timeout=dict(type="float", default=5.0),
        validate_certs=dict(type="bool", default=False),
        skip_servers=dict(type="list", elements="str", default=[]),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params
    backend = params["backend"]

    # Every option is checked before anything is sent to HAProxy or a server.
    try:
        if not backend or not backend.strip():
            raise SmokeOptionError("backend must name a backend, got an empty string")
        parse_url(params["url"])
        headers = validate_headers(params["headers"])
        status_codes = validate_status_codes(params["status_code"])
        body_regex = compile_body_regex(params["body_regex"])
        validate_timeout(params["request_timeout"], "request_timeout")
        validate_max_body_bytes(params["max_body_bytes"])
        skip_servers = validate_skip_servers(params["skip_servers"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (SmokeOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False)

    try:
        tls_context = build_tls_context(params["validate_certs"])
    except Exception as exc:  # e.g. an unreadable system trust store
        module.fail_json(msg="cannot set up TLS to check the servers (validate_certs=%s): %s"
                         % (params["validate_certs"], exc), changed=False)

    try:
        servers = query_servers(client, backend)
        result = preflight(
            servers, params["url"], skip_servers=skip_servers, headers=headers, status_codes=status_codes,
            body_regex=body_regex, request_timeout=params["request_timeout"],
            validate_certs=params["validate_certs"], max_body_bytes=params["max_body_bytes"], backend=backend,
            tls_context=tls_context,
        )
    except (SmokeOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False, backend=backend)

    text = message(backend, params["url"], result)
    if failed(result):
        module.fail_json(msg=text, changed=False, **result)
    module.exit_json(msg=text, changed=False, **result)


if __name__ == "__main__":
    main()
