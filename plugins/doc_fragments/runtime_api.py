# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment(object):
    """Options shared by every module that talks to the HAProxy Runtime API."""

    DOCUMENTATION = r"""
options:
  socket:
    description:
      - Where the HAProxy Runtime API (stats socket) listens.
      - A unix socket path (optionally prefixed C(unix@)), or a TCP address given as
        C(ipv4@HOST:PORT), C(ipv6@[HOST]:PORT) or C(HOST:PORT).
      - The socket must be declared with C(level admin); map changes on lower levels are
        deprecated upstream and refused from HAProxy 3.4.
    type: str
    default: /run/haproxy/admin.sock
  timeout:
    description:
      - Seconds to wait for the Runtime API to connect and to answer one command.
    type: float
    default: 5.0
"""

    ATTRIBUTES = r"""
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode with the same arguments, the second run reports no change.
"""

    READ_ONLY_ATTRIBUTES = r"""
attributes:
  check_mode:
    support: full
    details: This module only reads, so it runs unchanged in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
"""
