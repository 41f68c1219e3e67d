#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: haproxy_map
short_description: Set keys of a map HAProxy has loaded, one or many in one atomic step, at runtime and optionally on disk
version_added: 0.1.0
description:
  - Ensures the live value of one key (O(key)), or of many keys at once (O(entries)), in a map
    that HAProxy has loaded, through the Runtime API. This is the traffic switch of a blue-green
    release when HAProxy routes with
    C(use_backend %[str(active),map(/etc/haproxy/maps/bluegreen.map,backend_blue)]).
  - With O(entries) every key switches in one atomic step (C(prepare map), C(add map @version)
    with every entry of the new version, untouched ones included, then C(commit map)), so no
    request ever sees some keys switched and others not, and 10,000 keys cost about what one costs.
  - After the change the touched keys are read back from HAProxy (RV(runtime_entries)); the task
    fails when HAProxy does not serve the requested values. This read-back is the verify step.
  - Runtime changes live in memory only and a reload re-reads the map file, so O(persist=true)
    also writes the values to the map file in one atomic replace. The new file is written next to
    the old one before runtime changes, so a file that cannot be replaced changes nothing; if the
    final rename still fails, the runtime change is undone.
  - With O(expected_value) or O(expected_entries) the change is a compare-and-set; it is refused,
    and nothing changes, when another hand already moved a key. It is judged when the task starts
    and again at the instant of the switch, on the connection that sends the switching command
    (see O(switch_at)); a refusal reports what HAProxy holds instead (RV(refused), RV(conflicts)).
  - When HAProxy's reply to the switching command is lost (a timeout, a reset), the touched keys
    are read back on a new connection and the result says what is live; if that read fails too,
    the task fails saying the state is unknown (RV(runtime_unknown)) and how to look.
  - The socket must be at C(level admin) (checked with C(show cli level), HAProxy 2.0 and later);
    a lower level is refused before anything changes.
  - With O(switch_at) everything but the final switching command is done first, then the module
    waits for that instant, so a fleet of nodes switches together.
  - Every argument is escaped for the Runtime API, and CR, LF and NUL are refused, so no key or
    value can run a second command. Messages quote at most a short prefix of an offending value.
  - A key, value or expected value whose command would not fit HAProxy's buffer (more than 12,000
    bytes; C(tune.bufsize) is 16,384 by default) is refused before connecting.
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
    details: The diff shows the changed runtime entries, and the map file when O(persist=true).
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
      - The one key to set or remove. One word; it cannot contain blanks or start with C(#).
      - Exactly one of O(key) and O(entries) is required.
    type: str
  value:
    description:
      - The value O(key) must have. Required when O(state=present). Leading and trailing blanks
        are not allowed (the map file would lose them).
    type: str
  state:
    description:
      - V(present) sets O(key) to O(value), adding it when missing (HAProxy's C(set map) alone
        does not add). V(absent) removes every entry of O(key).
      - Not used with O(entries).
    type: str
    choices: [present, absent]
    default: present
  expected_value:
    description:
      - Compare-and-set for O(key). When given, the live value must be exactly this before
        anything changes; otherwise the task fails and changes nothing. An absent key never
        matches.
      - Checked when the task starts and again right before the switching command, on the same
        connection (after the wait of O(switch_at)); a value moved by another hand in between is
        refused, not overwritten.
      - Also accepted when the live value already equals O(value), so a re-run stays idempotent.
    type: str
  entries:
    description:
      - Several keys to set together, key to value. All of them switch in one atomic step; keys
        not listed keep their values, missing keys are added.
      - Mutually exclusive with O(key), O(value), O(state) and O(expected_value).
      - Each value must fit HAProxy's buffer (about 12,000 bytes per entry); the module checks
        that HAProxy holds every entry before it commits.
    type: dict
  expected_entries:
    description:
      - Compare-and-set for O(entries), key to the live value each key must have now. Any key whose
        live value is neither this nor its goal in O(entries) fails the task, changing nothing.
      - A key may be listed here without being in O(entries), to guard it without changing it.
      - Whether given or not, right before C(commit map) the whole live map is read again and
        compared with the map the new version was built from. A key that moved, appeared or
        disappeared since (for example a hand's C(add map) during the wait of O(switch_at)) would
        be undone by the commit, so the switch is refused, naming the keys and both values, and
        nothing changes. A listed key a hand already put at its goal is not a conflict.
    type: dict
  switch_at:
    description:
      - An instant, in seconds since the epoch (UTC, as C(date +%s.%N) prints), at which to send the
        switching command (C(set map), C(add map), C(del map) or C(commit map)). Every read, the
        compare-and-set, the new map version and the new map file are done before waiting. At the
        instant, the touched key (or the whole map, for O(entries)) is read once more on the
        connection that then sends the switch, and the compare-and-set is judged on that read.
      - If the instant has passed, the switch happens at once and RV(late_by) says by how much.
        More than 600 seconds ahead is refused and nothing changes.
      - Meant for an C(async) task on every node of a fleet, armed for one agreed instant; the
        nodes' clocks must agree (NTP).
    type: float
  persist:
    description:
      - After the runtime change succeeded (or when the runtime already had the values), write the
        values to the map file so a reload keeps them, in one atomic replace (temporary file in
        the same directory, fsync, rename); comments, order, other entries, line endings (CRLF
        stays CRLF), owner and mode are kept.
      - The temporary file is written before runtime changes; when that fails nothing changes.
        When the final rename fails (for example an immutable file), the runtime change is undone
        and the task fails saying so.
      - Nothing is written when the file already holds the values.
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
  release_lock:
    description:
      - Guard the change with the release lock this run holds (see M(bluegreen.haproxy.release_lock)).
        Before anything changes (before waiting for O(switch_at)), O(release_lock.phase) is
        recorded in the lock, so a run that dies after this point is known to have switched.
      - When another owner holds the lock, or nobody does any more (it was forced away), the
        task fails and nothing changes. Not touched in check mode.
      - The release role's switch records its phase this way, in the same module run.
    type: dict
    suboptions:
      path:
        description: The lock file.
        type: path
        required: true
      owner:
        description: The run holding the lock, as it took it.
        type: str
        required: true
      phase:
        description: The phase to record, for example V(switching).
        type: str
        required: true
notes:
  - The socket must be a C(level admin) stats socket (C(stats socket /run/haproxy/admin.sock mode
    660 level admin)). HAProxy 2.6 lets lower levels change maps, 3.4 refuses it; the module
    refuses a lower level itself, before anything changes.
  - HAProxy has no atomic compare-and-set. The module reads and writes on one connection in
    interactive mode (C(prompt)), the write right after the read, so the window left to another
    hand is the time between two commands on one connection; the result is read back
    afterwards. Serialize cutovers (the cutover playbook takes a lock) when several hands may
    move the same map.
  - Replies are split on line feeds only, so values holding U+2028, U+0085 and similar
    characters are read back whole. The map file is read as bytes; comments may hold any bytes
    (kept as they are when the file is rewritten), an entry line that is not UTF-8 fails the task
    naming its line and byte offset.
  - With O(entries), the whole live map is read once (C(show map)) because the new version must
    hold every entry. With O(key), only that key is read (C(get map)), whatever the map's size.
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

- name: Move two services of a host-keyed map to green in one atomic step
  bluegreen.haproxy.haproxy_map:
    map: /etc/haproxy/maps/hosts.map
    entries:
      shop.example.com: backend_shop_green
      api.example.com: backend_api_green
    expected_entries:
      shop.example.com: backend_shop_blue
      api.example.com: backend_api_blue
    persist: true
  register: bulk_switch

- name: Agree on one instant for the whole fleet, 5 seconds from now
  ansible.builtin.set_fact:
    switch_instant: "{{ now(utc=true).timestamp() + 5 }}"
  run_once: true

- name: Arm the switch on every node for that instant
  bluegreen.haproxy.haproxy_map:
    map: /etc/haproxy/maps/bluegreen.map
    key: active
    value: backend_green
    expected_value: backend_blue
    switch_at: "{{ switch_instant }}"
  async: 60
  poll: 1
  register: armed_switch

- name: Show when each node switched
  ansible.builtin.debug:
    msg: "switched at {{ armed_switch.switched_at }}, {{ armed_switch.late_by }} s late"
"""

RETURN = r"""
map:
  description: The map that was managed.
  returned: always
  type: str
  sample: /etc/haproxy/maps/bluegreen.map
previous:
  description:
    - The live value of every touched key right before the switch (read at the instant of the
      switch on the connection that sent it), V(null) for absent keys.
    - When the compare-and-set refused, the live values read when it refused.
  returned: success
  type: dict
  sample: {"active": "backend_blue"}
runtime_entries:
  description:
    - The touched keys as HAProxy serves them after the task, read back from HAProxy (the
      verify); V(null) for absent keys. Predicted in check mode; the previous values when the
      change failed or was undone.
    - When the compare-and-set refused, what HAProxy holds (read at the instant), never the
      expected values.
    - V(null) (the whole field) when the state is unknown (RV(runtime_unknown)).
  returned: success
  type: dict
  sample: {"active": "backend_green"}
refused:
  description:
    - Whether the compare-and-set refused the change (when the task started, or at the instant
      of the switch) because a key had moved; nothing was changed then, and RV(runtime_entries),
      RV(previous) and RV(previous_value) hold the live values read when it refused.
  returned: always, except when an option is invalid
  type: bool
  sample: false
conflicts:
  description:
    - When RV(refused), each key that moved, with C(expected) (the value the compare-and-set, or
      the map the new version was built from, expected; V(null) for absent) and C(live) (what
      HAProxy held; V(null) for absent).
  returned: when the compare-and-set refused
  type: dict
  sample: {"active": {"expected": "backend_blue", "live": "backend_canary"}}
runtime_unknown:
  description:
    - V(true) when HAProxy's reply to the switching command was lost and reading the keys back
      failed too. Whether the change was applied is unknown (the task fails, C(changed) is
      V(true), and the message gives the command line that shows what is live).
  returned: when the state is unknown
  type: bool
  sample: true
changed_keys:
  description: The touched keys whose live value changes (or, in check mode, would change).
  returned: success
  type: list
  elements: str
  sample: ["active"]
switched_at:
  description:
    - When the switching command was sent, in seconds since the epoch; V(null) when nothing was
      sent (no change, or check mode).
  returned: success
  type: float
  sample: 1795964462.0012
late_by:
  description:
    - Seconds between O(switch_at) and the switch, rounded to milliseconds; V(0.0) when on time
      or without O(switch_at).
  returned: success
  type: float
  sample: 0.0
waited:
  description:
    - Seconds this run was ready before O(switch_at) and waited for it, rounded to milliseconds
      (V(0.0) when it was ready late); what the fleet's lead left to spare on this node.
  returned: when O(switch_at) is set and the change was attempted
  type: float
  sample: 0.42
persisted:
  description: Whether the map file holds the requested values when the task ends (written now or already there).
  returned: success
  type: bool
runtime_changed:
  description:
    - Whether the live values were (or, in check mode, would be) changed. After a lost reply,
      taken from the read-back; V(null) when that is unknown (RV(runtime_unknown)).
  returned: success
  type: bool
disk_changed:
  description: Whether the map file was (or, in check mode, would be) rewritten.
  returned: success
  type: bool
key:
  description: The key that was managed.
  returned: with O(key)
  type: str
  sample: active
previous_value:
  description:
    - The live value right before the switch (read at its instant), V(null) when the key was
      absent; when the compare-and-set refused, the value read when it refused.
  returned: with O(key)
  type: str
  sample: backend_blue
value:
  description: The live value after the task (predicted in check mode), V(null) when absent.
  returned: with O(key)
  type: str
  sample: backend_green
previous_disk_value:
  description: The value in the map file before the task, V(null) when absent or not readable.
  returned: with O(key)
  type: str
  sample: backend_blue
disk_value:
  description:
    - The value in the map file after the task (predicted in check mode), V(null) when the key is
      absent there or the file is not readable on this host.
    - Differs from RV(value) when O(persist=false) changed the runtime only.
  returned: with O(key)
  type: str
  sample: backend_green
previous_disk_entries:
  description: Every key of O(entries) with its value in the map file before the task, V(null) when absent.
  returned: with O(entries), when the map file is readable on this host
  type: dict
  sample: {shop.example.com: shop_blue, api.example.com: api_blue}
disk_entries:
  description:
    - Every key of O(entries) with its value in the map file after the task (predicted in check mode),
      V(null) when absent. Differs from RV(runtime_entries) when O(persist=false) changed the runtime only.
  returned: with O(entries), when the map file is readable on this host
  type: dict
  sample: {shop.example.com: shop_green, api.example.com: api_green}
backup_file:
  description: The backup of the map file made before it was replaced.
  returned: when O(backup=true) and the map file changed
  type: str
  sample: /etc/haproxy/maps/bluegreen.map.12345.2026-11-27@14:01:02~
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_change import MapStepError, change_map
from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import (
    InvalidMapKeyError,
    normalize_entries,
    validate_request,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPIError,
    runtime_api_argument_spec,
    shorten,
)


def argument_spec():
    spec = runtime_api_argument_spec()
    spec.update(
        map=dict(type="str", required=True),
        key=dict(type="str", no_log=False),
        value=dict(type="str"),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        expected_value=dict(type="str"),
        entries=dict(type="dict"),
        expected_entries=dict(type="dict"),
        switch_at=dict(type="float"),
        persist=dict(type="bool", default=False),
        map_file=dict(type="path"),
        backup=dict(type="bool", default=False),
        release_lock=dict(type="dict", options=dict(
            path=dict(type="path", required=True),
            owner=dict(type="str", required=True),
            phase=dict(type="str", required=True),
        )),
    )
    return spec


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("entries", "key"), ("entries", "value"), ("entries", "state"),
                            ("entries", "expected_value")],
        required_one_of=[("key", "entries")],
        required_by=dict(expected_entries=["entries"]),
        supports_check_mode=True,
    )
    params = module.params
    result = dict(changed=False, map=params["map"])
    try:
        validate_request(params)
    except InvalidMapKeyError as exc:
        # Nothing was asked; the result must not carry a huge input back either.
        module.fail_json(msg=str(exc), changed=False, map=shorten(params["map"]))
    try:
        if params["entries"] is not None:
            params["entries"] = normalize_entries("entries", params["entries"])
            params["expected_entries"] = normalize_entries("expected_entries", params["expected_entries"])
        client = RuntimeAPIClient(params["socket"], params["timeout"])
    except RuntimeAPIError as exc:
        module.fail_json(msg=str(exc), **result)
    try:
        result = change_map(client, params, check_mode=module.check_mode, diff=module._diff,
                            backup=module.backup_local, warn=module.warn, module=module)
    except MapStepError as exc:
        module.fail_json(msg=str(exc), **exc.result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
