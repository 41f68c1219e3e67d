# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection plugin for bluegreen.haproxy's own tests: a local host where one module starts late.

A test gives a host `ansible_connection=slow_local slow_local_module=haproxy_map slow_local_seconds=3`:
every command that runs that module on the host (its AnsiballZ file, or async_wrapper starting it)
waits that many seconds before it starts, as on a node whose process start is slow. With
`slow_local_async_only=true` only its async launches wait (the release engine's steps are one
module, release_step: its switch step is the one a fleet with more nodes than forks arms as an
async task). Everything else runs as with `local`.
"""

from __future__ import annotations

import time

from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = """
name: slow_local
short_description: local connection where the runs of one module start late (tests only)
description:
  - Runs tasks on the controller like C(local); a command that runs the module O(module) waits O(seconds) first.
options:
  module:
    description: Short name of the module whose runs start late.
    type: str
    default: ""
    vars:
      - name: slow_local_module
  async_only:
    description: Only the async launches of O(module) wait (async_wrapper starting it).
    type: bool
    default: false
    vars:
      - name: slow_local_async_only
  seconds:
    description: Seconds each run of O(module) waits before it starts.
    type: float
    default: 0
    vars:
      - name: slow_local_seconds
  become_success_timeout:
    description: As for the local connection.
    type: int
    default: 10
    vars:
      - name: ansible_local_become_success_timeout
  become_strip_preamble:
    description: As for the local connection.
    type: bool
    default: true
    vars:
      - name: ansible_local_become_strip_preamble
extends_documentation_fragment:
  - connection_pipelining
"""


class Connection(LocalConnection):
    transport = "slow_local"

    def exec_command(self, cmd, in_data=None, sudoable=True):
        module = self.get_option("module")
        if module and ("AnsiballZ_%s.py" % module) in cmd and (not self.get_option("async_only") or "async_wrapper" in cmd):
            time.sleep(float(self.get_option("seconds") or 0))
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
