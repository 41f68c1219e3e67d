#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_precheck
short_description: Prove on one HAProxy node that every service of a release may switch
version_added: 0.1.0
description:
  - The release role's PRECHECK in one module run per node, whatever the number of services.
  - First it checks that the Runtime API socket is at C(level admin) (C(show cli level), HAProxy
    2.0 and later), because the switch that follows changes maps through it; a lower level fails
    the task (RV(failed_stage=socket)) before anything else is asked. An HAProxy that cannot say
    its level is not refused.
  - Then it runs three stages, each for every service in O(services) before the next stage starts;
    the first stage with a failure ends the precheck and fails the task.
  - "B(health): the target backend exists and enough of its servers are UP with passing checks
    (as M(bluegreen.haproxy.haproxy_backend_health) judges them), waiting up to O(health_wait)
    seconds. With O(force) the backend must still exist, but its health is only reported."
  - "B(preflight): every server of the target answers the smoke request directly (as
    M(bluegreen.haproxy.haproxy_backend_preflight) sends it), for services with
    O(services[].preflight)."
  - "B(current): the live path answers through this node's listener, O(requests) times (as
    M(bluegreen.haproxy.http_smoke) sends it), for services with O(services[].current)."
  - A failure message is the message the single-purpose module gives, prefixed with the
    service's key when there are several services.
  - Only reads (HAProxy and HTTP); it never reports a change and runs in check mode.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.precheck
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  services:
    description:
      - The services of the release, each a map key with its target backend and smoke request.
    type: list
    elements: dict
    required: true
    suboptions:
      key:
        description: The map key of the service; names the service in results and messages.
        type: str
        required: true
      backend:
        description: The target backend, the one the switch will make live.
        type: str
        required: true
      url:
        description: The service's public smoke URL, C(http://) or C(https://).
        type: str
        required: true
      resolve:
        description:
          - C(ADDRESS) or C(ADDRESS:PORT) the current-path request connects to instead of
            resolving the URL's host (usually this node's listener); the URL's host stays the
            C(Host) header and the TLS SNI.
        type: str
      headers:
        description: Extra request headers, names to values.
        type: dict
        default: {}
      status_code:
        description: The status codes a passing answer may have.
        type: list
        elements: int
        default: [200]
      body_regex:
        description: A regular expression every target server's answer must match (preflight).
        type: str
      current_body_regex:
        description: A regular expression the current path's answers must match.
        type: str
      min_healthy:
        description:
          - How many of the target's servers must be healthy, as a count (V(2)) or a
            percentage (V(50%)); every server when not given.
        type: raw
      preflight:
        description: Whether to send the smoke request to every target server directly.
        type: bool
        default: true
      current:
        description: Whether to check that the current path answers through the listener.
        type: bool
        default: true
notes:
  - Run it on the HAProxy node itself, where the Runtime API, the servers and the listener are
    reached the way HAProxy and its users reach them.
seealso:
  - module: bluegreen.haproxy.haproxy_backend_health
  - module: bluegreen.haproxy.haproxy_backend_preflight
  - module: bluegreen.haproxy.http_smoke
"""

EXAMPLES = r"""
- name: Prove backend_green before the switch
  bluegreen.haproxy.release_precheck:
    socket: /run/haproxy/admin.sock
    health_wait: 30
    requests: 5
    services:
      - key: active
        backend: backend_green
        url: http://release.example.com/release
        resolve: 127.0.0.1:80
        body_regex: 'version=green'
        current_body_regex: 'version=blue'
  register: precheck

- name: Show each target's health
  ansible.builtin.debug:
    msg: "{{ precheck.services | map(attribute='health.healthy_count') }}"
"""

RETURN = r"""
services:
  description: One entry per service, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The service's map key.
      type: str
      returned: always
      sample: active
    backend:
      description: The target backend.
      type: str
      returned: always
      sample: backend_green
    health:
      description:
        - The health verdict, as M(bluegreen.haproxy.haproxy_backend_health) returns it
          (C(healthy), C(healthy_count), C(total), C(servers), C(waited)), plus C(failed) and
          C(msg) when it failed.
      type: dict
      returned: always
    preflight:
      description:
        - The preflight, as M(bluegreen.haproxy.haproxy_backend_preflight) returns it
          (C(servers), C(failed_servers), C(passed_count)), plus C(failed) and C(msg); V(null)
          when it did not run.
      type: dict
      returned: always
    current:
      description:
        - The current path's requests, as M(bluegreen.haproxy.http_smoke) returns them
          (C(passed_count), C(failed_count), C(summary)), plus C(failed); V(null) when they
          did not run.
      type: dict
      returned: always
failed_stage:
  description:
    - The stage that failed (V(socket), V(health), V(preflight) or V(current)), or V(null).
    - V(socket) when the Runtime API socket is below C(level admin); the message says how to fix
      the C(stats socket) line.
  returned: always
  type: str
  sample: preflight
msg:
  description: What passed, or each failed service's reason.
  returned: always
  type: str
  sample: "backend 'backend_green': 1 of 2 servers failed the preflight of http://release.test/release:
    green2 127.0.0.1:8082: body did not match 'version=green' (got 'version=blue')"
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.precheck import (
    PrecheckOptionError,
    precheck_argument_spec,
    prepare_services,
    run_precheck,
    validate_options,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import build_tls_context

SERVICE_SPEC = dict(
    key=dict(type="str", required=True, no_log=False),
    backend=dict(type="str", required=True),
    url=dict(type="str", required=True),
    resolve=dict(type="str"),
    headers=dict(type="dict", default={}),
    status_code=dict(type="list", elements="int", default=[200]),
    body_regex=dict(type="str"),
    current_body_regex=dict(type="str"),
    min_healthy=dict(type="raw"),
    preflight=dict(type="bool", default=True),
    current=dict(type="bool", default=True),
)


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(
        services=dict(type="list", elements="dict", required=True, options=SERVICE_SPEC),
    )
    argument_spec.update(precheck_argument_spec())
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    # Every option of every service is checked before anything is asked.
    try:
        services = prepare_services(params["services"])
        skip_servers = validate_options(params["health_wait"], params["poll_interval"], params["requests"],
                                        params["request_timeout"], params["skip_servers"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except (PrecheckOptionError, RuntimeAPIError) as exc:
        module.fail_json(msg=str(exc), changed=False)

    try:
        # One context per setting, so the trust store is read at most once for each.
        tls_contexts = dict((validate, build_tls_context(validate))
                            for validate in sorted(set((params["validate_certs"], params["preflight_validate_certs"]))))
    except Exception as exc:  # e.g. an unreadable system trust store
        module.fail_json(msg="cannot set up TLS for the precheck's requests: %s" % exc, changed=False)

    result = run_precheck(
        client, services, health_wait=params["health_wait"], poll_interval=params["poll_interval"],
        allow_no_check=params["allow_no_check"], force=params["force"], requests=params["requests"],
        request_timeout=params["request_timeout"], validate_certs=params["validate_certs"],
        preflight_validate_certs=params["preflight_validate_certs"], skip_servers=skip_servers,
        tls_context=tls_contexts[params["validate_certs"]],
        preflight_tls_context=tls_contexts[params["preflight_validate_certs"]])
    if result.pop("failed"):
        module.fail_json(changed=False, **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
