# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Callback plugin for bluegreen.haproxy's own tests: another hand moves a map key on cue.

A test enables it (ANSIBLE_CALLBACKS_ENABLED=hand_on_cue) and points HAND_ON_CUE at a JSON file:

    {"action": "bluegreen.haproxy.haproxy_map", "socket": "/path/admin.sock",
     "command": "set map /path/bluegreen.map active backend_hand", "done": "/path/hand.done"}

An optional "step" (e.g. "switch" with "bluegreen.haproxy.release_step") also requires the task's
`step` argument to be that. When the first task that runs `action` starts, the command is sent to the Runtime API socket
and its reply written to `done`. Callbacks run in the controller's main process and a task's
start is announced before any worker runs it, so the hand moves the key after every earlier
task finished (READ, PRECHECK) and before this task reads anything: exactly the window a
compare-and-set must guard.
"""

from __future__ import annotations

import json
import os
import socket

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: hand_on_cue
type: aggregate
short_description: sends one Runtime API command when a given task starts (tests only)
description:
  - Reads the JSON file named by the environment variable E(HAND_ON_CUE); when the first task
    running its C(action) (with its C(step) argument, when the cue names one) starts, sends its C(command) to its C(socket) and writes the reply to
    its C(done) file.
requirements:
  - enabled in callbacks_enabled
"""


def send(path, command, timeout=5.0):
    """One Runtime API command on a fresh connection; HAProxy closes it after replying."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return reply.decode(errors="replace")
            reply += chunk


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "hand_on_cue"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super(CallbackModule, self).__init__()
        self.cue = None
        path = os.environ.get("HAND_ON_CUE")
        if path:
            with open(path) as handle:
                self.cue = json.load(handle)

    def v2_playbook_on_task_start(self, task, is_conditional):
        cue = self.cue
        if not cue or task.action != cue["action"]:
            return
        if cue.get("step") and task.args.get("step") != cue["step"]:
            return
        self.cue = None  # once
        reply = send(cue["socket"], cue["command"])
        with open(cue["done"], "w") as handle:
            json.dump(dict(task=task.get_name(), reply=reply), handle)
