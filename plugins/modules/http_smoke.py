#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: http_smoke
short_description: Smoke-test a release through an HTTP(S) listener with N requests
version_added: 0.1.0
description:
  - Sends O(requests) HTTP or HTTPS requests to O(url), one after the other, each on a fresh
    connection, and checks every answer's status code and, optionally, its body.
  - The check passes only when every request passes, so one wrong or broken server in a
    load-balanced pool is caught when enough requests are sent to reach every server.
  - With O(resolve) the requests are sent to a chosen address (for example one HAProxy node of a
    fleet) while the URL's host name stays in the C(Host) header, the TLS SNI and the certificate
    check, like curl's C(--resolve).
  - Connection refused, timeouts and TLS errors are reported per request, with one failure
    message that counts the reasons.
  - The module only reads; it never reports a change.
  - Each request is its own C(http.client) connection from the Python standard library, with
    ansible-core's TLS defaults (C(ansible.module_utils.urls)); the managed host needs nothing
    but Python.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.smoke
  - bluegreen.haproxy.smoke.repeat
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  method:
    description:
      - The HTTP method.
    type: str
    default: GET
  body:
    description:
      - The request body, sent as given (set a C(Content-Type) in O(headers) when it matters).
    type: str
  validate_certs:
    description:
      - Whether to verify the server's TLS certificate and that it is valid for the URL's host.
      - Set to V(false) only for self-signed test listeners.
    type: bool
    default: true
  ca_path:
    description:
      - A PEM file of CA certificates to verify the server's certificate with, instead of the
        system's trust store.
    type: path
  client_cert:
    description:
      - A PEM file with the client certificate (and its key, unless O(client_key) is given) that
        the requests present when the listener asks for one (TLS client authentication).
    type: path
  client_key:
    description:
      - A PEM file with the private key of O(client_cert).
    type: path
  url_username:
    description:
      - The user name for HTTP authentication (Basic, or Digest when the server asks for it).
      - Without O(force_basic_auth) the credentials are sent only in answer to a C(401) that asks
        for them, and only to the URL's host and port.
      - Credentials in the URL (C(https://user:password@host/)) are used when this is not set.
    type: str
  url_password:
    description:
      - The password for O(url_username).
    type: str
  force_basic_auth:
    description:
      - Send Basic authentication with every request instead of waiting for a C(401) to ask for
        it; for services that answer C(403) or the public page to anonymous requests.
      - Like ansible-core's own option, the header then goes with every request, redirects to
        other hosts included.
    type: bool
    default: false
  use_netrc:
    description:
      - Whether to send the C(~/.netrc) entry (or the file in the C(NETRC) environment variable)
        of the URL's host as Basic authentication when no credentials are given.
    type: bool
    default: true
  http_agent:
    description:
      - The C(User-Agent) header of every request (a C(User-Agent) in O(headers) wins).
    type: str
    default: ansible-httpget
  resolve:
    description:
      - Send the requests to this address instead of the one the URL's host resolves to, like
        curl's C(--resolve). The URL's host is still sent in the C(Host) header, used for TLS SNI
        and checked against the certificate.
      - An IPv4 address, an IPv6 address or a host name, with an optional port;
        for example C(10.0.0.5), C(10.0.0.5:8080), C([2001:db8::5]:443), C(2001:db8::5) or
        C(haproxy1.internal).
      - Without a port, the URL's port is used.
      - Applies to every connection to the URL's host and port, including redirects to it.
      - Prefer it to a C(Host) header in O(headers), which replaces the URL's host in the C(Host)
        header only.
      - When set, proxies from the environment are not used.
    type: str
  follow_redirects:
    description:
      - Whether to follow redirects.
      - V(none) checks the redirect itself (its status is matched against O(status_code)).
      - V(safe) follows redirects of C(GET) and C(HEAD) requests only.
      - V(all) follows every redirect.
    type: str
    choices: [none, safe, all]
    default: none
  use_proxy:
    description:
      - Whether to use a proxy from the C(http_proxy), C(https_proxy) and C(no_proxy) environment
        variables. Ignored (no proxy) when O(resolve) is set.
    type: bool
    default: true
notes:
  - The connection options follow ansible-core's C(url_argument_spec) (O(validate_certs),
    O(ca_path), O(client_cert), O(client_key), O(url_username), O(url_password),
    O(force_basic_auth), O(use_netrc), O(http_agent), O(use_proxy)); GSSAPI is not supported.
  - "Every request is independent: a new connection (C(Connection: close)) and no cookie jar
    shared between requests."
  - Bodies are decoded with the answer's charset (UTF-8 by default, invalid bytes replaced)
    before O(body_regex) is searched. Only the first O(max_body_bytes) bytes are read;
    RV(results[].body_truncated) says when a body was longer.
  - O(timeout) includes the TLS handshake and redirects; a host name lookup still unanswered when
    it is up fails the request with C(name resolution of <host> timed out).
  - With O(follow_redirects=none) a redirect is judged like any other answer (O(status_code)).
seealso:
  - name: curl --resolve
    description: The curl option that O(resolve) mirrors.
    link: https://curl.se/docs/manpage.html#--resolve
"""

EXAMPLES = r"""
- name: Ten requests through the public listener must all answer the new version
  bluegreen.haproxy.http_smoke:
    url: http://release.example.com/release
    body_regex: '^version=green$'
    requests: 10

- name: Smoke each HAProxy node through its own listener, keeping the public host name
  bluegreen.haproxy.http_smoke:
    url: https://release.example.com/healthz
    resolve: "{{ ansible_host }}:443"
    status_code: [200, 204]
    requests: 20
    timeout: 3
  delegate_to: localhost

- name: Let the playbook decide what a failed smoke test means
  bluegreen.haproxy.http_smoke:
    url: http://127.0.0.1:8080/release
    headers:
      Host: release.example.com
    body_regex: version=blue
    requests: 5
    interval: 0.2
    fail_on_error: false
  register: smoke

- name: Show what answered
  ansible.builtin.debug:
    msg: "{{ smoke.msg }} - bodies seen: {{ smoke.summary.body_counts }}"
  when: not smoke.passed

- name: A listener that requires a client certificate and Basic authentication
  bluegreen.haproxy.http_smoke:
    url: https://admin.example.com/healthz
    client_cert: /etc/pki/smoke/client.pem
    client_key: /etc/pki/smoke/client.key
    url_username: smoke
    url_password: "{{ vault_smoke_password }}"
    force_basic_auth: true

- name: The plain HTTP listener redirects to HTTPS
  bluegreen.haproxy.http_smoke:
    url: http://release.example.com/
    status_code: [301, 302, 308]
"""

RETURN = r"""
passed:
  description: Whether every request passed.
  returned: always
  type: bool
  sample: false
passed_count:
  description: How many requests passed.
  returned: always
  type: int
  sample: 8
failed_count:
  description: How many requests failed.
  returned: always
  type: int
  sample: 2
requests:
  description: How many requests were sent.
  returned: always
  type: int
  sample: 10
results:
  description: One entry per request, in the order they were sent.
  returned: always
  type: list
  elements: dict
  contains:
    status:
      description: The HTTP status code, or V(null) when no answer came.
      type: int
      returned: always
      sample: 503
    elapsed:
      description: Seconds the request took, from connecting to the end of the body.
      type: float
      returned: always
      sample: 0.0042
    matched:
      description: Whether this request passed (status in O(status_code) and body matching O(body_regex)).
      type: bool
      returned: always
      sample: false
    error:
      description:
        - >-
          Why no answer came, for example C(connection refused), C(timed out) or
          C(TLS certificate verification failed: ...); V(null) when an answer came.
      type: str
      returned: always
      sample: connection refused
    reason:
      description: Why this request failed (the error, or the status or body mismatch); V(null) when it passed.
      type: str
      returned: always
      sample: status 503 (expected 200)
    body_excerpt:
      description: The first 200 characters of the body of a failing answer; V(null) otherwise.
      type: str
      returned: always
      sample: version=blue
    body_truncated:
      description:
        - Whether the body was longer than O(max_body_bytes), so only its start was read and judged.
        - V(false) when no answer came.
      type: bool
      returned: always
      sample: false
summary:
  description: Counts over all requests.
  returned: always
  type: dict
  contains:
    status_counts:
      description: How often each status code was answered.
      type: dict
      returned: always
      sample: {"200": 9, "503": 1}
    body_counts:
      description: How often each body was seen, keyed by its first non-empty line (at most 80
        characters, at most 10 keys, the rest counted as C((other))).
      type: dict
      returned: always
      sample: {"version=blue": 5, "version=green": 5}
    error_counts:
      description: How often each connection-level error happened.
      type: dict
      returned: always
      sample: {"connection refused": 1}
    failure_counts:
      description: How often each failure reason happened.
      type: dict
      returned: always
      sample: {"body did not match 'version=green'": 5}
msg:
  description: One line saying how many requests passed or failed, and why.
  returned: always
  type: str
  sample: "3 of 10 requests to http://release.example.com/release failed: 2 x status 503 (expected 200), 1 x connection refused"
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.smoke import (
    HTTP_AGENT,
    SmokeOptionError,
    build_tls_context,
    compile_body_regex,
    exit_smoke,
    parse_url,
    resolve_address,
    run_smoke,
    send_request,
    smoke_repeat_argument_spec,
    smoke_request_argument_spec,
    validate_headers,
    validate_max_body_bytes,
    validate_method,
    validate_status_codes,
    validate_timeout,
)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            method=dict(type='str', default='GET'),
            body=dict(type='str'),
            validate_certs=dict(type='bool', default=True),
            ca_path=dict(type='path'),
            resolve=dict(type='str'),
            follow_redirects=dict(type='str', default='none', choices=['none', 'safe', 'all']),
            use_proxy=dict(type='bool', default=True),
            client_cert=dict(type='path'),
            client_key=dict(type='path'),
            url_username=dict(type='str'),
            url_password=dict(type='str', no_log=True),
            force_basic_auth=dict(type='bool', default=False),
            use_netrc=dict(type='bool', default=True),
            http_agent=dict(type='str', default=HTTP_AGENT),
            **smoke_request_argument_spec(),
            **smoke_repeat_argument_spec(),
        ),
        required_by=dict(client_key='client_cert'),
        supports_check_mode=True,
    )
    params = module.params

    # Every option is checked before the first request is sent.
    try:
        target = parse_url(params['url'])
        method = validate_method(params['method'])
        headers = validate_headers(params['headers'])
        status_codes = validate_status_codes(params['status_code'])
        body_regex = compile_body_regex(params['body_regex'])
        if params['requests'] < 1:
            raise SmokeOptionError('requests must be at least 1, got %d' % params['requests'])
        if params['interval'] < 0:
            raise SmokeOptionError('interval must not be negative, got %s' % params['interval'])
        validate_timeout(params['timeout'])
        validate_max_body_bytes(params['max_body_bytes'])
        for name in ('ca_path', 'client_cert', 'client_key'):
            if params[name] is not None and not os.path.isfile(params[name]):
                raise SmokeOptionError('%s %r is not a file' % (name, params[name]))
        if any(c in params['http_agent'] for c in '\r\n\0'):
            raise SmokeOptionError('http_agent %r contains CR, LF or NUL' % params['http_agent'])
        resolve_to, resolve_text = (resolve_address(params['resolve'], target) if params['resolve'] is not None
                                    else (None, None))
    except SmokeOptionError as e:
        module.fail_json(msg=str(e), passed=False)

    data = params['body'].encode('utf-8') if params['body'] is not None else None
    try:
        # also for http:// URLs: a redirect may lead to https://
        tls_context = build_tls_context(params['validate_certs'], params['ca_path'], params['client_cert'],
                                        params['client_key'])
    except SmokeOptionError as e:  # e.g. an unreadable ca_path, a key that is not the certificate's
        module.fail_json(msg=str(e), passed=False)

    result = run_smoke(
        target.url, requests=params['requests'], interval=params['interval'], resolve_text=resolve_text,
        method=method, headers=headers, data=data, status_codes=status_codes, body_regex=body_regex,
        timeout=params['timeout'], max_body_bytes=params['max_body_bytes'], connect_address=resolve_to,
        validate_certs=params['validate_certs'], ca_path=params['ca_path'],
        follow_redirects=params['follow_redirects'], use_proxy=params['use_proxy'], tls_context=tls_context,
        url_username=params['url_username'], url_password=params['url_password'],
        force_basic_auth=params['force_basic_auth'], use_netrc=params['use_netrc'], http_agent=params['http_agent'],
        send=send_request, sleep=time.sleep)
    exit_smoke(module, result, params['fail_on_error'])


if __name__ == '__main__':
    main()
