# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Map operations built on the Runtime API client, shared by the map modules.

Three layers, so the modules stay thin and the logic is unit-tested without HAProxy:

- reads: `get map` per key (exact and O(1) on the usual `str` maps, whatever the map's
  size), `show map` when the whole map is needed;
- planning (pure): :func:`plan_single` and :func:`plan_bulk` decide what to send, what to
  restore on failure, the map file's new text and the diff;
- applying: :func:`apply_plan` stages everything it can (new map version, new map file),
  waits for `switch_at`, sends the one command that switches, reads the keys back (the
  verify), then renames the map file in, restoring runtime if that still fails.
"""

from __future__ import annotations

import re
import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileError,
    map_text_lookup,
    map_text_values,
    remove_map_text_key,
    set_map_text_values,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    entries_to_dict,
    parse_map_entries,
    parse_map_list,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    CommandError,
    ReplyLostError,
    RuntimeAPIError,
    check_command_hint,
    escape_argument,
    first_line,
    format_command,
    shorten,
)

# Bytes per command sent in one go. HAProxy 2.6 silently drops a command (payload included)
# larger than tune.bufsize, 16384 by default, with an empty reply; stay well below it.
COMMAND_BUDGET = 12000
# How far ahead `switch_at` may be: an armed switch is for "a little in the future".
MAX_SWITCH_DELAY = 600.0

_NEW_VERSION = re.compile(r"New version created: (\d+)")


class MapNotLoadedError(RuntimeAPIError):
    pass


class InvalidMapKeyError(RuntimeAPIError, ValueError):
    pass


class MapChangeError(RuntimeAPIError):
    """A change failed part way; `facts` says what is true now (merged into the result)."""

    def __init__(self, message, facts=None):
        super(MapChangeError, self).__init__(message)
        self.facts = facts or {}


class CompareAndSetError(MapChangeError):
    """The live value is neither the expected one nor the goal: someone else moved it.

    `facts` hold the live values read when it was refused (runtime_entries, previous),
    `refused` and `conflicts`: what is true on the node, not what was expected.
    """


def quote(value):
    """A value for a message: absent, or a short quoted prefix."""
    return "absent" if value is None else "'%s'" % shorten(value)


def validate_key(key):
    """Refuse keys that cannot round-trip through `show map` and the map file.

    A blank would split the key on disk and in `show map`; a leading `#` makes
    a comment on disk and an entry reference (`#0x...`) at runtime.
    """
    if key is None or key == "":
        raise InvalidMapKeyError("key must not be empty")
    if any(blank in key for blank in (" ", "\t")):
        raise InvalidMapKeyError("key %r contains a blank; map keys must be one word" % shorten(key))
    if key.startswith("#"):
        raise InvalidMapKeyError("key %r starts with '#', which HAProxy reads as a comment or an entry reference"
                                 % shorten(key))


def validate_value(value):
    """Values keep inner blanks, but the map file trims the ends, so refuse those."""
    if value is None or value == "":
        raise InvalidMapKeyError("value must not be empty")
    if value != value.strip():
        raise InvalidMapKeyError("value %r starts or ends with a blank, which the map file would lose"
                                 % shorten(value))


def _check(option, checks):
    for check, text in checks:
        try:
            check(text)
        except ValueError as exc:
            raise InvalidMapKeyError("invalid %s: %s" % (option, exc))


def normalize_entries(option, entries):
    """{str: str} from a user's dict; YAML may give numbers. Raises InvalidMapKeyError."""
    normalized = {}
    for key, value in (entries or {}).items():
        if value is None or isinstance(value, (dict, list)):
            raise InvalidMapKeyError("invalid %s: the value of %s must be a string" % (option, shorten(key)))
        normalized[str(key)] = str(value)
    return normalized


def _too_long(option, text, command_bytes, what=None):
    """InvalidMapKeyError for an input whose command would not fit HAProxy's buffer; never echoes it."""
    return InvalidMapKeyError(
        "invalid %s: %s is too long (%d characters): the command carrying it would be %d bytes, more than "
        "the %d bytes this module sends in one command (HAProxy drops a command longer than its buffer, "
        "tune.bufsize, 16384 bytes by default); nothing was changed"
        % (option, what or "the " + option, len(text), command_bytes, COMMAND_BUDGET))


def _command_bytes(verb, *arguments):
    return len(format_command(verb, *arguments).encode("utf-8")) + 1


def validate_lengths(params):
    """Refuse, before connecting, every input whose command would not fit one HAProxy command.

    HAProxy 2.6 drops a command longer than tune.bufsize without an error (or resets the
    connection), and a value near the buffer's size is read back without its value; so
    the limit is COMMAND_BUDGET for every command this module builds from user input.
    Runs after the character checks (escape_argument) of validate_request.
    """
    map_name = params["map"]
    if _command_bytes("show map", map_name) > COMMAND_BUDGET:
        raise _too_long("map", map_name, _command_bytes("show map", map_name))
    if params.get("entries") is not None:
        head = _command_bytes("add map", "@999999", map_name) + len(" <<")
        for option in ("entries", "expected_entries"):
            for key, value in normalize_entries(option, params.get(option)).items():
                size = head + len(("%s %s\n" % (key, value)).encode("utf-8"))
                if size > COMMAND_BUDGET:
                    raise _too_long(option, key + value, size, "the entry of key %s" % shorten(key, 40))
        return
    for option in ("key", "value", "expected_value"):
        text = params.get(option)
        if text is None:
            continue
        size = _command_bytes("set map", map_name, params["key"] if option != "key" else text,
                              text if option != "key" else "x")
        if size > COMMAND_BUDGET:
            raise _too_long(option, text, size)


def validate_request(params, now=None):
    """Check every option before anything is sent; raise InvalidMapKeyError naming the option."""
    _check("map", [(escape_argument, params["map"])])
    if params.get("entries") is not None:
        entries = normalize_entries("entries", params["entries"])
        if not entries:
            raise InvalidMapKeyError("invalid entries: give at least one key")
        expected = normalize_entries("expected_entries", params.get("expected_entries"))
        for option, values, check_values in (("entries", entries, True), ("expected_entries", expected, False)):
            for key, value in values.items():
                checks = [(escape_argument, key), (validate_key, key), (escape_argument, value)]
                if check_values:
                    checks.append((validate_value, value))
                _check(option, checks)
    else:
        if params["key"] is None:
            raise InvalidMapKeyError("invalid key: give key (one key) or entries (several keys)")
        if params["state"] == "present" and params["value"] is None:
            raise InvalidMapKeyError("invalid value: state=present needs a value (or use state=absent)")
        for option in ("key", "value", "expected_value"):
            if params[option] is not None:
                _check(option, [(escape_argument, params[option])])
        _check("key", [(validate_key, params["key"])])
        if params["state"] == "present":
            _check("value", [(validate_value, params["value"])])
    validate_lengths(params)
    switch_at = params.get("switch_at")
    if switch_at is not None:
        ahead = switch_at - (time.time() if now is None else now)
        if ahead > MAX_SWITCH_DELAY:
            raise InvalidMapKeyError(
                "invalid switch_at: %.3f is %.0f s ahead, more than %d s; arm the switch closer to the "
                "instant (a clock far off NTP also causes this); nothing was changed"
                % (switch_at, ahead, MAX_SWITCH_DELAY))


# -- reads ----------------------------------------------------------------


def require_loaded_map(client, map_name):
    """Return (record of `map_name`, every loaded map) from `show map`, or fail listing them."""
    loaded = parse_map_list(client.run("show map"))
    for record in loaded:
        if record["name"] == map_name or "#%d" % record["id"] == map_name:
            return record, loaded
    names = ", ".join(record["name"] for record in loaded) or "none"
    raise MapNotLoadedError(
        "map %s is not loaded by HAProxy at %s (loaded maps: %s); name it exactly as the "
        "configuration does" % (map_name, client.address, names)
    )


def runtime_entries(client, map_name, version=None):
    """Entries of a loaded map (or of one of its uncommitted versions), in file order."""
    arguments = ([("@%d" % version)] if version is not None else []) + [map_name]
    return parse_map_entries(client.run("show map", *arguments))


def runtime_values(client, map_name):
    return entries_to_dict(runtime_entries(client, map_name))


def parse_get_map_reply(reply):
    """First line of a `get map` reply -> {found, key, value, match_type, case}.

    HAProxy prints key and value unescaped between double quotes, so a value holding
    `"` or `, ` would fool a key=value parser: the key ends at the first `", value="`
    (keys have no blanks) and the value at the last `", type="`.
    """
    line = first_line(reply)
    fields = dict(found=False, key=None, value=None, match_type=None, case=None)
    head = line.split(", key=\"", 1)[0]
    for part in head.split(", "):
        name, _sep, text = part.partition("=")
        if name == "type" and fields["match_type"] is None:
            fields["match_type"] = text
        elif name == "case":
            fields["case"] = text
        elif name == "found":
            fields["found"] = text == "yes"
    if fields["found"] and ", key=\"" in line:
        rest = line.split(", key=\"", 1)[1]
        key, separator, rest = rest.partition("\", value=\"")
        if separator:
            value, separator, _type = rest.rpartition("\", type=\"")
            fields.update(key=key, value=value if separator else None)
    return fields


def _batches(lines, separator, budget=COMMAND_BUDGET):
    """Group lines so each joined group stays within `budget` bytes."""
    batch, size = [], 0
    for line in lines:
        cost = len(line.encode("utf-8")) + len(separator)
        if batch and size + cost > budget:
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += cost
    if batch:
        yield batch


def lookup_runtime_values(client, map_name, keys):
    """{key: live value, or None when absent} for `keys`, without dumping the map.

    `get map` looks a sample up the way traffic does. On a case-sensitive `str` map (what
    `map()` builds) that is an exact key lookup, so its answer is used when it names the
    key itself. Any other answer (a prefix or regex map matching another pattern, an
    unexpected reply) falls back to one `show map`, which is exact for every map type.
    Several lookups share one connection (`;`-chained), within COMMAND_BUDGET.
    """
    keys = list(dict.fromkeys(keys))
    values, unsure = {}, []
    for batch in _batches(keys, ";"):
        line = ";".join(format_command("get map", map_name, key) for key in batch)
        blocks = [block for block in client.raw(line).split("\n\n") if block.strip()]
        if len(blocks) != len(batch):
            unsure.extend(batch)
            continue
        for key, block in zip(batch, blocks):
            if first_line(block).startswith(("Unknown map identifier", "Unknown command")):
                raise CommandError(format_command("get map", map_name, key), block)
            answer = parse_get_map_reply(block)
            exact_table = answer["match_type"] == "str" and answer["case"] == "sensitive"
            if answer["found"] and answer["key"] == key and answer["value"] is not None:
                values[key] = answer["value"]
            elif not answer["found"] and exact_table:
                values[key] = None
            else:
                unsure.append(key)
    if unsure:
        live = runtime_values(client, map_name)
        values.update((key, live.get(key)) for key in unsure)
    return {key: values[key] for key in keys}


# -- writes ---------------------------------------------------------------


def set_runtime_value(client, map_name, key, value, key_exists):
    """`set map` changes existing entries only, so a missing key is added instead."""
    if key_exists:
        client.run("set map", map_name, key, value, expect_empty=True)
    else:
        client.run("add map", map_name, key, value, expect_empty=True)


def delete_runtime_key(client, map_name, key):
    client.run("del map", map_name, key, expect_empty=True)


def payload_chunks(entries, budget=COMMAND_BUDGET):
    """`key value` payload lines of `entries`, grouped so each payload stays within `budget` bytes."""
    return list(_batches(["%s %s" % (key, value) for key, value in entries], "\n", budget))


def prepare_version(client, map_name):
    """`prepare map`: a new, empty, invisible version of the map; its number."""
    reply = client.run("prepare map", map_name)
    match = _NEW_VERSION.search(reply)
    if not match:
        raise CommandError(format_command("prepare map", map_name), reply)
    return int(match.group(1))


def stage_version(client, map_name, entries):
    """Prepare a version holding exactly `entries` (in order) and prove HAProxy holds them all.

    A payload HAProxy found too large is dropped with the same empty reply as success,
    so the staged version is read back (`show map @N`) before anyone may commit it.
    """
    version = prepare_version(client, map_name)
    # The command line before the payload counts too: HAProxy 2.6.12 was seen to crash (SIGSEGV)
    # after an `add map` payload of 16384 bytes, so no command may come near its buffer.
    head_bytes = len(format_command("add map", "@%d" % version, map_name).encode("utf-8")) + len(" <<\n")
    for chunk in payload_chunks(entries, COMMAND_BUDGET - head_bytes):
        client.run_payload("add map", ["@%d" % version, map_name], chunk)
    staged = [(entry["key"], entry["value"]) for entry in runtime_entries(client, map_name, version)]
    # Values, not only the count: a version with the right number of entries and one wrong
    # value must not be committed either.
    if staged != list(entries):
        held = set(staged)
        missing = [key for key, value in entries if (key, value) not in held]
        raise MapChangeError(
            "HAProxy holds %d of the %d entries of the new version of %s as they were sent (first missing or "
            "different: %s); nothing was changed: the version was not committed. A value longer than about %d "
            "bytes does not fit HAProxy's buffer (tune.bufsize)"
            % (len(entries) - len(missing), len(entries), map_name, shorten(missing[0]) if missing else "the order",
               COMMAND_BUDGET))
    return version


def commit_version(client, map_name, version):
    client.run("commit map", "@%d" % version, map_name, expect_empty=True)


# -- planning (pure) ------------------------------------------------------


class MapPlan(object):
    """What one haproxy_map run will do. Built by plan_single/plan_bulk, applied by apply_plan.

    `action` is None (nothing to send) or one of ("set"|"add", key, value), ("del", key),
    ("commit", entries); `restore` is the action that puts the previous values back.
    `expected` holds the compare-and-set's expected values ({} without one); `snapshot`,
    for a commit, the live map (key, value) pairs the new version was built from: the
    switch re-checks both at the instant (see apply_plan).
    """

    def __init__(self, map_name, previous, desired, action, restore, disk_text, new_disk_text,
                 expected=None, snapshot=None):
        self.map_name = map_name
        self.previous = previous
        self.desired = desired
        self.action = action
        self.restore = restore
        self.disk_text = disk_text
        self.new_disk_text = new_disk_text
        self.expected = dict(expected or {})
        self.snapshot = snapshot

    @property
    def changed_keys(self):
        return [key for key in self.desired if self.previous.get(key) != self.desired[key]]

    @property
    def disk_changed(self):
        return self.new_disk_text is not None and self.new_disk_text != self.disk_text

    @property
    def changed(self):
        return self.action is not None or self.disk_changed

    def diff(self, map_file, persist):
        before = render_values((key, self.previous[key]) for key in self.changed_keys)
        after = render_values((key, self.desired[key]) for key in self.changed_keys)
        header = "%s (runtime)" % self.map_name
        diffs = [dict(before_header=header, after_header=header, before=before, after=after)]
        if persist:
            diffs.append(dict(before_header=map_file, after_header=map_file,
                              before=self.disk_text, after=self.new_disk_text))
        return diffs

    def single_at_instant(self, live_value):
        """This single-key plan re-made from the value read at the instant of the switch.

        Raises CompareAndSetError (facts: the live value) when the compare-and-set no longer
        holds; otherwise the action and the restore go from `live_value`, which is what the
        result then reports as the previous value.
        """
        key = next(iter(self.desired))
        value = self.desired[key]
        _check_single(self.map_name, key, value, self.expected.get(key), live_value, " at the instant of the switch")
        return MapPlan(self.map_name, {key: live_value}, dict(self.desired), _single_action(key, live_value, value),
                       _single_action(key, previous=value, value=live_value), self.disk_text, self.new_disk_text,
                       self.expected)


def refused_facts(desired, live, conflicts):
    """The facts of a refused compare-and-set: nothing changed, and what is live instead."""
    live_values = dict((key, live.get(key)) for key in desired)
    return dict(switched_at=None, late_by=0.0, runtime_entries=live_values, previous=dict(live_values),
                changed_keys=[], runtime_changed=False, disk_changed=False, changed=False, persisted=False,
                refused=True, conflicts=conflicts)


def _single_action(key, previous, value):
    """The command that takes `key` from `previous` to `value` (None: absent)."""
    if previous == value:
        return None
    if value is None:
        return ("del", key)
    return ("set" if previous is not None else "add", key, value)


def _check_single(map_name, key, value, expected_value, live_value, when=""):
    """Raise CompareAndSetError unless `live_value` is `expected_value` or the goal `value`.

    An absent key (None) is never the expected value: expected_value is a value.
    """
    if expected_value is not None and live_value not in (expected_value, value):
        raise CompareAndSetError(
            "refusing to change %s in %s%s: its live value is %s, expected %s; nothing was changed"
            % (key, map_name, when, quote(live_value), shorten(expected_value)),
            refused_facts({key: value}, {key: live_value},
                          {key: dict(expected=expected_value, live=live_value)}))


def plan_single(map_name, key, value, expected_value, previous_value, disk_text, persist):
    """Plan one key: `value` None removes it. Raises CompareAndSetError, changing nothing."""
    _check_single(map_name, key, value, expected_value, previous_value)
    new_disk_text = None
    if persist:
        new_disk_text = (remove_map_text_key(disk_text, key) if value is None
                         else set_map_text_values(disk_text, {key: value}))
    return MapPlan(map_name, {key: previous_value}, {key: value},
                   _single_action(key, previous_value, value), _single_action(key, previous=value, value=previous_value),
                   disk_text, new_disk_text, {key: expected_value} if expected_value is not None else None)


def plan_bulk(map_name, entries, expected_entries, live_entries, disk_text, persist):
    """Plan a switch of every key of `entries` in one commit.

    `live_entries` is the whole live map (`show map`, in order, duplicates included):
    `commit map` replaces the map with the new version, so the new version is the live
    map with the values of `entries` put in (every duplicate of a key, as `set map`
    does) and missing keys appended. Raises CompareAndSetError naming the mismatches.
    """
    live = entries_to_dict(live_entries)
    mismatches = [key for key, expected in (expected_entries or {}).items()
                  if live.get(key) not in (expected, entries.get(key, expected))]
    if mismatches:
        details = ", ".join(
            "%s is %s (expected %s)" % (shorten(key), quote(live.get(key)), shorten(expected_entries[key]))
            for key in mismatches[:5])
        raise CompareAndSetError(
            "refusing to switch %d keys of %s: %d live values are not the expected ones: %s%s; "
            "nothing was changed" % (len(entries), map_name, len(mismatches), details,
                                     ", ..." if len(mismatches) > 5 else ""),
            refused_facts(entries, live, dict((key, dict(expected=expected_entries[key], live=live.get(key)))
                                              for key in mismatches)))
    previous = {key: live.get(key) for key in entries}
    current_version = [(entry["key"], entry["value"]) for entry in live_entries]
    action = restore = None
    if any(previous[key] != value for key, value in entries.items()):
        new_version = [(key, entries.get(key, value)) for key, value in current_version]
        new_version += [(key, value) for key, value in entries.items() if key not in live]
        action, restore = ("commit", new_version), ("commit", current_version)
    new_disk_text = set_map_text_values(disk_text, entries) if persist else None
    return MapPlan(map_name, previous, dict(entries), action, restore, disk_text, new_disk_text,
                   expected_entries, current_version)


def moved_since_snapshot(snapshot, live_pairs, desired):
    """{key: {expected: value when armed, live: value now}} for every key the live map moved.

    A key counts as moved when its values (duplicates included) differ between the
    snapshot the new version was built from and the live map; a key of `desired` that a
    hand already put at its goal is not a conflict (the commit gives it the same value).
    """
    before, now = {}, {}
    for pairs, values in ((snapshot, before), (live_pairs, now)):
        for key, value in pairs:
            values.setdefault(key, []).append(value)
    moved = {}
    for key in list(before) + [key for key in now if key not in before]:
        if before.get(key) == now.get(key):
            continue
        if key in desired and now.get(key) and all(value == desired[key] for value in now[key]):
            continue
        moved[key] = dict(expected=(before.get(key) or [None])[0], live=(now.get(key) or [None])[0])
    return moved


def render_values(items):
    """(key, value) pairs as map-file text, absent values left out; for diffs."""
    return "".join("%s %s\n" % (key, value) for key, value in items if value is not None)


def diff_maps(runtime, disk):
    """Keys whose value differs between two {key: value} dicts, sorted."""
    return sorted(key for key in set(runtime) | set(disk) if runtime.get(key) != disk.get(key))


def disk_values(plan, keys):
    """{key: value in the map file after the plan}, None when absent or unreadable."""
    text = plan.new_disk_text if plan.new_disk_text is not None else plan.disk_text
    values = map_text_lookup(text, keys) if text is not None else {}
    return {key: values.get(key) for key in keys}


# -- applying -------------------------------------------------------------


def _send(client, map_name, action, stage=True):
    """Send `action`; for a commit, stage the version first unless given staged (version, entries)."""
    kind = action[0]
    if kind == "set":
        set_runtime_value(client, map_name, action[1], action[2], key_exists=True)
    elif kind == "add":
        set_runtime_value(client, map_name, action[1], action[2], key_exists=False)
    elif kind == "del":
        delete_runtime_key(client, map_name, action[1])
    else:
        commit_version(client, map_name, stage_version(client, map_name, action[1]) if stage else action[2])


def read_back(client, plan):
    """The touched keys as HAProxy serves them now."""
    keys = list(plan.desired)
    if plan.action is not None and plan.action[0] == "commit":
        live = runtime_values(client, plan.map_name)
        return {key: live.get(key) for key in keys}
    return lookup_runtime_values(client, plan.map_name, keys)


def wait_until(instant, clock=None, sleep=None):
    """Sleep until the wall-clock `instant` (the fleet's agreed one); return at once if past."""
    clock, sleep = clock or time.time, sleep or time.sleep
    while True:
        remaining = instant - clock()
        if remaining <= 0:
            return
        sleep(remaining)


def _restore(client, plan, facts, cause):
    """Put the previous values back after the map file could not be replaced; raise MapChangeError."""
    try:
        _send(client, plan.map_name, plan.restore)
        restored = read_back(client, plan)
    except RuntimeAPIError as exc:
        raise MapChangeError(
            "%s, after the runtime change; restoring the previous runtime values failed too (%s): "
            "the live values are now the new ones, the map file has the old ones; fix the file "
            "and run again" % (cause, exc), facts)
    facts.update(runtime_entries=restored, runtime_changed=False, changed=False)
    if restored != plan.previous:
        facts.update(runtime_changed=True, changed=True)
        raise MapChangeError("%s; restoring the previous runtime values left %s" % (cause, restored), facts)
    raise MapChangeError("%s; the runtime change was undone, nothing is changed" % cause, facts)


def unchanged_facts(plan):
    """The result's facts when nothing was (or is any longer) changed."""
    return dict(switched_at=None, late_by=0.0, runtime_entries=dict(plan.previous), previous=dict(plan.previous),
                runtime_changed=False, disk_changed=False, changed=False, persisted=False, refused=False)


def _session_lookup(session, map_name, key):
    """The live value of `key` (None when absent), read on the session's connection.

    `get map` answers for an exact key on the usual `str` map; any other answer (another
    pattern of a prefix map, a value too long for HAProxy's output buffer) is settled by
    `show map` on the same connection.
    """
    line = format_command("get map", map_name, key)
    reply = session.raw(line)
    if first_line(reply).startswith(("Unknown map identifier", "Unknown command")):
        raise CommandError(line, reply)
    answer = parse_get_map_reply(reply)
    if answer["found"] and answer["key"] == key and answer["value"] is not None:
        return answer["value"]
    if not answer["found"] and answer["match_type"] == "str" and answer["case"] == "sensitive":
        return None
    return entries_to_dict(parse_map_entries(session.run("show map", map_name))).get(key)


def _session_read_back(session, plan):
    """The touched keys as HAProxy serves them, read on the session's connection."""
    if plan.action is not None and plan.action[0] == "commit":
        live = entries_to_dict(parse_map_entries(session.run("show map", plan.map_name)))
        return dict((key, live.get(key)) for key in plan.desired)
    return dict((key, _session_lookup(session, plan.map_name, key)) for key in plan.desired)


def _write_line(plan, version):
    """The switching command of `plan` (for a commit, of the staged `version`), as (verb, arguments)."""
    kind = plan.action[0]
    if kind == "commit":
        return "commit map", ("@%d" % version, plan.map_name)
    if kind == "del":
        return "del map", (plan.map_name, plan.action[1])
    return "%s map" % kind, (plan.map_name, plan.action[1], plan.action[2])


def _check_hint(client, plan):
    """How a person sees what is live, for a message where we could not."""
    if len(plan.desired) == 1:
        command = format_command("get map", plan.map_name, next(iter(plan.desired)))
    else:
        command = format_command("show map", plan.map_name)
    return check_command_hint(client.address, command)


def _after_lost_reply(client, plan, facts, lost):
    """HAProxy may have run the write whose reply was lost: read the keys back on a new connection.

    Returns the live values; raises MapChangeError when the read-back shows nothing moved
    (then that is true) or fails too (then the state is unknown, and the message says how
    to look).
    """
    try:
        live = read_back(client, plan)
    except RuntimeAPIError as exc:
        facts.update(runtime_entries=None, runtime_unknown=True, runtime_changed=None, changed=True)
        raise MapChangeError(
            "%s, and reading the live values back failed too (%s): whether HAProxy applied the change is "
            "unknown and the map file was not written; check what is live with: %s"
            % (lost, exc, _check_hint(client, plan)), facts)
    facts["runtime_entries"] = live
    if live == plan.previous:
        facts.update(switched_at=None, runtime_changed=False, changed=False)
        raise MapChangeError("%s; read back on a new connection, the previous values are still live: nothing "
                             "was changed" % lost, facts)
    facts.update(runtime_changed=True, changed=True)
    facts.setdefault("warnings", []).append(
        "%s; read back on a new connection, HAProxy serves the new values: the change was applied" % lost)
    return live


def _switch(client, plan, version, facts, clock):
    """The compare-and-set and the switch, judged at this instant on one connection.

    Single key: `get map`, then the write the live value calls for (or a refusal), then
    the read-back. Commit: `show map`, compared with the snapshot the staged version was
    built from (a key moved or added since would be lost by the commit: refused), then
    `commit map`, then the read-back. Returns (the plan as re-made at the instant, the
    touched keys as read back); fills `facts` (switched_at, changed...).
    """
    session = client.session()
    session.open()
    try:
        if version is None:
            key = next(iter(plan.desired))
            plan = plan.single_at_instant(_session_lookup(session, plan.map_name, key))
            facts.update(previous=dict(plan.previous), runtime_entries=dict(plan.previous))
            if plan.action is None:
                return plan, dict(plan.previous)
        else:
            live_pairs = [(entry["key"], entry["value"])
                          for entry in parse_map_entries(session.run("show map", plan.map_name))]
            moved = moved_since_snapshot(plan.snapshot, live_pairs, plan.desired)
            if moved:
                details = "; ".join("%s was %s when the switch was armed, is %s now"
                                    % (shorten(key), quote(values["expected"]), quote(values["live"]))
                                    for key, values in list(moved.items())[:5])
                raise CompareAndSetError(
                    "refusing to switch %d keys of %s at the instant of the switch: %d keys moved since it was "
                    "armed, and the commit would undo that: %s%s; nothing was changed (the new version was not "
                    "committed)" % (len(plan.desired), plan.map_name, len(moved), details,
                                    "; ..." if len(moved) > 5 else ""),
                    refused_facts(plan.desired, entries_to_dict([dict(key=k, value=v) for k, v in live_pairs]),
                                  moved))
        verb, arguments = _write_line(plan, version)
        facts["switched_at"] = clock()
        try:
            session.run(verb, *arguments, expect_empty=True)
        except ReplyLostError as exc:
            session.close()
            lost = "HAProxy's reply to '%s' was lost (%s)" % (shorten(format_command(verb, *arguments)), exc)
            return plan, _after_lost_reply(client, plan, facts, lost)
        facts.update(runtime_changed=True, changed=True)
        try:
            return plan, _session_read_back(session, plan)
        except ReplyLostError:
            session.close()
            return plan, read_back(client, plan)
    finally:
        session.close()


def apply_plan(client, plan, prepared_file=None, switch_at=None, clock=None, sleep=None):
    """Apply `plan`; return facts for the result (switched_at, late_by, runtime_entries...).

    Order: stage (new map version; the new map file is `prepared_file`, written by the
    caller before), wait for `switch_at`, then on one connection re-read what is live and
    send the one switching command unless the compare-and-set no longer holds (judged at
    the instant, see _switch), read the touched keys back and fail if HAProxy does not
    serve the goal (the verify), then rename the map file in; if that fails, the runtime
    change is undone so runtime and disk agree. Raises MapChangeError (CompareAndSetError
    for a refusal) with the facts that are true when it fails.
    """
    facts = unchanged_facts(plan)
    clock = clock or time.time
    try:
        if plan.action is not None:
            version = None
            if plan.action[0] == "commit":
                # Everything but the commit happens before the agreed instant.
                version = stage_version(client, plan.map_name, plan.action[1])
            if switch_at is not None:
                # How early this node was ready: the fleet's lead, less what arming it took (0: late).
                facts["waited"] = round(max(0.0, switch_at - clock()), 3)
                wait_until(switch_at, clock, sleep)
            plan, live = _switch(client, plan, version, facts, clock)
            facts["changed_keys"] = plan.changed_keys
            if switch_at is not None and facts["switched_at"] is not None:
                facts["late_by"] = round(max(0.0, facts["switched_at"] - switch_at), 3)
            facts["runtime_entries"] = live
            wrong = [key for key in plan.desired if live.get(key) != plan.desired[key]]
            if wrong:
                key = wrong[0]
                hint = ""
                if len(plan.desired[key] or "") > COMMAND_BUDGET:
                    hint = " (HAProxy drops a command longer than tune.bufsize, 16384 bytes by default)"
                raise MapChangeError(
                    "HAProxy accepted the change of %d keys of %s but now serves %s for %s instead of %s%s; "
                    "the map file was not written" % (len(plan.desired), plan.map_name, quote(live.get(key)),
                                                      shorten(key), quote(plan.desired[key]), hint), facts)
        if prepared_file is not None:
            try:
                prepared_file.commit()
            except MapFileError as exc:
                cause = "writing the map file failed: %s" % exc
                if facts["runtime_changed"]:
                    _restore(client, plan, facts, cause)
                raise MapChangeError("%s; runtime was not changed" % cause, facts)
            facts.update(changed=True, disk_changed=True)
        facts["persisted"] = plan.new_disk_text is not None
        return facts
    except RuntimeAPIError as exc:
        if isinstance(exc, MapChangeError):
            # Raised below apply_plan (staging, a refusal) with its own facts: they win.
            exc.facts = dict(facts, **exc.facts)
            raise
        if facts["runtime_changed"]:
            raise MapChangeError("%s, after the change was sent; it could not be verified and the map "
                                 "file was not written" % exc, facts)
        # HAProxy answered the write with an error (or it was never sent): nothing switched.
        facts.update(switched_at=None, late_by=0.0)
        raise MapChangeError("%s; nothing was changed" % exc, facts)
    finally:
        if prepared_file is not None:
            prepared_file.discard()


__all__ = [
    "MapNotLoadedError",
    "InvalidMapKeyError",
    "CompareAndSetError",
    "MapChangeError",
    "MapPlan",
    "validate_key",
    "validate_value",
    "validate_request",
    "validate_lengths",
    "moved_since_snapshot",
    "refused_facts",
    "require_loaded_map",
    "runtime_entries",
    "runtime_values",
    "lookup_runtime_values",
    "parse_get_map_reply",
    "set_runtime_value",
    "delete_runtime_key",
    "payload_chunks",
    "prepare_version",
    "stage_version",
    "commit_version",
    "plan_single",
    "plan_bulk",
    "apply_plan",
    "read_back",
    "wait_until",
    "diff_maps",
    "disk_values",
    "plan_result",
    "read_map_info",
    "unchanged_facts",
    "applied_result",
    "render_values",
]


# -- haproxy_map_info ----------------------------------------------------


def read_map_info(client, map_name, disk_text, keys=None):
    """The info module's result: only `keys` when given (runtime via `get map`), else the whole map.

    One copy of each side: `entries` (runtime) and `disk_entries` (file, None when unreadable).
    """
    record, loaded = require_loaded_map(client, map_name)
    if keys is not None:
        looked_up = lookup_runtime_values(client, map_name, keys)
        runtime = {key: value for key, value in looked_up.items() if value is not None}
        missing_keys = [key for key, value in looked_up.items() if value is None]
        disk = map_text_lookup(disk_text, list(looked_up)) if disk_text is not None else None
    else:
        runtime, missing_keys = runtime_values(client, map_name), []
        disk = map_text_values(disk_text) if disk_text is not None else None
    drift_keys = diff_maps(runtime, disk) if disk is not None else []
    return dict(
        changed=False,
        map=map_name,
        map_id=record["id"],
        entries=runtime,
        disk_entries=disk,
        drift=bool(drift_keys) if disk is not None else None,
        drift_keys=drift_keys,
        missing_keys=missing_keys,
        loaded_maps=[loaded_map["name"] for loaded_map in loaded],
    )


# -- results --------------------------------------------------------------


def plan_result(plan, key=None):
    """The module's result as planned (what check mode reports); `key` for the single-key shape."""
    result = dict(
        changed=plan.changed,
        runtime_changed=plan.action is not None,
        disk_changed=plan.disk_changed,
        previous=dict(plan.previous),
        runtime_entries=dict(plan.desired),
        changed_keys=plan.changed_keys,
        switched_at=None,
        late_by=0.0,
        persisted=plan.new_disk_text is not None,
        refused=False,
    )
    if key is not None:
        before_disk = map_text_lookup(plan.disk_text, [key]).get(key) if plan.disk_text is not None else None
        result.update(key=key, previous_value=plan.previous[key], value=plan.desired[key],
                      previous_disk_value=before_disk, disk_value=disk_values(plan, [key])[key])
    elif plan.disk_text is not None:
        keys = sorted(plan.desired)
        before_disk = map_text_lookup(plan.disk_text, keys)
        result.update(previous_disk_entries=dict((name, before_disk.get(name)) for name in keys),
                      disk_entries=disk_values(plan, keys))
    return result


def applied_result(result, facts, key=None):
    """Merge what apply_plan found (or what was true when it failed) into the planned result.

    `previous` and `runtime_entries` in `facts` are what HAProxy held at the instant of the
    switch and after it (a refusal: what it holds instead), so previous_value and value
    follow them, never the plan's expectation. `warnings` go to the caller (module.warn).
    """
    result.update(dict((name, value) for name, value in facts.items() if name != "warnings"))
    if not facts.get("disk_changed"):
        result["disk_changed"] = False
        if "previous_disk_value" in result:
            result["disk_value"] = result["previous_disk_value"]
        elif "previous_disk_entries" in result:
            result["disk_entries"] = result["previous_disk_entries"]
    if key is not None:
        result["previous_value"] = (result.get("previous") or {}).get(key)
        result["value"] = (result.get("runtime_entries") or {}).get(key)
    return result
