# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parsers for Runtime API replies. No I/O, so unit tests feed them captured output."""

from __future__ import annotations

import csv
import re

_MAP_LIST_LINE = re.compile(r"^(?P<id>-?\d+) \((?P<name>.*?)\)(?: (?P<description>.*))?$")
_KEY_VALUE_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,]*)')

# A server passes the gate only with this exact status; anything else
# (`UP 1/3` means it is failing checks, `DOWN 1/2` that it is still rising).
HEALTHY_STATUS = "UP"
NO_CHECK_STATUS = "no check"
PASSING_CHECK_STATUSES = frozenset(["L4OK", "L6OK", "L7OK", "L7OKC"])


def _lines(reply):
    """Non-blank lines. Split on LF only: a map value may hold U+2028, U+0085, FF... which
    `str.splitlines()` would take for line ends."""
    return [line for line in reply.split("\n") if line.strip(" \t\r")]


def parse_map_list(reply):
    """`show map` -> list of {"id", "name", "description", "entry_count"}.

    `name` is the map's file (or virt@/opt@ name) exactly as HAProxy shows it:
    the string other map commands accept to name the map.
    """
    maps = []
    for line in _lines(reply):
        if line.startswith("#"):
            continue
        match = _MAP_LIST_LINE.match(line)
        if not match:
            continue
        description = match.group("description") or ""
        count = re.search(r"entry_cnt=(\d+)", description)
        maps.append(dict(
            id=int(match.group("id")),
            name=match.group("name"),
            description=description,
            entry_count=int(count.group(1)) if count else None,
        ))
    return maps


def parse_map_entries(reply):
    """`show map <map>` -> list of {"ref", "key", "value"} in file order.

    HAProxy prints keys and values unescaped, separated by one space; keys
    with spaces are ambiguous there, so the first word after the reference is
    the key and the rest of the line is the value.
    """
    entries = []
    for line in reply.split("\n"):
        if not line.startswith("0x"):
            continue
        parts = line.split(" ", 2)
        if len(parts) < 2:
            continue
        entries.append(dict(ref=parts[0], key=parts[1], value=parts[2] if len(parts) > 2 else ""))
    return entries


def entries_to_dict(entries):
    """First value per key, as HAProxy's lookups return the first of duplicates."""
    values = {}
    for entry in entries:
        values.setdefault(entry["key"], entry["value"])
    return values


def parse_get_map(reply):
    """`get map <map> <sample>` -> {"found": bool, "key": str|None, "value": str|None, ...}."""
    fields = {}
    for name, raw_value in _KEY_VALUE_PAIR.findall(first_nonempty(reply)):
        if raw_value.startswith('"') and raw_value.endswith('"'):
            raw_value = raw_value[1:-1]
        # `type` appears twice (pattern type, then sample type); keep the first.
        fields.setdefault(name, raw_value)
    return dict(
        found=fields.get("found") == "yes",
        key=fields.get("key"),
        value=fields.get("value"),
        match_type=fields.get("type"),
        case=fields.get("case"),
    )


def first_nonempty(reply):
    for line in reply.split("\n"):
        if line.strip(" \t\r"):
            return line
    return ""


def parse_show_stat(reply):
    """`show stat ...` CSV -> list of dicts keyed by header name.

    Columns differ between versions (2.6 has fewer than 3.0), so nothing here
    uses positions. Every data line ends with a trailing comma, which yields
    one empty extra column that is dropped.
    """
    lines = _lines(reply)
    if not lines or not lines[0].startswith("# "):
        return []
    header = next(csv.reader([lines[0][2:]]))
    rows = []
    for values in csv.reader(lines[1:]):
        row = dict(zip(header, values))
        row.pop("", None)
        rows.append(row)
    return rows


def _int_or_none(text):
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def server_from_stat_row(row):
    """The facts about one server row that the health gate and its report need."""
    return dict(
        name=row.get("svname"),
        backend=row.get("pxname"),
        status=row.get("status", ""),
        check_status=(row.get("check_status") or "").lstrip("* ") or None,
        check_running=(row.get("check_status") or "").startswith("* "),
        check_code=_int_or_none(row.get("check_code")),
        check_description=row.get("check_desc") or None,
        weight=_int_or_none(row.get("weight")),
        current_sessions=_int_or_none(row.get("scur")),
        address=row.get("addr") or None,
        last_change_seconds=_int_or_none(row.get("lastchg")),
        check_failures=_int_or_none(row.get("chkfail")),
    )


def server_rows(rows, backend=None):
    """Only server rows (type 2), optionally of one backend."""
    return [
        row for row in rows
        if row.get("type") == "2" and (backend is None or row.get("pxname") == backend)
    ]


def server_health(server, allow_no_check=False):
    """(healthy, reason) for one server as returned by server_from_stat_row()."""
    status = server["status"]
    if status == NO_CHECK_STATUS:
        if allow_no_check:
            return True, None
        return False, "no health check configured (status 'no check')"
    if status != HEALTHY_STATUS:
        return False, "status '%s'" % status
    if server["check_status"] and server["check_status"] not in PASSING_CHECK_STATUSES:
        return False, "last check %s" % server["check_status"]
    return True, None


def parse_backend_list(reply):
    """`show backend` -> list of backend names."""
    return [line.strip() for line in _lines(reply) if not line.startswith("#")]


# `show servers state`: srv_admin_state bits (src/server.h). Any maintenance bit means HAProxy
# sends the server no traffic: forced (set server/disable server), inherited from a tracked
# server, from the config (`disabled`), or from DNS resolution.
SERVER_ADMIN_MAINT_BITS = 0x01 | 0x02 | 0x04 | 0x20
SERVER_ADMIN_DRAIN_BITS = 0x08 | 0x10


def parse_servers_state(reply):
    """`show servers state [<backend>]` -> list of dicts keyed by header name (string values).

    The reply is a format version line (`1`), a `# be_id be_name srv_id ...` header and one
    space-separated row per server. Columns are looked up by name, never by position, so the
    2.6 and 3.0 column sets (and later ones that add columns) all work. A reply without the
    header (`Can't find backend.`) gives [].
    """
    lines = _lines(reply)
    header = None
    rows = []
    for line in lines:
        if header is None:
            if line.startswith("# "):
                header = line[2:].split()
            continue
        if line.startswith("#"):
            continue
        rows.append(dict(zip(header, line.split())))
    return rows


def _address_or_none(text):
    return None if text in (None, "", "-") else text


def server_from_state_row(row):
    """The facts about one `show servers state` row that the preflight needs.

    `address` is None while a server named by FQDN is not resolved; `port` 0 means the
    server has no port of its own (HAProxy uses the client's destination port).
    """
    admin_state = _int_or_none(row.get("srv_admin_state")) or 0
    return dict(
        name=row.get("srv_name"),
        backend=row.get("be_name"),
        address=_address_or_none(row.get("srv_addr")),
        port=_int_or_none(row.get("srv_port")),
        ssl=row.get("srv_use_ssl") == "1",
        fqdn=_address_or_none(row.get("srv_fqdn")),
        op_state=_int_or_none(row.get("srv_op_state")),
        admin_state=admin_state,
        maintenance=bool(admin_state & SERVER_ADMIN_MAINT_BITS),
        draining=bool(admin_state & SERVER_ADMIN_DRAIN_BITS),
    )


def parse_show_info(reply):
    """`show info` -> {"Name": "HAProxy", "Version": ..., "Pid": ...} (values as strings)."""
    info = {}
    for line in _lines(reply):
        name, separator, value = line.partition(":")
        if separator:
            info[name.strip()] = value.strip()
    return info


def parse_version(text):
    """'2.6.12-1+deb12u4' -> (2, 6, 12); None when no version number leads the text."""
    match = re.match(r"\s*(\d+)\.(\d+)(?:\.(\d+))?", text or "")
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


# The counters of a backend row (`show stat <backend> 2 -1`) that the traffic gate reads. The
# names are the same in 2.6 and 3.0 (positions are not), so they are looked up by header.
BACKEND_COUNTER_FIELDS = (
    "req_tot", "hrsp_1xx", "hrsp_2xx", "hrsp_3xx", "hrsp_4xx", "hrsp_5xx", "hrsp_other",
    "econ", "eresp", "srv_abrt", "cli_abrt", "wretr", "wredis",
)


def backend_counters(reply, backend):
    """The BACKEND row of `backend` in a `show stat` reply -> {counter: int or None}; None without that row.

    A cell is None when HAProxy leaves it empty (the HTTP counters of a TCP-mode backend).
    """
    for row in parse_show_stat(reply):
        if row.get("pxname") == backend and row.get("svname") == "BACKEND":
            return dict((name, _int_or_none(row.get(name))) for name in BACKEND_COUNTER_FIELDS)
    return None
