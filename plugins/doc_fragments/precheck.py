# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """The precheck's options shared by every service of a run (module_utils/precheck.py's
    precheck_argument_spec): release_precheck and release_step."""

    DOCUMENTATION = r"""
options:
  health_wait:
    description: Seconds to wait for the targets to become healthy before failing.
    type: float
    default: 0
  poll_interval:
    description: Seconds between two looks at a target's health while waiting.
    type: float
    default: 1.0
  allow_no_check:
    description: Whether a server without a health check counts as healthy.
    type: bool
    default: false
  force:
    description:
      - Report the targets' health without judging it (no wait either). The targets must
        still exist; the preflight and the current path are still checked.
    type: bool
    default: false
  requests:
    description: How many requests the current path must answer, one after the other.
    type: int
    default: 1
  request_timeout:
    description: Seconds one request may take as a whole, connecting to the last byte read.
    type: float
    default: 5.0
  validate_certs:
    description: Whether the current path's requests verify the listener's TLS certificate.
    type: bool
    default: true
  preflight_validate_certs:
    description:
      - Whether the preflight verifies each TLS server's certificate; off by default, as in
        M(bluegreen.haproxy.haproxy_backend_preflight).
    type: bool
    default: false
  skip_servers:
    description: Names of target servers the preflight leaves out; a name no target has is an error.
    type: list
    elements: str
    default: []
"""
