# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """Options shared by the smoke tests (module_utils/smoke.py's argument spec helpers).

    DOCUMENTATION - the request and how its answers are judged (smoke_request_argument_spec):
    http_smoke, haproxy_backend_preflight. REPEAT - how often a smoke test tries and what a
    failure does (smoke_repeat_argument_spec): http_smoke, tcp_smoke.
    """

    DOCUMENTATION = r"""
options:
  url:
    description:
      - The absolute C(http://) or C(https://) URL to request.
      - Credentials in the URL are hidden in messages.
    type: str
    required: true
  headers:
    description:
      - Extra request headers, as a dictionary of names to values.
    type: dict
    default: {}
  status_code:
    description:
      - The status codes a passing answer may have.
      - A redirect that is not followed is an answer like any other, so V([301]) checks that a
        listener redirects.
    type: list
    elements: int
    default: [200]
  body_regex:
    description:
      - A Python regular expression searched for (C(re.search)) in every answer's body, for
        example V(version=green) for the release that must answer.
      - An answer whose body does not match fails, whatever its status; the failure quotes the
        start of what it answered instead.
    type: str
  max_body_bytes:
    description:
      - The most bytes of each answer's body that are read (and searched with O(body_regex)).
        Reading stops there, so a large body costs no more memory than this; the rest is never
        downloaded.
      - V(0) reads no body at all (only the status is judged; a O(body_regex) then searches an
        empty text).
    type: int
    default: 1048576
"""

    REPEAT = r"""
options:
  requests:
    description:
      - How many requests (M(bluegreen.haproxy.tcp_smoke) - connections) to send, one after the
        other. All of them must pass.
      - Each one is a new connection (for HTTP with no cookies from earlier requests), so a
        balancer spreads them over its servers as it would spread new clients.
    type: int
    default: 1
  interval:
    description:
      - Seconds to wait between two requests (connections).
    type: float
    default: 0
  timeout:
    description:
      - Seconds each request (connection) may take as a whole, from the host name lookup and
        connecting to the end of its check (the last byte of the answer read, or the match of
        what it expects). One that takes longer, for example because the answer trickles in,
        fails with C(timed out).
      - A host name lookup still unanswered when the time is up fails it too.
    type: float
    default: 5
  fail_on_error:
    description:
      - Whether the task fails when any request (connection) fails.
      - With V(false) the task returns RV(passed=false) and the counts, and the playbook decides.
      - Invalid options always fail the task, before any request is sent.
    type: bool
    default: true
"""
