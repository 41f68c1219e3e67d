# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection plugin for bluegreen.haproxy's own tests: a local host that can become unreachable.

A test gives a host `ansible_connection=flaky_local flaky_local_marker=/path`; from the first
task that starts after that file exists, every task on the host fails as unreachable, as if
the node had dropped off the network. The decision is taken once per task (Ansible opens a
new connection for each task), so a task already running when the marker appears completes
and its result is reported: the node is lost between two tasks, never in the middle of one.
"""

from __future__ import annotations

import os

from ansible.errors import AnsibleConnectionFailure
from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = """
name: flaky_local
short_description: local connection that becomes unreachable once a marker file exists (tests only)
description:
  - Runs tasks on the controller like C(local) until the file O(unreachable_marker) exists; every
    task that starts afterwards fails as unreachable.
options:
  unreachable_marker:
    description: Path of the marker file; once it exists the host is unreachable.
    type: path
    vars:
      - name: flaky_local_marker
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
    transport = "flaky_local"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lost = None

    def _check_reachable(self):
        if self._lost is None:
            marker = self.get_option("unreachable_marker")
            self._lost = bool(marker) and os.path.exists(marker)
        if self._lost:
            raise AnsibleConnectionFailure(
                "flaky_local: this host dropped off the network (test marker %s exists)"
                % self.get_option("unreachable_marker"))

    def _connect(self):
        self._check_reachable()
        return super()._connect()

    def exec_command(self, cmd, in_data=None, sudoable=True):
        self._check_reachable()
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)

    def put_file(self, in_path, out_path):
        self._check_reachable()
        return super().put_file(in_path, out_path)

    def fetch_file(self, in_path, out_path):
        self._check_reachable()
        return super().fetch_file(in_path, out_path)
