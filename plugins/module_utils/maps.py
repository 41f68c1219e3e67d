# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Map operations built on the Runtime API client, shared by the map modules."""

from __future__ import annotations

from ansible_collections.bluegreen.haproxy.plugins.module_utils.parsers import (
    entries_to_dict,
    parse_map_entries,
    parse_map_list,
)
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIError


class MapNotLoadedError(RuntimeAPIError):
    pass


class InvalidMapKeyError(RuntimeAPIError, ValueError):
    pass


def validate_key(key):
    """Refuse keys that cannot round-trip through `show map` and the map file.

    A blank would split the key on disk and in `show map`; a leading `#` makes
    a comment on disk and an entry reference (`#0x...`) at runtime.
    """
    if key is None or key == "":
        raise InvalidMapKeyError("key must not be empty")
    if any(blank in key for blank in (" ", "\t")):
        raise InvalidMapKeyError("key %r contains a blank; map keys must be one word" % key)
    if key.startswith("#"):
        raise InvalidMapKeyError("key %r starts with '#', which HAProxy reads as a comment or an entry reference" % key)


def validate_value(value):
    """Values keep inner blanks, but the map file trims the ends, so refuse those."""
    if value is None or value == "":
        raise InvalidMapKeyError("value must not be empty")
    if value != value.strip():
        raise InvalidMapKeyError("value %r starts or ends with a blank, which the map file would lose" % value)


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


def runtime_entries(client, map_name):
    """Entries of a loaded map, in file order."""
    return parse_map_entries(client.run("show map", map_name))


def runtime_values(client, map_name):
    return entries_to_dict(runtime_entries(client, map_name))


def set_runtime_value(client, map_name, key, value, key_exists):
    """`set map` changes existing entries only, so a missing key is added instead."""
    if key_exists:
        client.run("set map", map_name, key, value, expect_empty=True)
    else:
        client.run("add map", map_name, key, value, expect_empty=True)


def delete_runtime_key(client, map_name, key):
    client.run("del map", map_name, key, expect_empty=True)


def diff_maps(runtime, disk):
    """Keys whose value differs between two {key: value} dicts, sorted."""
    return sorted(key for key in set(runtime) | set(disk) if runtime.get(key) != disk.get(key))


def render_values(values):
    """{key: value} as map-file text, for diffs."""
    return "".join("%s %s\n" % (key, value) for key, value in values.items())


__all__ = [
    "MapNotLoadedError",
    "InvalidMapKeyError",
    "validate_key",
    "validate_value",
    "require_loaded_map",
    "runtime_entries",
    "runtime_values",
    "set_runtime_value",
    "delete_runtime_key",
    "diff_maps",
    "render_values",
]
