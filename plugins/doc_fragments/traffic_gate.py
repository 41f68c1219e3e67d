# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """How a watch window judges real users' requests (module_utils/traffic.py's
    traffic_gate_argument_spec): haproxy_backend_traffic and release_step."""

    DOCUMENTATION = r"""
options:
  max_error_rate:
    description:
      - The highest error rate allowed, in percent of the real requests counted in the window
        (V(1.0) is one failed request in a hundred). A rate equal to it passes.
    type: float
    default: 1.0
  min_requests:
    description:
      - The fewest real requests counted before the error rate is judged; with fewer the verdict is
        C(insufficient), and O(insufficient_traffic) says what that means.
    type: int
    default: 20
  insufficient_traffic:
    description:
      - What fewer than O(min_requests) real requests in the window mean.
      - V(fail) fails the task with a message naming the requests counted and required.
      - V(pass) accepts it; the result still says the verdict was C(insufficient).
    type: str
    choices: [fail, pass]
    default: fail
"""
