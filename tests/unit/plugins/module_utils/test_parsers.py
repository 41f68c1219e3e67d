# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Runtime API parsers, and the client's error detection, on real HAProxy replies.

Every reply comes from tests/unit/fixtures/haproxy-<version>/ (see the README there):
captured byte for byte from HAProxy 2.6 and 3.0 by tests/unit/fixtures/capture.py.
PIDs, pointers, ports and `lastchg` change between captures, so the tests check
their shape, never their value.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils import parsers, runtime_api
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import CommandError, RuntimeAPIClient, first_line

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "fixtures")
VERSIONS = ["2.6", "3.0"]
parametrize_version = pytest.mark.parametrize("version", VERSIONS)

CAPTURE_MAPS = "/tmp/bluegreen-capture/maps/"
EMPTY_MAP = CAPTURE_MAPS + "empty.map"
BLUEGREEN_MAP = CAPTURE_MAPS + "bluegreen.map"
# The map file of the capture (fixtures README): `active backend_blue`, `preview backend_green`.
BLUEGREEN_ENTRIES = [("active", "backend_blue"), ("preview", "backend_green")]
# `show map` ids are given out at parse time and differ between versions.
BLUEGREEN_MAP_ID = {"2.6": 3, "3.0": 5}

# backend_blue of show_stat_servers.txt: server -> (status, check_status), in reply order.
BLUE_SERVERS = [
    ("blue1", "UP", "L7OK"),
    ("blue_refused", "DOWN", "L4CON"),
    ("blue_503", "DOWN", "L7STS"),
    ("blue_maint", "MAINT", None),
    ("blue_drain", "DRAIN", "L7OK"),
    ("blue_nolb", "NOLB", "L7OK"),
    ("blue_nocheck", "no check", None),
    ("blue_falling", "UP 2/3", "L7STS"),
    ("blue_rising", "DOWN 1/3", "L7OK"),
]
BLUE_SERVER_NAMES = [name for name, status, check in BLUE_SERVERS]

# Column counts of `show stat` (the trailing `,` of the header is not a column).
STAT_COLUMN_COUNT = {"2.6": 128, "3.0": 205}


def fixture(version, name):
    """One captured reply, as raw text (newline="" keeps it byte for byte)."""
    with open(os.path.join(FIXTURES, "haproxy-" + version, name), encoding="utf-8", newline="") as handle:
        return handle.read()


def is_error_reply(reply):
    """What RuntimeAPIClient.run() treats as an error reply when expect_empty is off."""
    return first_line(reply).startswith(runtime_api._ERROR_PREFIXES)


def stat_servers(version, name="show_stat_servers.txt", backend=None):
    rows = parsers.parse_show_stat(fixture(version, name))
    return [parsers.server_from_stat_row(row) for row in parsers.server_rows(rows, backend)]


def major_minor(version):
    return tuple(int(part) for part in version.split("."))


class ReplayClient(RuntimeAPIClient):
    """RuntimeAPIClient whose raw() answers with a captured reply instead of a socket."""

    def __init__(self, reply):
        super(ReplayClient, self).__init__("/nonexistent/admin.sock")
        self.reply = reply
        self.lines = []

    def raw(self, line):
        self.lines.append(line)
        return self.reply


# -- show map (list) --------------------------------------------------------


@parametrize_version
def test_parse_map_list(version):
    maps = parsers.parse_map_list(fixture(version, "show_map_list.txt"))

    assert [(entry["id"], entry["name"], entry["entry_count"]) for entry in maps] == [
        (0, EMPTY_MAP, 0),
        (BLUEGREEN_MAP_ID[version], BLUEGREEN_MAP, 2),
    ]
    for entry in maps:
        assert entry["description"].startswith("pattern loaded from file '%s' used by map at file " % entry["name"])
        assert "curr_ver=0 next_ver=0" in entry["description"]


def test_map_list_ids_differ_between_versions_but_names_do_not():
    by_version = {version: parsers.parse_map_list(fixture(version, "show_map_list.txt")) for version in VERSIONS}

    assert [entry["id"] for entry in by_version["2.6"]] == [0, 3]
    assert [entry["id"] for entry in by_version["3.0"]] == [0, 5]
    assert [entry["name"] for entry in by_version["2.6"]] == [entry["name"] for entry in by_version["3.0"]]


@parametrize_version
def test_map_list_entry_count_matches_show_map(version):
    maps = {entry["name"]: entry for entry in parsers.parse_map_list(fixture(version, "show_map_list.txt"))}

    assert maps[BLUEGREEN_MAP]["entry_count"] == len(parsers.parse_map_entries(fixture(version, "show_map_entries.txt")))
    assert maps[EMPTY_MAP]["entry_count"] == len(parsers.parse_map_entries(fixture(version, "show_map_empty.txt")))


# -- show map <map> ---------------------------------------------------------


@parametrize_version
@pytest.mark.parametrize("name", ["show_map_entries.txt", "show_map_entries_after_commit.txt"])
def test_parse_map_entries(version, name):
    entries = parsers.parse_map_entries(fixture(version, name))

    assert [(entry["key"], entry["value"]) for entry in entries] == BLUEGREEN_ENTRIES
    refs = [entry["ref"] for entry in entries]
    assert all(ref.startswith("0x") and int(ref, 16) > 0 for ref in refs)
    assert len(set(refs)) == len(refs)
    assert parsers.entries_to_dict(entries) == dict(BLUEGREEN_ENTRIES)


@parametrize_version
def test_entries_to_dict_keeps_file_order(version):
    values = parsers.entries_to_dict(parsers.parse_map_entries(fixture(version, "show_map_entries.txt")))

    assert list(values) == ["active", "preview"]


@parametrize_version
def test_entries_to_dict_first_duplicate_wins(version):
    # `add map` does not check for duplicates and `get map` returns the first one
    # (haproxy-runtime-api.md section 3): add a second `active` to the real reply.
    reply = fixture(version, "show_map_entries.txt")
    first_ref = parsers.parse_map_entries(reply)[0]["ref"]
    duplicate = "0x%x active backend_green\n" % (int(first_ref, 16) + 0x1000)
    reply = reply.rstrip("\n") + "\n" + duplicate + "\n"

    entries = parsers.parse_map_entries(reply)

    assert [(entry["key"], entry["value"]) for entry in entries] == BLUEGREEN_ENTRIES + [("active", "backend_green")]
    assert parsers.entries_to_dict(entries) == {"active": "backend_blue", "preview": "backend_green"}


@parametrize_version
def test_parse_map_entries_empty_map(version):
    reply = fixture(version, "show_map_empty.txt")

    assert reply == "\n"
    assert parsers.parse_map_entries(reply) == []
    assert parsers.entries_to_dict(parsers.parse_map_entries(reply)) == {}


@parametrize_version
def test_parse_map_entries_ignores_error_reply(version):
    # The parser sees no entries in an error; telling it from an empty map is run()'s job.
    assert parsers.parse_map_entries(fixture(version, "show_map_unknown.txt")) == []


# -- get map ----------------------------------------------------------------


@parametrize_version
def test_parse_get_map_found(version):
    result = parsers.parse_get_map(fixture(version, "get_map_found.txt"))

    assert result == dict(found=True, key="active", value="backend_blue", match_type="str", case="sensitive")


@parametrize_version
def test_parse_get_map_found_agrees_with_show_map(version):
    values = parsers.entries_to_dict(parsers.parse_map_entries(fixture(version, "show_map_entries.txt")))
    result = parsers.parse_get_map(fixture(version, "get_map_found.txt"))

    assert values[result["key"]] == result["value"]


@parametrize_version
def test_parse_get_map_missing(version):
    result = parsers.parse_get_map(fixture(version, "get_map_missing.txt"))

    assert result == dict(found=False, key=None, value=None, match_type="str", case="sensitive")


# -- show stat --------------------------------------------------------------


@parametrize_version
@pytest.mark.parametrize("name", ["show_stat_servers.txt", "show_stat_all_up.txt", "show_stat_full.txt"])
def test_parse_show_stat_columns_by_name(version, name):
    reply = fixture(version, name)
    rows = parsers.parse_show_stat(reply)

    assert len(rows) == len([line for line in reply.splitlines() if line]) - 1
    for row in rows:
        assert len(row) == STAT_COLUMN_COUNT[version]
        assert "" not in row
        # Every row's `-` separator column holds "-": the whole row lines up with the header.
        assert row["-"] == "-"
        assert row["status"]
        assert "check_status" in row


def test_show_stat_headers_differ_between_versions():
    headers = {version: list(parsers.parse_show_stat(fixture(version, "show_stat_servers.txt"))[0]) for version in VERSIONS}
    old, new = headers["2.6"], headers["3.0"]

    assert len(old) == 128 and len(new) == 205
    assert set(old) != set(new)
    assert set(old) < set(new)
    assert {"srid", "sess_other", "h1sess", "h3req", "proto", "quic_sent_pkt", "h3_data"} <= set(new) - set(old)
    # The first 103 columns, pxname to agg_check_status, are the same; positions after them move.
    assert old[:103] == new[:103]
    assert old[102] == new[102] == "agg_check_status"
    assert old.index("-") == 103 and new.index("-") == 113
    assert old.index("ssl_sess") != new.index("ssl_sess")
    for column in ("pxname", "svname", "status", "check_status", "check_code", "check_desc", "type", "addr", "weight", "scur"):
        assert column in old and column in new


@parametrize_version
def test_parse_show_stat_servers(version):
    servers = stat_servers(version)

    assert [(server["name"], server["status"], server["check_status"]) for server in servers] == BLUE_SERVERS
    for server in servers:
        assert server["backend"] == "backend_blue"
        assert server["weight"] == 1
        assert server["current_sessions"] == 0
        assert server["check_running"] is False
        assert server["address"].startswith("127.0.0.1:")
        assert server["address"].rpartition(":")[2].isdigit()
        assert isinstance(server["last_change_seconds"], int)


@parametrize_version
def test_server_from_stat_row_check_details(version):
    servers = {server["name"]: server for server in stat_servers(version)}

    assert (servers["blue1"]["check_code"], servers["blue1"]["check_description"]) == (200, "Layer7 check passed")
    assert (servers["blue_503"]["check_code"], servers["blue_503"]["check_description"]) == (503, "Layer7 wrong status")
    assert (servers["blue_refused"]["check_code"], servers["blue_refused"]["check_description"]) == (None, "Layer4 connection problem")
    for name in ("blue_maint", "blue_nocheck"):
        assert servers[name]["check_status"] is None
        assert servers[name]["check_code"] is None
        assert servers[name]["check_description"] is None
    # no check: no check counters at all.
    assert servers["blue_nocheck"]["check_failures"] is None
    assert servers["blue_refused"]["check_failures"] >= 1


@parametrize_version
def test_parse_show_stat_all_up(version):
    servers = stat_servers(version, "show_stat_all_up.txt")

    assert [(server["backend"], server["name"], server["status"], server["check_status"]) for server in servers] == [
        ("backend_green", "green1", "UP", "L7OK"),
        ("backend_green", "green2", "UP", "L7OK"),
    ]
    assert all(parsers.server_health(server) == (True, None) for server in servers)


@parametrize_version
def test_server_rows_on_full_show_stat(version):
    rows = parsers.parse_show_stat(fixture(version, "show_stat_full.txt"))

    assert [(row["pxname"], row["svname"], row["type"]) for row in rows if row["type"] != "2"] == [
        ("http_in", "FRONTEND", "0"),
        ("backend_blue", "BACKEND", "1"),
        ("backend_green", "BACKEND", "1"),
    ]
    assert {row["svname"]: row["status"] for row in rows if row["type"] != "2"} == {"FRONTEND": "OPEN", "BACKEND": "UP"}
    assert [row["svname"] for row in parsers.server_rows(rows)] == BLUE_SERVER_NAMES + ["green1", "green2"]
    assert [row["svname"] for row in parsers.server_rows(rows, "backend_blue")] == BLUE_SERVER_NAMES
    assert [row["svname"] for row in parsers.server_rows(rows, "backend_green")] == ["green1", "green2"]
    assert parsers.server_rows(rows, "backend_nope") == []


@parametrize_version
def test_server_rows_on_filtered_show_stat(version):
    rows = parsers.parse_show_stat(fixture(version, "show_stat_servers.txt"))

    assert parsers.server_rows(rows) == rows
    assert parsers.server_rows(rows, "backend_blue") == rows
    assert parsers.server_rows(rows, "backend_green") == []


@parametrize_version
def test_parse_show_stat_error_reply(version):
    assert parsers.parse_show_stat(fixture(version, "show_stat_no_such_proxy.txt")) == []


# -- server_health ----------------------------------------------------------


@parametrize_version
@pytest.mark.parametrize("name,status,check_status", BLUE_SERVERS, ids=BLUE_SERVER_NAMES)
def test_server_health(version, name, status, check_status):
    server = {server["name"]: server for server in stat_servers(version)}[name]
    assert (server["status"], server["check_status"]) == (status, check_status)

    healthy, reason = parsers.server_health(server)

    if status == "UP":
        assert (healthy, reason) == (True, None)
    else:
        assert healthy is False
        assert status in reason
    if status == "no check":
        assert "no health check" in reason
        assert parsers.server_health(server, allow_no_check=True) == (True, None)
    else:
        assert parsers.server_health(server, allow_no_check=True) == (healthy, reason)


@parametrize_version
def test_server_health_passing_check_is_not_enough(version):
    servers = {server["name"]: server for server in stat_servers(version)}

    # Still rising: the last check passed, but HAProxy does not send it traffic yet.
    assert servers["blue_rising"]["check_status"] in parsers.PASSING_CHECK_STATUSES
    assert parsers.server_health(servers["blue_rising"]) == (False, "status 'DOWN 1/3'")
    # Falling: HAProxy still says UP (2/3) but the checks fail.
    assert parsers.server_health(servers["blue_falling"]) == (False, "status 'UP 2/3'")
    # Drain and NOLB pass their checks and take no new traffic.
    assert parsers.server_health(servers["blue_drain"]) == (False, "status 'DRAIN'")
    assert parsers.server_health(servers["blue_nolb"]) == (False, "status 'NOLB'")
    assert [name for name, server in servers.items() if parsers.server_health(server)[0]] == ["blue1"]


# -- show backend, show info, show version ---------------------------------


@parametrize_version
def test_parse_backend_list(version):
    assert parsers.parse_backend_list(fixture(version, "show_backend.txt")) == ["backend_blue", "backend_green"]


@parametrize_version
def test_parse_show_info(version):
    info = parsers.parse_show_info(fixture(version, "show_info.txt"))

    assert info["Name"] == "HAProxy"
    assert info["Version"] == fixture(version, "show_version.txt").strip()
    assert info["Version"].startswith(version + ".")
    assert info["Pid"].isdigit() and int(info["Pid"]) > 0
    assert info["node"] == "fixture-node"
    assert info["Stopping"] == "0"
    assert info["Build info"] == info["Version"]
    assert info["Uptime"].startswith("0d ")


def test_show_info_fields_differ_between_versions():
    old = parsers.parse_show_info(fixture("2.6", "show_info.txt"))
    new = parsers.parse_show_info(fixture("3.0", "show_info.txt"))

    assert "TotalSplicdedBytesOut" in old and "TotalSplicedBytesOut" not in old
    assert "TotalSplicedBytesOut" in new and "TotalSplicdedBytesOut" not in new
    added = {"TotalWarnings", "MaxconnReached", "BootTime_ms", "Niced_tasks", "CurrStreams", "CumStreams", "BlockedTrafficWarnings"}
    assert added <= set(new) - set(old)


@parametrize_version
def test_parse_version_of_captures(version):
    from_show_version = parsers.parse_version(fixture(version, "show_version.txt"))
    from_show_info = parsers.parse_version(parsers.parse_show_info(fixture(version, "show_info.txt"))["Version"])

    assert from_show_version == from_show_info
    assert from_show_version[:2] == major_minor(version)
    assert len(from_show_version) == 3


@pytest.mark.parametrize("text,expected", [
    ("2.6.12-1+deb12u4", (2, 6, 12)),
    ("3.0.11-1+deb13u5\n\n", (3, 0, 11)),
    ("  3.2", (3, 2, 0)),
    ("HAProxy", None),
    ("", None),
    (None, None),
])
def test_parse_version(text, expected):
    assert parsers.parse_version(text) == expected


# -- the client's error classification ------------------------------------

ERROR_REPLIES = ["show_map_unknown.txt", "show_stat_no_such_proxy.txt", "permission_denied.txt", "unknown_command.txt"]
EMPTY_REPLIES = ["set_map_ok.txt", "add_map_ok.txt", "del_map_ok.txt"]
REFUSED_WRITES = ["set_map_entry_not_found.txt", "del_map_not_found.txt"]
GOOD_REPLIES = [
    "show_map_list.txt", "show_map_entries.txt", "show_map_empty.txt", "get_map_found.txt", "get_map_missing.txt",
    "show_stat_servers.txt", "show_stat_all_up.txt", "show_stat_full.txt", "show_backend.txt", "show_info.txt",
    "show_version.txt",
]


@parametrize_version
@pytest.mark.parametrize("name", ERROR_REPLIES)
def test_error_replies_are_detected(version, name):
    reply = fixture(version, name)

    assert first_line(reply).startswith(runtime_api._ERROR_PREFIXES)
    assert is_error_reply(reply)


@parametrize_version
@pytest.mark.parametrize("name", GOOD_REPLIES)
def test_good_replies_are_not_errors(version, name):
    assert not is_error_reply(fixture(version, name))


@parametrize_version
@pytest.mark.parametrize("name", EMPTY_REPLIES)
def test_successful_writes_are_empty(version, name):
    reply = fixture(version, name)

    assert reply == "\n"
    assert reply.strip() == ""


@parametrize_version
@pytest.mark.parametrize("name,message", [
    ("set_map_entry_not_found.txt", "entry not found."),
    ("del_map_not_found.txt", "Key not found."),
])
def test_refused_writes_are_not_empty(version, name, message):
    reply = fixture(version, name)

    assert reply.strip() != ""
    assert first_line(reply) == message


@parametrize_version
@pytest.mark.parametrize("name", ERROR_REPLIES)
def test_run_raises_on_error_reply(version, name):
    reply = fixture(version, name)
    client = ReplayClient(reply)

    with pytest.raises(CommandError) as caught:
        client.run("show map", "/nonexistent/unknown.map")
    assert caught.value.reply == reply
    assert first_line(reply) in str(caught.value)


@parametrize_version
@pytest.mark.parametrize("name", GOOD_REPLIES)
def test_run_returns_good_reply(version, name):
    reply = fixture(version, name)

    assert ReplayClient(reply).run("show map") == reply


@parametrize_version
@pytest.mark.parametrize("name", EMPTY_REPLIES)
def test_run_expect_empty_accepts_empty_reply(version, name):
    client = ReplayClient(fixture(version, name))

    assert client.run("set map", BLUEGREEN_MAP, "active", "backend_blue", expect_empty=True) == "\n"
    assert client.lines == ["set map %s active backend_blue" % BLUEGREEN_MAP]


@parametrize_version
@pytest.mark.parametrize("name", REFUSED_WRITES)
def test_run_expect_empty_raises_on_refused_write(version, name):
    reply = fixture(version, name)
    client = ReplayClient(reply)

    with pytest.raises(CommandError) as caught:
        client.run("set map", BLUEGREEN_MAP, "no-such-key", "backend_green", expect_empty=True)
    assert first_line(reply) in str(caught.value)


# ---------------------------------------------------------------- show servers state (preflight)

# show_servers_state_tls.txt: backend_green's two apps plus a dynamic TLS server (`add server ... ssl`).
GREEN_STATE_PORTS = {"green1": 19406, "green2": 19407}


@parametrize_version
def test_parse_servers_state_by_header_name(version):
    rows = parsers.parse_servers_state(fixture(version, "show_servers_state_backend.txt"))
    assert [row["srv_name"] for row in rows] == ["green1", "green2"]
    header = fixture(version, "show_servers_state_backend.txt").splitlines()[1][2:].split()
    for row in rows:
        assert list(row) == header  # every column, named by the header
        assert {row["be_name"], row["srv_addr"], row["srv_use_ssl"]} == {"backend_green", "127.0.0.1", "0"}


@parametrize_version
def test_server_from_state_row_plain_and_tls(version):
    servers = [parsers.server_from_state_row(row)
               for row in parsers.parse_servers_state(fixture(version, "show_servers_state_tls.txt"))]
    facts = [(s["name"], s["address"], s["port"], s["ssl"], s["maintenance"]) for s in servers]
    assert facts == [
        ("green1", "127.0.0.1", GREEN_STATE_PORTS["green1"], False, False),
        ("green2", "127.0.0.1", GREEN_STATE_PORTS["green2"], False, False),
        ("green_tls", "127.0.0.1", GREEN_STATE_PORTS["green2"], True, False),
    ]
    assert all(s["backend"] == "backend_green" and s["op_state"] == 2 for s in servers)


@parametrize_version
def test_server_from_state_row_maintenance_and_drain(version):
    # A dynamic server starts in maintenance (admin state 1).
    tls = [parsers.server_from_state_row(row)
           for row in parsers.parse_servers_state(fixture(version, "show_servers_state_tls_maint.txt"))][-1]
    assert (tls["name"], tls["admin_state"], tls["maintenance"], tls["ssl"]) == ("green_tls", 1, True, True)
    # show_servers_state.txt: blue_maint has `check disabled` (config maint 0x04 | forced 0x01 = 5),
    # blue_drain is in drain (0x08): drain is not maintenance.
    servers = {s["name"]: s for s in (parsers.server_from_state_row(row) for row in
                                      parsers.parse_servers_state(fixture(version, "show_servers_state.txt")))}
    assert (servers["blue_maint"]["admin_state"], servers["blue_maint"]["maintenance"]) == (5, True)
    assert (servers["blue_drain"]["maintenance"], servers["blue_drain"]["draining"]) == (False, True)
    assert [name for name, s in servers.items() if s["maintenance"]] == ["blue_maint"]


@parametrize_version
def test_parse_servers_state_unknown_backend(version):
    reply = fixture(version, "show_servers_state_no_such_backend.txt")
    assert first_line(reply) == "Can't find backend."
    assert parsers.parse_servers_state(reply) == []


def test_servers_state_columns_are_looked_up_by_name():
    # A later version may add or move columns: only the names matter.
    reply = "1\n# srv_name be_name srv_port srv_addr srv_use_ssl srv_admin_state extra\nweb1 be 8443 10.0.0.5 1 0 x\n\n"
    server = parsers.server_from_state_row(parsers.parse_servers_state(reply)[0])
    assert (server["name"], server["address"], server["port"], server["ssl"]) == ("web1", "10.0.0.5", 8443, True)


def test_server_from_state_row_unresolved_address():
    row = {"srv_name": "web1", "srv_addr": "-", "srv_port": "0", "srv_fqdn": "web1.internal", "srv_admin_state": "32"}
    server = parsers.server_from_state_row(row)
    assert (server["address"], server["port"], server["fqdn"], server["maintenance"]) == (None, 0, "web1.internal", True)


# -- backend counters (traffic gate): tests/unit/fixtures/haproxy-<version>/traffic/ -----------------
# backend_green_traffic.csv: after 40 x 200, 10 x 404 and 10 x 500 through the frontend;
# backend_refused.csv: after 5 requests to a server that refuses (HAProxy answered 503, retries 3).

@parametrize_version
def test_backend_counters_after_known_traffic(version):
    counters = parsers.backend_counters(fixture(version, "traffic/backend_green_traffic.csv"), "backend_green")
    assert set(counters) == set(parsers.BACKEND_COUNTER_FIELDS)
    assert counters == dict(req_tot=60, hrsp_1xx=0, hrsp_2xx=40, hrsp_3xx=0, hrsp_4xx=10, hrsp_5xx=10, hrsp_other=0,
                            econ=0, eresp=0, srv_abrt=0, cli_abrt=0, wretr=0, wredis=0)
    idle = parsers.backend_counters(fixture(version, "traffic/backend_green_idle.csv"), "backend_green")
    assert idle == dict((name, 0) for name in parsers.BACKEND_COUNTER_FIELDS)


@parametrize_version
def test_backend_counters_refused_connections_are_5xx_and_econ(version):
    counters = parsers.backend_counters(fixture(version, "traffic/backend_refused.csv"), "backend_refused")
    # HAProxy's own 503 is in hrsp_5xx, and econ counts the same requests again.
    assert (counters["req_tot"], counters["hrsp_5xx"], counters["econ"], counters["wretr"]) == (5, 5, 5, 15)


@parametrize_version
def test_backend_counters_tcp_backend_has_no_http_counters(version):
    counters = parsers.backend_counters(fixture(version, "traffic/backend_tcp.csv"), "backend_tcp")
    assert counters["hrsp_5xx"] is None and counters["req_tot"] is None
    assert counters["econ"] == 0


@parametrize_version
def test_backend_counters_other_rows_and_backends(version):
    # show_stat_full.txt has frontend, backend and server rows: only the BACKEND row of that backend counts.
    full = fixture(version, "show_stat_full.txt")
    assert parsers.backend_counters(full, "backend_green") is not None
    assert parsers.backend_counters(full, "backend_nope") is None
    assert parsers.backend_counters(fixture(version, "traffic/no_such_proxy.txt"), "backend_green") is None
    # A server row is never taken for the backend's.
    assert parsers.backend_counters(fixture(version, "show_stat_all_up.txt"), "backend_green") is None


def test_backend_counters_by_header_name():
    reply = "# pxname,svname,hrsp_5xx,extra,hrsp_2xx,\nbe,BACKEND,3,x,7,\nbe,s1,3,x,7,\n\n"
    counters = parsers.backend_counters(reply, "be")
    assert (counters["hrsp_5xx"], counters["hrsp_2xx"], counters["econ"]) == (3, 7, None)


# -- values holding Unicode line separators (issue 13, finding 8) -----------

ODD_VALUES = ["backend\u2028green", "backend\x85green", "a\u2029b\x0cc\x0bd\x1ce\x1df\x1eg"]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_show_map_value_with_unicode_line_separators_is_one_entry(value):
    reply = "0x55d0 active %s\n0x55e0 other x\n\n" % value
    assert parsers.parse_map_entries(reply) == [
        dict(ref="0x55d0", key="active", value=value), dict(ref="0x55e0", key="other", value="x")]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_get_map_value_with_unicode_line_separators_is_whole(value):
    reply = 'type=str, case=sensitive, found=yes, idx=tree, key="active", value="%s", type="str"\n\n' % value
    assert parsers.parse_get_map(reply)["value"] == value
    assert first_line(reply).endswith('value="%s", type="str"' % value)


def test_show_info_and_backend_lists_split_on_lf_only():
    assert parsers.parse_show_info("Name: HAProxy\nNode: a\u2028b\n\n")["Node"] == "a\u2028b"
    assert parsers.parse_backend_list("# name\nbe_blue\nbe\x85green\n\n") == ["be_blue", "be\x85green"]
