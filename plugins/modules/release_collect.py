#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: release_collect
short_description: Collect an async job's result, looking at it once it should be done
version_added: 0.2.0
description:
  - The result of an async task (C(async) with C(poll 0)), like C(ansible.builtin.async_status)
    with C(until) - but the first look waits until O(not_before), on the controller, without
    touching the node. The release role collects the fleet's SWITCH AND PROVE step with it - the
    step is armed for one instant and cannot have finished before it, so one look per node is
    enough when the wait is right.
  - A job still running at the look is looked at again every O(interval) seconds, until
    O(timeout) seconds after the first look; then the task fails naming the wait.
  - The task's result is the job's result (failed when the job failed), with RV(looks).
  - Runs as an action plugin on the controller; each look reads the job's file on the node with
    one command (C(cat)), no module run, and judges it as C(ansible.builtin.async_status) does.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  jid:
    description: The job id the async task registered (its C(ansible_job_id)).
    type: str
    required: true
  not_before:
    description:
      - When to look first, as seconds since the epoch on the controller's clock. Omitted or in the
        past, the first look is at once.
    type: float
  interval:
    description: Seconds between looks at a job still running.
    type: float
    default: 0.5
  timeout:
    description: How long after the first look a running job is waited for before the task fails.
    type: float
    default: 60
"""

EXAMPLES = r"""
- name: Start a long step on every node, all at once
  ansible.builtin.command: /usr/local/bin/long-step
  async: 120
  poll: 0
  register: step_job
  changed_when: true

- name: Collect every node's step, looking once it should be done (in 30 s)
  bluegreen.haproxy.release_collect:
    jid: "{{ step_job.ansible_job_id }}"
    not_before: "{{ now(utc=true).timestamp() + 30 }}"
    timeout: 90
  register: step_result
"""

RETURN = r"""
looks:
  description: How many times the job's file was read on the node.
  returned: always
  type: int
  sample: 1
finished:
  description: Whether the job had finished at the last look (async_status's field).
  returned: always
  type: bool
ansible_job_id:
  description: The job id.
  returned: always
  type: str
"""
