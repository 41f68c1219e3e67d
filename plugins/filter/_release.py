# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The release role's one way into its engine on the controller (private).

The engine's decisions live in plugins/plugin_utils/release_engine.py. The role calls them
from Jinja through this one filter, naming the step, so they are not a public API: the name
starts with `_`, which the docs site treats as private (not listed).
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: _release
author:
  - bluegreen.haproxy maintainers
version_added: 0.2.0
short_description: Private - the release role's engine steps on the controller
description:
  - B(Private, not a public API.) The release role (M(bluegreen.haproxy.release_precheck),
    M(bluegreen.haproxy.haproxy_map) and friends on the nodes) decides with this filter on the
    controller. Names, arguments and results change without notice; do not call it from your
    own playbooks.
  - The first argument names the engine step; the rest are that step's arguments.
positional: _input, step
options:
  _input:
    description: The value the step works on.
    type: raw
    required: true
  step:
    description: The engine step, one of the names in C(STEPS) of the collection's
      C(plugins/plugin_utils/release_engine.py).
    type: string
    required: true
"""

EXAMPLES = r"""
# Private: used by the release role only.
- name: The engine describes key=value pairs for a message
  ansible.builtin.debug:
    msg: "{{ {'active': 'backend_green'} | bluegreen.haproxy._release('describe') }}"
"""

RETURN = r"""
_value:
  description: What the step returns.
  type: raw
"""

from ansible.errors import AnsibleFilterError

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils.release_engine import STEPS


def engine_step(value, step, *args, **kwargs):
    """Run one named engine step on `value`."""
    try:
        function = STEPS[step]
    except (KeyError, TypeError):
        raise AnsibleFilterError("_release: unknown engine step %r; the release role's steps are: %s"
                                 % (step, ", ".join(sorted(STEPS))))
    return function(value, *args, **kwargs)


class FilterModule(object):
    def filters(self):
        return {"_release": engine_step}
