# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """The `services` option of the release engine's step module, release_step (release_steps.SERVICE_SPEC)."""

    DOCUMENTATION = r"""
options:
  services:
    description:
      - The services of the run, as the release role builds them from its inputs.
      - Required by steps C(prepare), C(switch) and C(finish); step C(status) reads O(keys) instead.
    type: list
    elements: dict
    suboptions:
      key:
        description: The map key.
        type: str
        required: true
      target:
        description: The backend to make live; empty to let the run choose (a rollback).
        type: str
        default: ""
      backends:
        description: The service's two backends (a rollback picks the one not live).
        type: list
        elements: str
        default: []
      expected_current:
        description: The live value the run expects; empty means whatever is live.
        type: str
        default: ""
      smoke_url:
        description: The service's public smoke URL, or C(tcp://HOST:PORT) for a C(mode tcp) service.
        type: str
        required: true
      smoke_resolve:
        description: C(ADDRESS[:PORT]) the current path's requests connect to (this node's listener).
        type: str
      smoke_headers:
        description: Extra request headers.
        type: dict
        default: {}
      smoke_status_codes:
        description: The status codes a passing answer may have.
        type: list
        elements: int
        default: [200]
      smoke_bodies:
        description: Backend name to the regular expression its answers match.
        type: dict
        default: {}
      smoke_send:
        description: What the attempts of a C(tcp://HOST:PORT) smoke URL send after connecting (tcp_smoke's escapes).
        type: str
      min_healthy:
        description: How many of the target's servers must be healthy (a count or a percentage).
        type: raw
"""
