#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_map_info
short_description: Read a map's entries at runtime and on disk, and report drift between them
version_added: 0.1.0
description:
  - Reads all entries of a map HAProxy has loaded, through the Runtime API, and the map file on
    disk, and reports whether they differ.
  - Runtime map changes are lost on reload, so drift means the next reload will move traffic.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.runtime_api.attributes
  - bluegreen.haproxy.runtime_api.read_only_attributes
options:
  map:
    description:
      - The map as HAProxy names it in C(show map), normally the file path as written in the
        configuration.
    type: str
    required: true
  map_file:
    description:
      - The map file on this host to compare with. Defaults to O(map). When it cannot be read,
        RV(disk_entries) and RV(drift) are V(null).
    type: path
seealso:
  - module: bluegreen.haproxy.haproxy_map
"""

EXAMPLES = r"""
- name: Read the switch
  bluegreen.haproxy.haproxy_map_info:
    map: /etc/haproxy/maps/bluegreen.map
  register: switch

- name: Fail when a reload would move traffic
  ansible.builtin.assert:
    that: not switch.drift
    fail_msg: "runtime and disk disagree on {{ switch.drift_keys | join(', ') }}"
"""

RETURN = r"""
map:
  description: The map that was read.
  returned: always
  type: str
  sample: /etc/haproxy/maps/bluegreen.map
map_id:
  description: HAProxy's numeric id of the map (usable as C(#<id>)).
  returned: always
  type: int
  sample: 2
entries:
  description: The live entries, key to value (the first value when a key is duplicated).
  returned: always
  type: dict
  sample: {"active": "backend_green"}
runtime_entries:
  description: The live entries in order, duplicates included.
  returned: always
  type: list
  elements: dict
  contains:
    key:
      description: The key.
      type: str
    value:
      description: The value.
      type: str
  sample: [{"key": "active", "value": "backend_green"}]
disk_entries:
  description: The map file's entries, key to value; V(null) when the file is not readable here.
  returned: always
  type: dict
  sample: {"active": "backend_blue"}
drift:
  description: Whether runtime and disk disagree; V(null) when the file is not readable here.
  returned: always
  type: bool
  sample: true
drift_keys:
  description: Keys whose runtime and disk values differ, including keys present on one side only.
  returned: always
  type: list
  elements: str
  sample: ["active"]
loaded_maps:
  description: Every map HAProxy has loaded, as C(show map) names them.
  returned: always
  type: list
  elements: str
  sample: ["/etc/haproxy/maps/bluegreen.map"]
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileError,
    map_text_values,
    read_map_file,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import (
    diff_maps,
    require_loaded_map,
    runtime_entries,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import entries_to_dict
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
)


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(
        map=dict(type="str", required=True),
        map_file=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    map_name = module.params["map"]
    map_file = module.params["map_file"] or map_name

    try:
        client = RuntimeAPIClient(module.params["socket"], module.params["timeout"])
        record, loaded = require_loaded_map(client, map_name)
        entries = runtime_entries(client, map_name)
    except RuntimeAPIError as exc:
        module.fail_json(msg=str(exc))

    runtime = entries_to_dict(entries)
    try:
        disk = map_text_values(read_map_file(map_file))
    except MapFileError:
        disk = None
    drift_keys = diff_maps(runtime, disk) if disk is not None else []

    module.exit_json(
        changed=False,
        map=map_name,
        map_id=record["id"],
        entries=runtime,
        runtime_entries=[dict(key=entry["key"], value=entry["value"]) for entry in entries],
        disk_entries=disk,
        drift=bool(drift_keys) if disk is not None else None,
        drift_keys=drift_keys,
        loaded_maps=[loaded_map["name"] for loaded_map in loaded],
    )


if __name__ == "__main__":
    main()
