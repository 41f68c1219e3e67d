"""haproxy_map and haproxy_map_info against a real HAProxy routing real releases."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

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


# -- bulk, switch_at, persist safety (issues 7 and 8) ----------------------

import threading  # noqa: E402
import time  # noqa: E402

from lab import runtime_command, wait_for  # noqa: E402

BULK_PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: switch
      bluegreen.haproxy.haproxy_map:
        socket: "{{ socket }}"
        map: "{{ map_name }}"
        key: "{{ key | default(omit) }}"
        value: "{{ value | default(omit) }}"
        entries: "{{ entries | default(omit) }}"
        persist: "{{ persist | default(false) }}"
"""


def run_switch(run_playbook, tmp_path, env, **variables):
    """One module run through ansible-playbook (10,000 entries do not fit one command-line argument)."""
    playbook = tmp_path / "switch.yml"
    playbook.write_text(BULK_PLAYBOOK)
    started = time.monotonic()
    returncode, report = run_playbook(str(playbook), dict(dict(socket=env.socket, map_name=env.map_path), **variables))
    elapsed = time.monotonic() - started
    return report["plays"][0]["tasks"][0]["hosts"]["localhost"], elapsed


def big_map(env, count, value):
    with open(env.map_path, "w") as handle:
        handle.write("# switch\nactive backend_blue\n")
        handle.writelines("svc%05d.example.com %s\n" % (index, value) for index in range(count))
    env.reload()


class MapReader(threading.Thread):
    """Polls `show map` as fast as it can and classifies every snapshot of the svc keys."""

    def __init__(self, env, count):
        super(MapReader, self).__init__(daemon=True)
        self.env, self.count = env, count
        self.stop_event = threading.Event()
        self.snapshots = {"old": 0, "new": 0, "cut": 0}
        self.mixed = []

    def run(self):
        while not self.stop_event.is_set():
            reply = runtime_command(self.env.socket, "show map %s" % self.env.map_path, timeout=10)
            values = [line.split(" ", 2)[2] for line in reply.splitlines() if " svc" in line]
            green = values.count("backend_green")
            if 0 < green < len(values):
                self.mixed.append((len(values), green))
            elif len(values) < self.count:
                # `show map` is itself not atomic: a commit during the dump ends it early
                # (the old version is freed). Such a dump is cut, never mixed.
                self.snapshots["cut"] += 1
            else:
                self.snapshots["new" if green else "old"] += 1


def test_bulk_switch_of_10000_keys_is_atomic_for_a_reader_and_costs_about_one_key(
        haproxy_env, run_playbook, tmp_path):
    count = 10000
    big_map(haproxy_env, count, "backend_blue")

    single, single_seconds = run_switch(run_playbook, tmp_path, haproxy_env, key="svc00000.example.com",
                                        value="backend_blue_again")
    assert single.get("failed") is not True and single["changed"] is True, single.get("msg")
    runtime_command(haproxy_env.socket, "set map %s svc00000.example.com backend_blue" % haproxy_env.map_path)

    reader = MapReader(haproxy_env, count)
    reader.start()
    wait_for(lambda: reader.snapshots["old"] >= 3, what="the reader to see the old map")
    entries = {"svc%05d.example.com" % index: "backend_green" for index in range(count)}
    result, watched_seconds = run_switch(run_playbook, tmp_path, haproxy_env, entries=entries)
    wait_for(lambda: reader.snapshots["new"] >= 3, what="the reader to see the new map")
    reader.stop_event.set()
    reader.join(timeout=30)

    assert result.get("failed") is not True, result.get("msg")
    assert reader.mixed == [], "a reader saw a half-switched map: %s" % reader.mixed[:5]
    assert result["changed"] is True and len(result["changed_keys"]) == count
    assert result["runtime_entries"] == entries
    assert isinstance(result["switched_at"], float)
    assert haproxy_env.map_value("active") == "backend_blue", "untouched entries are kept"
    assert haproxy_env.get()[1] == "version=blue\n"

    # The cost, measured without the reader (it competes for the CPU): switch every key back.
    back, bulk_seconds = run_switch(run_playbook, tmp_path, haproxy_env,
                                    entries={key: "backend_blue" for key in entries})
    assert back.get("failed") is not True and len(back["changed_keys"]) == count, back.get("msg")
    print("\nsingle key: %.2fs per module run; %d keys in one run: %.2fs (ratio %.2f); with a reader polling "
          "show map: %.2fs; reader snapshots %s"
          % (single_seconds, count, bulk_seconds, bulk_seconds / single_seconds, watched_seconds, reader.snapshots))
    # Generous: ~1x plus a second or two on a loaded machine; a per-key loop would be minutes.
    assert bulk_seconds < 2 * single_seconds + 5, (single_seconds, bulk_seconds)


def test_bulk_switch_moves_traffic_and_persists_crlf_file_atomically(haproxy_factory, run_playbook, tmp_path):
    env = haproxy_factory()
    with open(env.map_path, "wb") as handle:
        handle.write(b"# switch\r\nactive backend_blue\r\nother backend_blue\r\n")
    env.reload()
    env.wait_all_up()

    result, _seconds = run_switch(run_playbook, tmp_path, env, persist=True,
                                  entries={"active": "backend_green", "added": "backend_green"})

    assert result.get("failed") is not True, result.get("msg")
    assert result["persisted"] is True and result["disk_changed"] is True
    with open(env.map_path, "rb") as handle:
        assert handle.read() == b"# switch\r\nactive backend_green\r\nother backend_blue\r\nadded backend_green\r\n"
    assert env.get()[1] == "version=green\n"
    env.reload()
    assert env.map_value("active") == "backend_green", "HAProxy reads the CRLF file back after a reload"
    assert env.get()[1] == "version=green\n"

    inode = os.stat(env.map_path).st_ino
    again, _seconds = run_switch(run_playbook, tmp_path, env, persist=True, entries={"active": "backend_green"})
    assert again["changed"] is False and again["switched_at"] is None
    assert os.stat(env.map_path).st_ino == inode, "a value already live and on disk writes nothing"


def chattr(flag, path):
    subprocess.run(["chattr", flag, path], check=True)


@pytest.mark.parametrize("immutable", ["directory", "file"])
def test_map_file_that_cannot_be_replaced_leaves_runtime_unchanged(haproxy_env, run_module, immutable):
    """Directory: refused before runtime changes. File: the rename fails after, runtime is put back."""
    if os.geteuid() != 0 or not shutil.which("chattr"):
        pytest.skip("needs root and chattr to make the map file or its directory immutable")
    target = os.path.dirname(haproxy_env.map_path) if immutable == "directory" else haproxy_env.map_path
    before = runtime_snapshot(haproxy_env)
    disk_before = haproxy_env.disk_text()
    chattr("+i", target)
    try:
        result = run_module("haproxy_map", switch(haproxy_env, "backend_green", persist=True))
    finally:
        chattr("-i", target)
    assert result.get("failed") is True
    assert runtime_snapshot(haproxy_env) == before
    assert haproxy_env.map_value() == "backend_blue" and haproxy_env.get()[1] == "version=blue\n"
    assert haproxy_env.disk_text() == disk_before
    if immutable == "directory":
        assert "cannot create a file in" in result["msg"] and "nothing was changed" in result["msg"]
    else:
        assert "cannot replace map file" in result["msg"] and "runtime change was undone" in result["msg"]
    assert result["runtime_entries"] == {"active": "backend_blue"} and result["changed"] is False


def test_rejected_100kb_value_gives_a_short_message(haproxy_env, run_module):
    before = runtime_snapshot(haproxy_env)
    result = run_module("haproxy_map", switch(haproxy_env, "v" * 100000))
    assert result.get("failed") is True
    print("\nmessage (%d characters): %s" % (len(result["msg"]), result["msg"]))
    assert len(result["msg"]) < 400 and "tune.bufsize" in result["msg"]
    assert runtime_snapshot(haproxy_env) == before


def test_switch_at_waits_for_the_instant(haproxy_env, run_module):
    instant = time.time() + 12
    result = run_module("haproxy_map", switch(haproxy_env, "backend_green", switch_at=instant))
    assert result.get("failed") is not True, result.get("msg")
    print("\nswitch_at %.3f switched_at %.3f late_by %s" % (instant, result["switched_at"], result["late_by"]))
    assert result["switched_at"] >= instant
    if result["late_by"] == 0.0:  # the module started before the instant (else the machine was too slow)
        assert result["switched_at"] - instant < 0.5
    assert haproxy_env.map_value() == "backend_green"


# -- truth under races (issue 13) ------------------------------------------

import json  # noqa: E402

from lab import HAPROXY  # noqa: E402


def arm_switch(run_module, tmp_path, env, args, hand, attempts=3):
    """Run haproxy_map with switch_at ahead in a thread, let `hand()` move the map while it waits
    for the instant, and return the module's result.

    The module records the phase `switching` in its release lock after its reads and staging and
    before it waits (haproxy_map's release_lock), so the lock file says when the hand may act
    "during the lead". The lead is measured, not guessed: a few times what one module run takes on
    this machine now; when the module still reached its wait after the instant (a loaded machine),
    the map is put back and the switch armed again with twice the lead.
    """
    started = time.monotonic()
    run_module("haproxy_map_info", dict(socket=env.socket, map=env.map_path))
    lead = max(4.0, 3 * (time.monotonic() - started) + 2)
    lock_path = tmp_path / "switch.lock"
    for _attempt in range(attempts):
        lock_path.write_text(json.dumps({"owner": "run-1", "phase": "precheck"}))
        switch_at = time.time() + lead
        armed = dict(args, switch_at=switch_at,
                     release_lock=dict(path=str(lock_path), owner="run-1", phase="switching"))
        outcome = {}
        thread = threading.Thread(target=lambda: outcome.update(result=run_module("haproxy_map", armed)), daemon=True)
        thread.start()
        wait_for(lambda: json.loads(lock_path.read_text()).get("phase") == "switching" or not thread.is_alive(),
                 timeout=lead + 120, what="the armed switch to wait for its instant")
        if time.time() < switch_at - 0.5:
            hand()
            assert time.time() < switch_at, "the hand's change came after the instant"
            thread.join(timeout=lead + 120)
            return outcome["result"]
        # Too late to act during the lead: undo whatever the switch did and arm it again.
        thread.join(timeout=lead + 120)
        runtime_command(env.socket, "set map %s active backend_blue" % env.map_path)
        lead *= 2
    pytest.fail("the module never reached its wait before the instant (machine too loaded)")


def test_armed_switch_refuses_a_key_moved_by_hand_during_the_lead(haproxy_env, run_module, tmp_path):
    result = arm_switch(run_module, tmp_path, haproxy_env,
                        switch(haproxy_env, "backend_green", expected_value="backend_blue"),
                        lambda: runtime_command(haproxy_env.socket,
                                                "set map %s active backend_canary" % haproxy_env.map_path))

    assert result.get("failed") is True, result
    message = result["msg"]
    assert "its live value is 'backend_canary', expected backend_blue" in message, message
    assert "at the instant of the switch" in message and "nothing was changed" in message
    assert haproxy_env.map_value() == "backend_canary", "the hand's value is still live"
    assert result["refused"] is True and result["changed"] is False and result["switched_at"] is None
    assert result["previous_value"] == result["value"] == "backend_canary"
    assert result["runtime_entries"] == {"active": "backend_canary"}


def test_armed_bulk_switch_refuses_a_key_added_by_hand_during_the_lead(haproxy_env, run_module, tmp_path):
    args = dict(socket=haproxy_env.socket, map=haproxy_env.map_path, entries={"active": "backend_green"},
                expected_entries={"active": "backend_blue"})
    result = arm_switch(run_module, tmp_path, haproxy_env, args,
                        lambda: runtime_command(haproxy_env.socket,
                                                "add map %s hand.example.com backend_hand" % haproxy_env.map_path))

    assert result.get("failed") is True, result
    message = result["msg"]
    assert "hand.example.com was absent when the switch was armed, is 'backend_hand' now" in message, message
    assert "nothing was changed (the new version was not committed)" in message
    assert haproxy_env.map_value("hand.example.com") == "backend_hand", "the commit did not delete the hand's key"
    assert haproxy_env.map_value() == "backend_blue" and haproxy_env.get()[1] == "version=blue\n"
    assert result["refused"] is True and result["conflicts"] == {
        "hand.example.com": {"expected": None, "live": "backend_hand"}}
    assert result["runtime_entries"] == {"active": "backend_blue"}


@pytest.mark.parametrize("value", ["backend\u2028green", "backend\x85green"], ids=["U+2028", "U+0085"])
def test_value_with_a_unicode_line_separator_round_trips(haproxy_env, run_module, value):
    result = run_module("haproxy_map", dict(socket=haproxy_env.socket, map=haproxy_env.map_path, key="probe",
                                            value=value))
    assert result.get("failed") is not True and result["value"] == value, result
    info = run_module("haproxy_map_info", dict(socket=haproxy_env.socket, map=haproxy_env.map_path,
                                               keys=["probe"]))
    assert info["entries"] == {"probe": value}
    everything = run_module("haproxy_map_info", dict(socket=haproxy_env.socket, map=haproxy_env.map_path))
    assert everything["entries"]["probe"] == value
    again = run_module("haproxy_map", dict(socket=haproxy_env.socket, map=haproxy_env.map_path, key="probe",
                                           value=value))
    assert again["changed"] is False


# A socket below level admin. HAProxy 2.6 lets it change maps; the collection must refuse it.
LEVEL_CONFIG = """\
global
    stats socket {directory}/admin.sock mode 600 level admin
    stats socket {directory}/user.sock mode 600 level user
    stats socket {directory}/operator.sock mode 600 level operator
    stats timeout 30s

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend fe_main
    bind unix@{directory}/frontend.sock
    use_backend %[str(active),map({directory}/bluegreen.map,backend_blue)]

backend backend_blue
    server blue1 127.0.0.1:9 disabled

backend backend_green
    server green1 127.0.0.1:9 disabled
"""


@pytest.fixture
def level_haproxy(tmp_path):
    """An HAProxy (no ports) with an admin, an operator and a user stats socket; yields its directory."""
    directory = str(tmp_path)
    with open(os.path.join(directory, "bluegreen.map"), "w") as handle:
        handle.write("active backend_blue\n")
    config = os.path.join(directory, "haproxy.cfg")
    with open(config, "w") as handle:
        handle.write(LEVEL_CONFIG.format(directory=directory))
    process = subprocess.Popen([HAPROXY, "-W", "-db", "-f", config], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "Version" in runtime_command(os.path.join(directory, "admin.sock"), "show info"),
                 what="HAProxy's admin socket")
        yield directory
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.parametrize("level", ["user", "operator"])
def test_socket_below_admin_is_refused_before_anything_changes(level_haproxy, run_module, level):
    socket_path = os.path.join(level_haproxy, "%s.sock" % level)
    map_path = os.path.join(level_haproxy, "bluegreen.map")
    assert runtime_command(socket_path, "show cli level").strip() == level

    result = run_module("haproxy_map", dict(socket=socket_path, map=map_path, key="active", value="backend_green"))
    assert result.get("failed") is True
    assert "is at level %s" % level in result["msg"] and "'stats socket %s ... level admin'" % socket_path \
        in result["msg"], result["msg"]
    admin = os.path.join(level_haproxy, "admin.sock")
    assert "active backend_blue" in runtime_command(admin, "show map %s" % map_path)

    precheck = run_module("release_precheck", dict(socket=socket_path, services=[dict(
        key="active", backend="backend_green", url="http://release.test/release", preflight=False, current=False)]))
    assert precheck.get("failed") is True and precheck["failed_stage"] == "socket", precheck
    assert "level admin" in precheck["msg"]
