#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_map
short_description: Set or remove one key of a map HAProxy has loaded, at runtime and optionally on disk
version_added: 0.1.0
description:
  - Ensures the live value of one key in a map that HAProxy has loaded, through the Runtime API.
    This is the traffic switch of a blue-green release when HAProxy routes with
    C(use_backend %[str(active),map(/etc/haproxy/maps/bluegreen.map,backend_blue)]).
  - Runtime changes live in memory only and a reload re-reads the map file, so O(persist=true)
    also writes the value to the map file, atomically, after the runtime change succeeded.
  - With O(expected_value) the change is a compare-and-set; it is refused, and nothing changes,
    when another hand already moved the key.
  - Every argument is escaped for the Runtime API, and CR, LF and NUL are refused, so no key or
    value can run a second command.
author:
  - Blue-green HAProxy maintainers (@bluegreen-haproxy)
extends_documentation_fragment:
  - bluegreen.haproxy.runtime_api
  - bluegreen.haproxy.runtime_api.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the runtime entry, and the map file when O(persist=true).
  idempotent:
    support: full
options:
  map:
    description:
      - The map as HAProxy names it in C(show map), normally the file path exactly as written in
        the configuration, for example C(/etc/haproxy/maps/bluegreen.map). C(#<id>) also works
        when O(persist=false).
    type: str
    required: true
  key:
    description:
      - The key to set or remove. One word; it cannot contain blanks or start with C(#).
    type: str
    required: true
  value:
    description:
      - The value the key must have. Required when O(state=present). Leading and trailing blanks
        are not allowed (the map file would lose them).
    type: str
  state:
    description:
      - V(present) sets the key to O(value), adding it when missing (HAProxy's C(set map) alone
        does not add). V(absent) removes every entry of the key.
    type: str
    choices: [present, absent]
    default: present
  expected_value:
    description:
      - Compare-and-set. When given, the live value must be exactly this before anything changes;
        otherwise the task fails and changes nothing.
      - Also accepted when the live value already equals O(value), so a re-run stays idempotent.
    type: str
  persist:
    description:
      - After the runtime change succeeded (or when the runtime already had the value), write the
        value to the map file so a reload keeps it. The file is replaced atomically (temporary
        file in the same directory, fsync, rename); comments, order, other entries, owner and mode
        are kept.
    type: bool
    default: false
  map_file:
    description:
      - The map file on this host to persist to and report as RV(disk_value). Defaults to O(map).
        Set it when HAProxy sees the file under another path (for example inside a container).
    type: path
  backup:
    description:
      - With O(persist=true), keep a timestamped copy of the map file before replacing it.
    type: bool
    default: false
notes:
  - The socket must be a C(level admin) stats socket.
  - HAProxy has no atomic compare-and-set; O(expected_value) is checked immediately before the
    change and the result is read back afterwards. Serialize cutovers (the cutover playbook takes
    a lock) when several hands may move the same map.
seealso:
  - module: bluegreen.haproxy.haproxy_map_info
  - module: bluegreen.haproxy.haproxy_backend_health
"""

EXAMPLES = r"""
- name: Switch traffic to green, only if blue is live, and keep it across reloads
  bluegreen.haproxy.haproxy_map:
    map: /etc/haproxy/maps/bluegreen.map
    key: active
    value: backend_green
    expected_value: backend_blue
    persist: true

- name: Switch at runtime only, through a TCP stats socket
  bluegreen.haproxy.haproxy_map:
    socket: ipv4@127.0.0.1:9999
    map: /etc/haproxy/maps/bluegreen.map
    key: active
    value: backend_green

- name: Remove a retired service from a host-keyed map
  bluegreen.haproxy.haproxy_map:
    map: /etc/haproxy/maps/hosts.map
    key: old.example.com
    state: absent
    persist: true
    backup: true
"""

RETURN = r"""
map:
  description: The map that was managed.
  returned: always
  type: str
  sample: /etc/haproxy/maps/bluegreen.map
key:
  description: The key that was managed.
  returned: always
  type: str
  sample: active
previous_value:
  description: The live value before the task, V(null) when the key was absent.
  returned: always
  type: str
  sample: backend_blue
value:
  description: The live value after the task (predicted in check mode), V(null) when absent.
  returned: always
  type: str
  sample: backend_green
previous_disk_value:
  description: The value in the map file before the task, V(null) when absent or not readable.
  returned: always
  type: str
  sample: backend_blue
disk_value:
  description:
    - The value in the map file after the task (predicted in check mode), V(null) when the key is
      absent there or the file is not readable on this host.
    - Differs from RV(value) when O(persist=false) changed the runtime only.
  returned: always
  type: str
  sample: backend_green
runtime_changed:
  description: Whether the live value was (or, in check mode, would be) changed.
  returned: always
  type: bool
disk_changed:
  description: Whether the map file was (or, in check mode, would be) rewritten.
  returned: always
  type: bool
backup_file:
  description: The backup of the map file made before it was replaced.
  returned: when O(backup=true) and the map file changed
  type: str
  sample: /etc/haproxy/maps/bluegreen.map.12345.2026-11-27@14:01:02~
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileError,
    map_text_values,
    read_map_file,
    remove_map_text_key,
    set_map_text_value,
    write_map_file_atomic,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import (
    delete_runtime_key,
    require_loaded_map,
    runtime_values,
    set_runtime_value,
    validate_key,
    validate_value,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    escape_argument,
    runtime_api_argument_spec,
)


def desired_disk_text(disk_text, key, value):
    if value is None:
        return remove_map_text_key(disk_text, key)
    return set_map_text_value(disk_text, key, value)


def entry_text(key, value):
    return "" if value is None else "%s %s\n" % (key, value)


def read_disk_value(path, key):
    """(text, value) of the map file, or (None, None) when it cannot be read here."""
    try:
        text = read_map_file(path)
    except MapFileError:
        return None, None
    return text, map_text_values(text).get(key)


def invalid_input(params, desired_value):
    """One message naming the first bad option, or None; checked before anything is sent."""
    checks = [
        (option, lambda text=params[option]: escape_argument(text))
        for option in ("map", "key", "value", "expected_value") if params[option] is not None
    ]
    checks.append(("key", lambda: validate_key(params["key"])))
    if desired_value is not None:
        checks.append(("value", lambda: validate_value(desired_value)))
    for option, check in checks:
        try:
            check()
        except ValueError as exc:
            return "invalid %s: %s" % (option, exc)
    return None


def main():
    argument_spec = runtime_api_argument_spec()
    argument_spec.update(
        map=dict(type="str", required=True),
        key=dict(type="str", required=True, no_log=False),
        value=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        expected_value=dict(type="str"),
        persist=dict(type="bool", default=False),
        map_file=dict(type="path"),
        backup=dict(type="bool", default=False),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        required_if=[("state", "present", ["value"])],
        supports_check_mode=True,
    )
    params = module.params
    map_name, key = params["map"], params["key"]
    desired_value = params["value"] if params["state"] == "present" else None
    map_file = params["map_file"] or map_name

    input_error = invalid_input(params, desired_value)
    if input_error:
        module.fail_json(msg=input_error)

    result = dict(changed=False, map=map_name, key=key, runtime_changed=False, disk_changed=False)
    try:
        client = RuntimeAPIClient(params["socket"], params["timeout"])
        require_loaded_map(client, map_name)
        previous_value = runtime_values(client, map_name).get(key)
    except RuntimeAPIError as exc:
        module.fail_json(msg=str(exc), **result)

    disk_text, previous_disk_value = read_disk_value(map_file, key)
    result.update(previous_value=previous_value, value=previous_value,
                  previous_disk_value=previous_disk_value, disk_value=previous_disk_value)

    expected = params["expected_value"]
    if expected is not None and previous_value != expected and previous_value != desired_value:
        module.fail_json(
            msg="refusing to change %s in %s: its live value is %s, expected %s; nothing was changed"
                % (key, map_name, "absent" if previous_value is None else "'%s'" % previous_value, expected),
            **result)

    if params["persist"] and disk_text is None:
        module.fail_json(msg="persist=true but map file %s cannot be read on this host; nothing was changed"
                             % map_file, **result)

    runtime_needs_change = previous_value != desired_value
    new_disk_text = desired_disk_text(disk_text, key, desired_value) if params["persist"] else disk_text
    disk_needs_change = params["persist"] and new_disk_text != disk_text

    result.update(
        changed=runtime_needs_change or disk_needs_change,
        runtime_changed=runtime_needs_change,
        disk_changed=disk_needs_change,
        value=desired_value,
        disk_value=map_text_values(new_disk_text).get(key) if new_disk_text is not None else None,
    )
    if module._diff:
        result["diff"] = [dict(before_header="%s (runtime)" % map_name, after_header="%s (runtime)" % map_name,
                               before=entry_text(key, previous_value), after=entry_text(key, desired_value))]
        if params["persist"]:
            result["diff"].append(dict(before_header=map_file, after_header=map_file,
                                       before=disk_text, after=new_disk_text))

    if module.check_mode:
        module.exit_json(**result)

    try:
        if runtime_needs_change:
            if desired_value is None:
                delete_runtime_key(client, map_name, key)
            else:
                set_runtime_value(client, map_name, key, desired_value, key_exists=previous_value is not None)
            live_value = runtime_values(client, map_name).get(key)
            if live_value != desired_value:
                module.fail_json(msg="HAProxy accepted the change of %s but now reports %r instead of %r"
                                     % (key, live_value, desired_value), **result)
    except RuntimeAPIError as exc:
        result.update(value=previous_value, disk_value=previous_disk_value, changed=False)
        module.fail_json(msg=str(exc), **result)

    if disk_needs_change:
        if params["backup"]:
            result["backup_file"] = module.backup_local(map_file)
        try:
            write_map_file_atomic(map_file, new_disk_text)
        except OSError as exc:
            result["disk_value"] = previous_disk_value
            module.fail_json(msg="the live value of %s is now %r, but writing %s failed: %s"
                                 % (key, desired_value, map_file, exc), **result)

    module.exit_json(**result)


if __name__ == "__main__":
    main()
