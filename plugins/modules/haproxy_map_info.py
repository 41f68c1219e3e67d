#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_map_info
short_description: Read a map's entries at runtime and on disk, and report drift between them
version_added: 0.1.0
description:
  - Reads entries of a map HAProxy has loaded, through the Runtime API, and the map file on
    disk, and reports whether they differ.
  - With O(keys), only those keys are read and returned. At runtime each key is looked up with
    C(get map), so the cost does not grow with the map's size (a 100,000-entry map costs about
    what a 1-entry map does). Without O(keys), the whole map is read (C(show map)) and returned once.
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
      - The file is read as bytes. Comment lines may hold any bytes; an entry line that is not
        UTF-8 fails the task, naming its line and byte offset (its key is never reported as
        absent).
    type: path
  keys:
    description:
      - Read only these keys. RV(entries) then holds the ones HAProxy has, RV(missing_keys) the
        others, and RV(disk_entries) the same keys from the map file.
      - The runtime lookup is exact on C(map()) (string) maps. For other match types (C(map_beg),
        C(map_reg)...) the module falls back to reading the whole map once, which stays exact.
      - Without O(keys), every entry is read and returned.
    type: list
    elements: str
  lock_path:
    description:
      - Also report who holds the release lock at this path (see M(bluegreen.haproxy.release_lock)),
        in RV(lock), read the way M(bluegreen.haproxy.release_lock_info) reads it. The release
        role reads a node's map and its lock in this one module run.
    type: path
seealso:
  - module: bluegreen.haproxy.haproxy_map
  - module: bluegreen.haproxy.release_lock_info
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

- name: Read two keys of a big host-keyed map, without dumping the map
  bluegreen.haproxy.haproxy_map_info:
    map: /etc/haproxy/maps/hosts.map
    keys:
      - shop.example.com
      - api.example.com
  register: hosts

- name: Show where shop.example.com goes
  ansible.builtin.debug:
    msg: "{{ hosts.entries['shop.example.com'] | default('not in the map') }}"
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
  description:
    - The live entries, key to value (the first value when a key is duplicated).
    - With O(keys), only the requested keys HAProxy has.
  returned: always
  type: dict
  sample: {"active": "backend_green"}
disk_entries:
  description:
    - The map file's entries, key to value; V(null) when the file is not readable here.
    - With O(keys), only the requested keys the file has.
  returned: always
  type: dict
  sample: {"active": "backend_blue"}
drift:
  description: Whether runtime and disk disagree (on O(keys) when given); V(null) when the file is not readable here.
  returned: always
  type: bool
  sample: true
drift_keys:
  description: Keys whose runtime and disk values differ, including keys present on one side only.
  returned: always
  type: list
  elements: str
  sample: ["active"]
missing_keys:
  description: The requested O(keys) HAProxy does not have at runtime; empty without O(keys).
  returned: always
  type: list
  elements: str
  sample: []
loaded_maps:
  description: Every map HAProxy has loaded, as C(show map) names them.
  returned: always
  type: list
  elements: str
  sample: ["/etc/haproxy/maps/bluegreen.map"]
lock:
  description:
    - The release lock at O(lock_path), as M(bluegreen.haproxy.release_lock_info) returns it
      (C(held); C(holder), the run's record; C(age) in seconds).
  returned: when O(lock_path) is given
  type: dict
  sample: {"held": false, "holder": null, "age": null}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.lock import lock_info
from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileEncodingError,
    MapFileError,
    read_map_file,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import (
    InvalidMapKeyError,
    read_map_info,
    validate_key,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    escape_argument,
    runtime_api_argument_spec,
)


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(
        map=dict(type="str", required=True),
        map_file=dict(type="path"),
        keys=dict(type="list", elements="str", no_log=False),
        lock_path=dict(type="path"),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    map_name, keys = module.params["map"], module.params["keys"]
    map_file = module.params["map_file"] or map_name

    try:
        for key in keys or []:
            escape_argument(key)
            validate_key(key)
    except (InvalidMapKeyError, ValueError) as exc:
        module.fail_json(msg="invalid keys: %s" % exc)
    try:
        disk_text = read_map_file(map_file)
    except MapFileEncodingError as exc:
        # The file is there but an entry cannot be read for sure: never report its keys as absent.
        module.fail_json(msg=str(exc))
    except MapFileError:
        disk_text = None
    try:
        client = RuntimeAPIClient(module.params["socket"], module.params["timeout"])
        result = read_map_info(client, map_name, disk_text, keys)
    except RuntimeAPIError as exc:
        module.fail_json(msg=str(exc))
    if module.params["lock_path"]:
        try:
            result["lock"] = lock_info(module.params["lock_path"])
        except OSError as exc:
            module.fail_json(msg="cannot read release lock %s: %s (run as a user that may read it)"
                             % (module.params["lock_path"], exc), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
