"""haproxy_map and haproxy_map_info against a real HAProxy routing real releases."""

from __future__ import annotations

import os
import stat

import pytest

OTHER_ENTRIES = """\
# bluegreen switch: key -> live backend
# owned by the release process, do not edit by hand
active backend_blue
legacy\tbackend_blue

# a trailing comment
"""


def switch(env, value, **extra):
    args = dict(socket=env.socket, map=env.map_path, key="active", value=value)
    args.update(extra)
    return args


def runtime_snapshot(env):
    return env.runtime("show map %s" % env.map_path)


def test_switch_moves_traffic_then_rerun_is_idempotent(haproxy_env, run_module):
    assert haproxy_env.get()[1] == "version=blue\n"

    result = run_module("haproxy_map", switch(haproxy_env, "backend_green"))

    assert result["changed"] is True
    assert result["previous_value"] == "backend_blue"
    assert result["value"] == "backend_green"
    assert result["disk_value"] == "backend_blue", "persist defaults to false"
    assert haproxy_env.map_value() == "backend_green"
    assert haproxy_env.get()[1] == "version=green\n"
    assert "active backend_blue" in haproxy_env.disk_text()

    again = run_module("haproxy_map", switch(haproxy_env, "backend_green"))
    assert again["changed"] is False
    assert again["runtime_changed"] is False
    assert haproxy_env.map_value() == "backend_green"


def test_compare_and_set_refuses_when_someone_else_moved_it(haproxy_env, run_module):
    haproxy_env.runtime("set map %s active backend_canary" % haproxy_env.map_path)
    before = runtime_snapshot(haproxy_env)

    result = run_module("haproxy_map", switch(haproxy_env, "backend_green", expected_value="backend_blue"))

    assert result.get("failed") is True
    assert "expected backend_blue" in result["msg"]
    assert "'backend_canary'" in result["msg"]
    assert runtime_snapshot(haproxy_env) == before


def test_compare_and_set_switches_when_expected_matches(haproxy_env, run_module):
    result = run_module("haproxy_map", switch(haproxy_env, "backend_green", expected_value="backend_blue"))
    assert result["changed"] is True
    assert haproxy_env.map_value() == "backend_green"
    # The re-run of the same compare-and-set finds the goal reached and is not an error.
    again = run_module("haproxy_map", switch(haproxy_env, "backend_green", expected_value="backend_blue"))
    assert again.get("failed") is not True and again["changed"] is False


def test_check_mode_predicts_and_changes_nothing(haproxy_env, run_module):
    disk_before = haproxy_env.disk_text()

    result = run_module("haproxy_map", switch(haproxy_env, "backend_green", persist=True), check=True, diff=True)

    assert result["changed"] is True
    assert result["value"] == "backend_green"
    assert result["disk_value"] == "backend_green"
    runtime_diff, disk_diff = result["diff"]
    assert runtime_diff["before"] == "active backend_blue\n"
    assert runtime_diff["after"] == "active backend_green\n"
    assert "active backend_green" in disk_diff["after"]
    assert haproxy_env.map_value() == "backend_blue"
    assert haproxy_env.disk_text() == disk_before


def test_persist_keeps_comments_other_entries_and_mode_and_survives_reload(haproxy_factory, run_module):
    env = haproxy_factory()
    with open(env.map_path, "w") as handle:
        handle.write(OTHER_ENTRIES)
    os.chmod(env.map_path, 0o640)
    env.reload()
    env.wait_all_up()

    result = run_module("haproxy_map", switch(env, "backend_green", persist=True, backup=True), diff=True)

    assert result["changed"] is True and result["disk_changed"] is True
    assert env.disk_text() == OTHER_ENTRIES.replace("active backend_blue", "active backend_green")
    assert stat.S_IMODE(os.stat(env.map_path).st_mode) == 0o640
    with open(result["backup_file"]) as handle:
        assert handle.read() == OTHER_ENTRIES
    leftovers = [name for name in os.listdir(os.path.dirname(env.map_path)) if name.startswith(".")]
    assert leftovers == [], "no temporary file may be left behind"

    env.reload()
    assert env.map_value() == "backend_green"
    assert env.get()[1] == "version=green\n"


def test_persist_later_writes_disk_when_runtime_already_switched(haproxy_env, run_module):
    run_module("haproxy_map", switch(haproxy_env, "backend_green"))
    result = run_module("haproxy_map", switch(haproxy_env, "backend_green", persist=True))
    assert result["changed"] is True
    assert result["runtime_changed"] is False and result["disk_changed"] is True
    assert "active backend_green" in haproxy_env.disk_text()


def test_missing_key_is_added_and_absent_removes_it(haproxy_env, run_module):
    args = dict(socket=haproxy_env.socket, map=haproxy_env.map_path, key="canary", value="backend_green",
                persist=True)
    added = run_module("haproxy_map", args)
    assert added["changed"] is True and added["previous_value"] is None
    assert haproxy_env.map_value("canary") == "backend_green"
    assert "canary backend_green" in haproxy_env.disk_text()

    removed = run_module("haproxy_map", dict(args, state="absent", value=None))
    assert removed["changed"] is True
    assert haproxy_env.map_value("canary") is None
    assert "canary" not in haproxy_env.disk_text()
    assert haproxy_env.map_value() == "backend_blue"


@pytest.mark.parametrize("value", [
    "backend_green;clear map {map}",
    "backend_green clear",
    "backend_green<<",
    "backend_green\\;del map {map} active",
    "#backend;green\tx",
])
def test_injection_attempt_runs_no_second_command(haproxy_env, run_module, value):
    value = value.format(map=haproxy_env.map_path)
    run_module("haproxy_map", dict(socket=haproxy_env.socket, map=haproxy_env.map_path, key="probe",
                                   value="before"))

    result = run_module("haproxy_map", dict(socket=haproxy_env.socket, map=haproxy_env.map_path,
                                            key="probe", value=value))

    assert result["changed"] is True
    # The whole text is stored as one value; no other command touched the map.
    assert haproxy_env.map_value("probe") == value
    assert haproxy_env.map_value("active") == "backend_blue"
    assert haproxy_env.get()[1] == "version=blue\n"


@pytest.mark.parametrize("option,text,complaint", [
    ("value", "backend_green\nset map {map} active backend_blue", "LF"),
    ("value", "backend_green\r", "CR"),
    ("value", "backend_\x00green", "NUL"),
    ("key", "active\nclear", "LF"),
    ("key", "two words", "blank"),
    ("key", "#0x1234", "'#'"),
    ("expected_value", "backend_blue\nclear map {map}", "LF"),
])
def test_unsafe_input_fails_clearly_and_changes_nothing(haproxy_env, run_module, option, text, complaint):
    before = runtime_snapshot(haproxy_env)
    disk_before = haproxy_env.disk_text()
    args = switch(haproxy_env, "backend_green", persist=True)
    args[option] = text.format(map=haproxy_env.map_path)

    result = run_module("haproxy_map", args)

    assert result.get("failed") is True
    assert result["msg"].startswith("invalid %s:" % option)
    assert complaint in result["msg"]
    assert runtime_snapshot(haproxy_env) == before
    assert haproxy_env.disk_text() == disk_before


def test_map_not_loaded_lists_loaded_maps(haproxy_env, run_module):
    result = run_module("haproxy_map", dict(socket=haproxy_env.socket, map="/etc/haproxy/maps/nope.map",
                                            key="active", value="backend_green"))
    assert result.get("failed") is True
    assert "/etc/haproxy/maps/nope.map is not loaded" in result["msg"]
    assert haproxy_env.map_path in result["msg"]


def test_socket_errors_name_the_socket(haproxy_env, run_module, tmp_path):
    missing = str(tmp_path / "missing.sock")
    regular = tmp_path / "regular-file"
    regular.write_text("")
    closed_port = "ipv4@127.0.0.1:1"
    for address, words in ((missing, "does not exist"), (str(regular), "not a unix socket"),
                           (closed_port, "connection refused")):
        result = run_module("haproxy_map", dict(switch(haproxy_env, "backend_green"), socket=address))
        assert result.get("failed") is True, address
        assert words in result["msg"] and address in result["msg"], result["msg"]
        assert "Traceback" not in result.get("module_stderr", "")
    assert haproxy_env.map_value() == "backend_blue"


def test_tcp_socket_switches_too(haproxy_env, run_module):
    result = run_module("haproxy_map", switch(haproxy_env, "backend_green", socket=haproxy_env.tcp_socket))
    assert result["changed"] is True
    assert haproxy_env.get()[1] == "version=green\n"


def test_map_info_reports_drift_until_persisted(haproxy_env, run_module):
    info_args = dict(socket=haproxy_env.socket, map=haproxy_env.map_path)
    clean = run_module("haproxy_map_info", info_args)
    assert clean["drift"] is False and clean["entries"] == {"active": "backend_blue"}
    assert clean["loaded_maps"] == [haproxy_env.map_path]

    run_module("haproxy_map", switch(haproxy_env, "backend_green"))
    drifted = run_module("haproxy_map_info", info_args)
    assert drifted["changed"] is False
    assert drifted["drift"] is True and drifted["drift_keys"] == ["active"]
    assert drifted["entries"]["active"] == "backend_green"
    assert drifted["disk_entries"]["active"] == "backend_blue"

    run_module("haproxy_map", switch(haproxy_env, "backend_green", persist=True))
    assert run_module("haproxy_map_info", info_args)["drift"] is False
