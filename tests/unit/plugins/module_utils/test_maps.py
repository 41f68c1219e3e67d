"""Pure planning and parsing of module_utils/maps: what haproxy_map will send, without HAProxy."""

from __future__ import annotations

import os

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import (
    COMMAND_BUDGET,
    CompareAndSetError,
    InvalidMapKeyError,
    lookup_runtime_values,
    moved_since_snapshot,
    parse_get_map_reply,
    payload_chunks,
    applied_result,
    plan_bulk,
    plan_result,
    plan_single,
    validate_request,
    wait_until,
)
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy

FIXTURES = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "fixtures")
MAP = "/etc/haproxy/maps/bluegreen.map"


def live(*pairs):
    return [dict(ref="0x%x" % index, key=key, value=value) for index, (key, value) in enumerate(pairs)]


@pytest.mark.parametrize("previous,value,expected,action,restore", [
    ("backend_blue", "backend_green", None, ("set", "active", "backend_green"), ("set", "active", "backend_blue")),
    (None, "backend_green", None, ("add", "active", "backend_green"), ("del", "active")),
    ("backend_blue", None, None, ("del", "active"), ("add", "active", "backend_blue")),
    ("backend_green", "backend_green", "backend_blue", None, None),
    ("backend_blue", "backend_green", "backend_blue", ("set", "active", "backend_green"),
     ("set", "active", "backend_blue")),
])
def test_plan_single(previous, value, expected, action, restore):
    plan = plan_single(MAP, "active", value, expected, previous, None, False)
    assert (plan.action, plan.restore) == (action, restore)
    assert plan.previous == {"active": previous} and plan.desired == {"active": value}
    assert plan.changed is (action is not None)


def test_plan_single_refuses_a_moved_key_with_a_short_message():
    with pytest.raises(CompareAndSetError) as caught:
        plan_single(MAP, "active", "backend_green", "backend_blue", "c" * 5000, None, False)
    assert "(5000 characters)" in str(caught.value) and len(str(caught.value)) < 300


def test_plan_single_persist_when_runtime_already_live():
    plan = plan_single(MAP, "active", "backend_green", None, "backend_green",
                       "# c\r\nactive backend_blue\r\n", True)
    assert plan.action is None and plan.disk_changed and plan.changed
    assert plan.new_disk_text == "# c\r\nactive backend_green\r\n"


def test_plan_bulk_new_version_holds_every_entry_in_order_with_duplicates():
    current = live(("a", "1"), ("b", "2"), ("a", "dup"), ("c", "3"))
    plan = plan_bulk(MAP, {"a": "X", "d": "4"}, {"b": "2"}, current, None, False)
    assert plan.action == ("commit", [("a", "X"), ("b", "2"), ("a", "X"), ("c", "3"), ("d", "4")])
    assert plan.restore == ("commit", [("a", "1"), ("b", "2"), ("a", "dup"), ("c", "3")])
    assert plan.previous == {"a": "1", "d": None}
    assert plan.changed_keys == ["a", "d"]


def test_plan_bulk_nothing_to_do_and_rerun_of_cas_is_accepted():
    plan = plan_bulk(MAP, {"a": "X"}, {"a": "1"}, live(("a", "X")), "a 1\n", True)
    assert plan.action is None and plan.disk_changed
    assert plan.new_disk_text == "a X\n"


def test_bulk_result_shows_every_key_on_disk_before_and_after():
    plan = plan_bulk(MAP, {"a": "X", "b": "Y"}, None, live(("a", "1"), ("b", "2")), "a 1\nb 2\n", True)
    planned = plan_result(plan)
    assert planned["previous_disk_entries"] == {"a": "1", "b": "2"}
    assert planned["disk_entries"] == {"a": "X", "b": "Y"}
    # The write did not happen (it failed, or persist was off): the disk still has the old values.
    assert applied_result(dict(planned), {"disk_changed": False})["disk_entries"] == {"a": "1", "b": "2"}
    unreadable = plan_result(plan_bulk(MAP, {"a": "X"}, None, live(("a", "1")), None, False))
    assert "disk_entries" not in unreadable


def test_plan_bulk_names_every_mismatch_up_to_five():
    current = live(*[("k%d" % index, "old") for index in range(8)])
    with pytest.raises(CompareAndSetError) as caught:
        plan_bulk(MAP, {"k0": "new"}, {"k%d" % index: "other" for index in range(8)}, current, None, False)
    message = str(caught.value)
    assert "8 live values are not the expected ones" in message and message.count("(expected other)") == 5
    assert message.endswith("nothing was changed")


def test_plan_diff_shows_only_changed_keys():
    plan = plan_bulk(MAP, {"a": "X", "b": "2"}, None, live(("a", "1"), ("b", "2")), "a 1\nb 2\n", True)
    runtime_diff, disk_diff = plan.diff("/file", True)
    assert (runtime_diff["before"], runtime_diff["after"]) == ("a 1\n", "a X\n")
    assert disk_diff["after"] == "a X\nb 2\n"


def test_payload_chunks_fit_the_budget_and_keep_order():
    entries = [("svc%05d.example.com" % index, "backend_green") for index in range(5000)]
    chunks = payload_chunks(entries)
    assert [line for chunk in chunks for line in chunk] == ["%s %s" % entry for entry in entries]
    assert all(sum(len(line) + 1 for line in chunk) <= COMMAND_BUDGET for chunk in chunks)
    assert len(chunks) > 1


@pytest.mark.parametrize("reply,expected", [
    ('type=str, case=sensitive, found=yes, idx=tree, key="active", value="backend_blue", type="str"\n\n',
     dict(found=True, key="active", value="backend_blue", match_type="str", case="sensitive")),
    ('type=str, case=sensitive, found=yes, idx=tree, key="k", value="a \\"b\\", type=\\"x", type="str"\n\n',
     dict(found=True, key="k", value='a \\"b\\", type=\\"x', match_type="str", case="sensitive")),
    ('type=str, case=sensitive, found=yes, idx=tree, key="k", value="x, key=\\"y", type="str"\n\n',
     dict(found=True, key="k", value='x, key=\\"y', match_type="str", case="sensitive")),
    ("type=str, case=sensitive, found=no\n\n",
     dict(found=False, key=None, value=None, match_type="str", case="sensitive")),
    ("type=beg, case=sensitive, found=no\n\n",
     dict(found=False, key=None, value=None, match_type="beg", case="sensitive")),
])
def test_parse_get_map_reply(reply, expected):
    assert parse_get_map_reply(reply) == expected


@pytest.mark.parametrize("version", ["haproxy-2.6", "haproxy-3.0"])
def test_parse_get_map_reply_on_captured_replies(version):
    with open(os.path.join(FIXTURES, version, "get_map_found.txt")) as handle:
        found = parse_get_map_reply(handle.read())
    with open(os.path.join(FIXTURES, version, "get_map_missing.txt")) as handle:
        missing = parse_get_map_reply(handle.read())
    assert found["found"] is True and found["key"] == "active" and found["value"]
    assert missing["found"] is False and missing["match_type"] == "str"


def test_lookup_chains_get_map_and_never_dumps():
    fake = FakeHAProxy({MAP: [("k%d" % index, "v%d" % index) for index in range(50)]})
    values = lookup_runtime_values(fake.client(), MAP, ["k3", "nope", "k3", "k49"])
    assert values == {"k3": "v3", "nope": None, "k49": "v49"}
    assert len(fake.log) == 1 and fake.log[0][1].count(";") == 2


def test_lookup_falls_back_to_one_dump_when_get_map_is_not_exact(monkeypatch):
    """A prefix map answers another pattern for a key: the dump is exact for every map type."""
    fake = FakeHAProxy({MAP: [("www", "prefix"), ("www.example.com", "exact")]})
    client = fake.client()
    real = fake.command

    def beg_map(words, payload):
        if words[:2] == ["get", "map"]:
            return ('type=beg, case=sensitive, found=yes, idx=tree, key="www", value="prefix", type="str"\n\n'
                    if words[3].startswith("www") else "type=beg, case=sensitive, found=no\n\n")
        return real(words, payload)

    monkeypatch.setattr(fake, "command", beg_map)
    assert lookup_runtime_values(client, MAP, ["www.example.com", "other"]) == {
        "www.example.com": "exact", "other": None}
    assert [line for _stamp, line in fake.log if line.startswith("show map ")] == ["show map " + MAP]


def test_wait_until_sleeps_to_the_instant_and_not_when_past():
    now = [100.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds * 0.6  # an early wake-up must lead to another sleep

    wait_until(101.0, clock=lambda: now[0], sleep=sleep)
    assert now[0] >= 101.0 - 1e-9 and len(slept) > 1
    slept[:] = []
    wait_until(50.0, clock=lambda: now[0], sleep=sleep)
    assert slept == []


BASE = dict(map=MAP, key=None, value=None, state="present", expected_value=None, entries=None,
            expected_entries=None, switch_at=None)


@pytest.mark.parametrize("params,words", [
    (dict(entries={}), "at least one key"),
    (dict(entries={"k": None}), "must be a string"),
    (dict(entries={"k": "v"}, expected_entries={"k": "a;b\nc"}), "invalid expected_entries"),
    (dict(key="k", value="v", switch_at=2000.0 + 601), "more than 600 s"),
])
def test_validate_request(params, words):
    with pytest.raises(InvalidMapKeyError, match=words):
        validate_request(dict(BASE, **params), now=2000.0)


def test_validate_request_accepts_an_instant_in_the_past_or_soon():
    validate_request(dict(BASE, key="k", value="v", switch_at=1000.0), now=2000.0)
    validate_request(dict(BASE, entries={"k": "v"}, switch_at=2500.0), now=2000.0)


# -- compare-and-set: an absent key, and the instant (issue 13) --------------


@pytest.mark.parametrize("expected", ["backend_blue", "x"])
def test_plan_single_refuses_an_absent_key_when_a_value_is_expected(expected):
    """An absent key (None) is never the expected value."""
    with pytest.raises(CompareAndSetError) as caught:
        plan_single(MAP, "active", "backend_green", expected, None, None, False)
    assert "its live value is absent, expected %s" % expected in str(caught.value)
    facts = caught.value.facts
    assert facts["refused"] is True and facts["runtime_entries"] == facts["previous"] == {"active": None}
    assert facts["conflicts"] == {"active": {"expected": expected, "live": None}}


def test_plan_bulk_refuses_an_absent_key_when_a_value_is_expected():
    with pytest.raises(CompareAndSetError) as caught:
        plan_bulk(MAP, {"a": "X"}, {"a": "1"}, live(("b", "2")), None, False)
    assert "a is absent (expected 1)" in str(caught.value)
    assert caught.value.facts["runtime_entries"] == {"a": None}


@pytest.mark.parametrize("live_value,refused", [
    ("backend_blue", False), ("backend_green", False), ("backend_canary", True), (None, True)])
def test_single_plan_at_the_instant(live_value, refused):
    plan = plan_single(MAP, "active", "backend_green", "backend_blue", "backend_blue", None, False)
    if refused:
        with pytest.raises(CompareAndSetError, match="at the instant of the switch"):
            plan.single_at_instant(live_value)
        return
    at_instant = plan.single_at_instant(live_value)
    assert at_instant.previous == {"active": live_value}
    assert at_instant.action == (None if live_value == "backend_green" else ("set", "active", "backend_green"))


@pytest.mark.parametrize("snapshot,now,moved", [
    ([("a", "1"), ("b", "2")], [("a", "1"), ("b", "2")], {}),
    ([("a", "1"), ("b", "2")], [("b", "2"), ("a", "1")], {}),  # re-ordered only: lookups are the same
    ([("a", "1")], [("a", "1"), ("n", "x")], {"n": {"expected": None, "live": "x"}}),
    ([("a", "1"), ("b", "2")], [("a", "1")], {"b": {"expected": "2", "live": None}}),
    ([("a", "1"), ("b", "2")], [("a", "1"), ("b", "3")], {"b": {"expected": "2", "live": "3"}}),
    ([("a", "1")], [("a", "1"), ("a", "dup")], {"a": {"expected": "1", "live": "1"}}),
    ([("a", "1")], [("a", "X")], {}),  # a listed key a hand put at its goal
    ([("a", "1")], [("a", "Y")], {"a": {"expected": "1", "live": "Y"}}),
])
def test_moved_since_snapshot(snapshot, now, moved):
    assert moved_since_snapshot(snapshot, now, {"a": "X"}) == moved


@pytest.mark.parametrize("params,option", [
    (dict(key="k", value="v" * COMMAND_BUDGET), "value"),
    (dict(key="k" * COMMAND_BUDGET, state="absent"), "key"),
    (dict(key="k", value="v", expected_value="e" * COMMAND_BUDGET), "expected_value"),
    (dict(entries={"k": "v" * COMMAND_BUDGET}), "entries"),
    (dict(entries={"k": "v"}, expected_entries={"k": "v" * COMMAND_BUDGET}), "expected_entries"),
])
def test_validate_request_refuses_inputs_longer_than_one_command(params, option):
    with pytest.raises(InvalidMapKeyError) as caught:
        validate_request(dict(BASE, **params), now=2000.0)
    message = str(caught.value)
    assert message.startswith("invalid %s:" % option) and "tune.bufsize" in message and len(message) < 400


def test_payload_chunks_keep_the_command_line_within_the_budget():
    """The `add map @N <map> <<` line counts: head plus payload stay below HAProxy's buffer."""
    fake = FakeHAProxy({MAP: []})
    from ansible_collections.bluegreen.haproxy.plugins.module_utils.maps import stage_version
    long_map = "/etc/haproxy/maps/" + "m" * 3000 + ".map"
    fake.maps[long_map] = fake.maps.pop(MAP)
    entries = [("svc%05d.example.com" % index, "backend_green") for index in range(2000)]
    sent = []
    client = fake.client()
    real = client.run_payload

    def record(verb, arguments, lines):
        sent.append(len(("%s %s <<\n%s\n\n" % (verb, " ".join(arguments), "\n".join(lines))).encode()))
        return real(verb, arguments, lines)

    client.run_payload = record
    stage_version(client, long_map, entries)
    assert len(sent) > 1 and max(sent) <= COMMAND_BUDGET + 2, sent
