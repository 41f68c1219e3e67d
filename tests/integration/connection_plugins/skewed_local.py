# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection plugin for bluegreen.haproxy's own tests: a local host whose clock is off.

A test gives a host `ansible_connection=skewed_local skewed_local_clock_skew=1.0`: every command
run on the host finds a `date` first in PATH that answers the controller's time plus that many
seconds (only `date +%s.%N`, what the release_lock action reads the node's clock with). Modules
run as with `local`; nothing else on the host changes.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile

from ansible.plugins.connection.local import Connection as LocalConnection

DOCUMENTATION = """
name: skewed_local
short_description: local connection whose node clock (as date reports it) is off by some seconds (tests only)
description:
  - Runs tasks on the controller like C(local), with a C(date) command in front of the PATH that answers
    the time plus O(clock_skew) seconds, as C(date +%s.%N) prints it.
options:
  clock_skew:
    description: Seconds to add to the node's clock (negative for a clock behind).
    type: float
    default: 0
    vars:
      - name: skewed_local_clock_skew
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

DATE = """#!%s
import time
print("%%.9f" %% (time.time() + %r))
"""


_SHIMS = {}


class Connection(LocalConnection):
    transport = "skewed_local"

    def exec_command(self, cmd, in_data=None, sudoable=True):
        skew = float(self.get_option("clock_skew") or 0)
        if skew and skew not in _SHIMS:
            # This worker process runs one task on this host: its PATH is this host's alone.
            directory = _SHIMS[skew] = tempfile.mkdtemp(prefix="skewed_local.")
            path = os.path.join(directory, "date")
            with open(path, "w") as handle:
                handle.write(DATE % (sys.executable, skew))
            os.chmod(path, stat.S_IRWXU)
            os.environ["PATH"] = directory + os.pathsep + os.environ.get("PATH", "")
        return super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
