"""The release playbooks against a containerized fleet (lb1, lb2; HAProxy 2.6 or 3.0), each run
for real with ansible-playbook (or ansible-runner) against the scenario's inventory. The
assertions are on states, read from outside the collection: the switch at runtime and on disk
on every node, the answers through each frontend, the run's exit status and outcome.

  cutover under live traffic   blue -> green -> (reload) -> blue, zero failed requests
  a wrong green                green answers version=blue behind lb2: every node rolls back
  gates                        DOWN / MAINT / DRAIN green servers: refused, nothing changed
  reload in the watch window   caught, every node rolled back, consistent
  ansible-runner               the cutover as AWX runs it, with its artifacts
  a canary under many users    10% then 50% of 240 users (by X-User-Id), then the promotion
  a drain                      a stream held on blue is closed by the cutover's drain

Every cutover also tries green through each node's test listener first (PRECHECK's PREVIEW).

On bookworm (HAProxy 2.6) only the cutover under live traffic, the canary and the drain run: the others are marked
`loopback_twin`, proven on the same HAProxy 2.6 by tests/integration (see conftest.py).
"""

from __future__ import annotations

import collections
import json
import os
import shlex
import subprocess
import tempfile
import time

import pytest

from bluegreen_molecule import (ADMIN_SOCKET, MAP, MASTER_SOCKET, NODE_CLIENT, PLAYBOOKS, ansible_env, inventory,
                                playbook, wait_for)
from held_stream import HeldStream  # tests/support (bluegreen_molecule puts it on the path)
from conftest import (HOST_HEADER, Load, Users, backend_2xx, container_address, expect_fleet, resolve,
                      state)

GREEN = {"release_target": "backend_green"}


def outcomes(run):
    """{node: outcome} from the run's report file (release_report_file), when it wrote one."""
    return {name: node.get("outcome") for name, node in (run.report.get("nodes") or {}).items()}


def expect_outcome(run, outcome, nodes=None):
    """The run's outcome (and each node's) in its report, when the engine wrote one."""
    if not run.report:
        return
    if "outcome" in run.report:
        assert run.report["outcome"] == outcome, run.report
    if nodes is not None:
        assert outcomes(run) == nodes, run.report


@pytest.mark.usefixtures("from_blue")
def test_cutover_and_rollback_under_live_traffic(fleet):
    expect_fleet(fleet, "backend_blue")
    with Load([container_address(node.name) for node in fleet]) as load:
        wait_for(lambda: all(c["total"] > 5 for c in load.counts.values()), what="the load generator")
        run = playbook("cutover.yml", GREEN, report=True)
        assert run.rc == 0, run
        expect_outcome(run, "succeeded", {node.name: "switched" for node in fleet})
        expect_fleet(fleet, "backend_green")

        # A plain reload (what `systemctl reload` does) re-reads the map FILE: the cutover
        # persisted green, so green stays. Three per node, under keep-alive and new-connection
        # clients: the role's configuration (option idle-close-on-response) loses none of them.
        for _reload in range(3):
            for node in fleet:
                node.reload()
        expect_fleet(fleet, "backend_green")

        run = playbook("rollback.yml", report=True)
        assert run.rc == 0, run
        expect_outcome(run, "succeeded")
        expect_fleet(fleet, "backend_blue")
        time.sleep(1)  # a few more blue answers after the rollback, for the order check below
    for address, counts in load.counts.items():
        assert counts["errors"] == [], (address, counts)
        assert sorted(counts["answers"]) == ["200 version=blue", "200 version=green"], (address, counts)
        assert counts["total"] >= 100, (address, counts)
        assert counts["reused"] > 20, (address, counts)  # the keep-alive client really reused its connection
        # blue -> green (cutover) -> blue (rollback) while it ran
        assert counts["first"]["200 version=blue"] < counts["first"]["200 version=green"]
        assert counts["last"]["200 version=blue"] > counts["last"]["200 version=green"]


@pytest.mark.loopback_twin
@pytest.mark.usefixtures("from_blue")
def test_a_wrong_green_behind_one_node_rolls_every_node_back(fleet):
    lb1, lb2 = fleet
    # Behind lb2 only, green2 is now a green build that answers version=blue (and is healthy).
    lb2.cli("set server backend_green/green2 addr %s port 8080" % resolve(lb2, "green_wrong"))
    lb2.wait_servers("UP", ["backend_green/green2"])
    served_by_green = backend_2xx(lb1, "backend_green")

    # The preflight sends the smoke request straight to every green server: lb2's green2 is named
    # and no node switches.
    run = playbook("cutover.yml", GREEN, report=True, log_name="cutover-wrong-green-preflight")
    assert run.rc != 0, run
    expect_outcome(run, "failed", {lb1.name: "refused", lb2.name: "failed"})
    expect_fleet(fleet, "backend_blue")

    # Without the preflight (servers the nodes cannot reach directly), lb2's test listener
    # (PRECHECK's PREVIEW) catches it: no node switches, no user was sent there.
    run = playbook("cutover.yml", dict(GREEN, release_preflight=False), report=True,
                   log_name="cutover-wrong-green-preview")
    assert run.rc != 0, run
    assert "PRECHECK: test listener 127.0.0.1:8081: " in run.output, run
    assert outcomes(run)[lb2.name] == "failed" and "switched" not in outcomes(run).values(), run.report
    expect_fleet(fleet, "backend_blue")

    # Without the test listener either, the smoke test after the switch catches it and every node
    # rolls back.
    run = playbook("cutover.yml", dict(GREEN, release_preflight=False, release_test_listener=""), report=True,
                   log_name="cutover-wrong-green")
    assert run.rc != 0, run
    expect_outcome(run, "failed", {lb1.name: "rolled back", lb2.name: "rolled back"})
    # lb1's green was fine, yet lb1 switched (its green served the smoke requests) and came back.
    assert backend_2xx(lb1, "backend_green") > served_by_green
    expect_fleet(fleet, "backend_blue")


GATES = {
    # Stopped containers: every node sees green2 DOWN.
    "green2 DOWN": {"stop": ["green2"], "expect": {"green2": "DOWN"}},
    # Runtime API on lb2 only: lb1 passes its own precheck and must still not switch.
    "green1 DRAIN, green2 MAINT on lb2": {
        "lb2": ["set server backend_green/green1 state drain", "set server backend_green/green2 state maint"],
        "expect": {"green1": "DRAIN", "green2": "MAINT"}},
}


@pytest.mark.loopback_twin
@pytest.mark.usefixtures("from_blue")
@pytest.mark.parametrize("gate", sorted(GATES))
def test_unhealthy_green_is_refused_before_any_node_switches(fleet, apps, gate):
    case = GATES[gate]
    lb1, lb2 = fleet
    before = [state(node) for node in fleet]
    served = [backend_2xx(node, "backend_green") for node in fleet]
    if case.get("stop"):
        subprocess.run(["docker", "stop", "--time", "1"] + [apps[name] for name in case["stop"]],
                       check=True, stdout=subprocess.DEVNULL)
    for command in case.get("lb2", []):
        lb2.cli(command)
    for node in fleet if case.get("stop") else [lb2]:
        for server, status in case["expect"].items():
            node.wait_servers(status, ["backend_green/%s" % server])

    run = playbook("cutover.yml", dict(GREEN, release_health_wait=1), report=True,
                   log_name="gate-%s" % gate.replace(" ", "-").replace(",", ""))
    assert run.rc != 0, run
    expect_outcome(run, "failed")
    assert "switched" not in outcomes(run).values(), run.report
    # Nothing changed on either node: runtime, map file, no lock; green served no user: only
    # the PREVIEW's requests through the test listener of a node that passed its own gates.
    assert [state(node) for node in fleet] == before
    previewed = [((run.report["nodes"][node.name].get("smoke") or {}).get("PREVIEW") or {}).get("passed", 0)
                 for node in fleet]
    assert [backend_2xx(node, "backend_green") for node in fleet] == [a + b for a, b in zip(served, previewed)], \
        run.report
    for server in case["expect"]:
        assert server in run.output


# Runs on lb1 (its python3, the tests' Runtime API client): once the live map says green and
# green has served `after` more responses (the smoke requests, then the first of the watch
# window), a plain master CLI reload. Polled on the node every 50 ms: from the controller each
# look would be a `docker exec`, too slow to land inside the window on a loaded machine.
RELOAD_WHEN_GREEN = """
import json, sys, time
sys.path.insert(0, %(client_dir)r)
import runtime_client as rc
admin, master, path, after = %(admin)r, %(master)r, %(map)r, %(after)d
def live():
    return rc.map_entries(rc.command(admin, "show map " + path, retry_for=10)).get("active")
def served():
    rows = rc.stat_rows(rc.command(admin, "show stat backend_green 2 -1", retry_for=10))
    return int(next(r for r in rows if r["svname"] == "BACKEND").get("hrsp_2xx") or 0)
result, deadline = {"reloaded": False}, time.monotonic() + 600
while live() != "backend_green" and time.monotonic() < deadline:
    time.sleep(0.05)
base = served()
while served() < base + after and time.monotonic() < deadline:
    time.sleep(0.05)
if time.monotonic() < deadline:
    rc.command(master, "reload", timeout=30, retry_for=10)
    time.sleep(1)
    result = {"reloaded": True, "runtime_after": live()}
with open("/tmp/bg-reload.tmp", "w") as handle:
    json.dump(result, handle)
import os
os.rename("/tmp/bg-reload.tmp", "/tmp/bg-reload.json")
"""


@pytest.mark.loopback_twin
@pytest.mark.usefixtures("from_blue")
def test_a_reload_in_the_watch_window_rolls_every_node_back(fleet):
    """The disk still says blue while green is watched; a plain reload of lb1 (someone's
    `systemctl reload`) puts lb1 back on blue. The watch catches it, every node rolls back.
    The reload comes once lb1's green served the smoke requests (4) and a watch request."""
    lb1 = fleet[0]
    smoke_requests = 4
    script = RELOAD_WHEN_GREEN % {"client_dir": os.path.dirname(NODE_CLIENT), "admin": ADMIN_SOCKET,
                                  "master": MASTER_SOCKET, "map": MAP, "after": smoke_requests + 1}
    watcher = lb1.host.check_output("rm -f /tmp/bg-reload.json; nohup python3 -c %s >/tmp/bg-reload.log 2>&1 & echo $!"
                                    % shlex.quote(script)).strip()
    try:
        run = playbook("cutover.yml", dict(GREEN, release_smoke_requests=smoke_requests, release_watch_seconds=20,
                                           release_watch_interval=0.5), report=True, log_name="cutover-reload-in-watch")
        fired = json.loads(wait_for(lambda: lb1.host.file("/tmp/bg-reload.json").exists
                                    and lb1.host.file("/tmp/bg-reload.json").content_string,
                                    timeout=60, what="the reload of lb1"))
    finally:
        lb1.host.run("kill %s 2>/dev/null || true" % watcher)
    assert fired == {"reloaded": True, "runtime_after": "backend_blue"}, fired
    assert run.rc != 0, run
    expect_outcome(run, "failed", {node.name: "rolled back" for node in fleet})
    expect_fleet(fleet, "backend_blue")


@pytest.mark.loopback_twin
@pytest.mark.usefixtures("from_blue")
def test_cutover_through_ansible_runner(fleet):
    """The cutover as AWX runs it: ansible_runner.run() with extra vars; the job's artifacts
    (set_stats) say what is live."""
    import ansible_runner

    env = ansible_env()
    private = tempfile.mkdtemp(prefix="bluegreen-runner-")
    job = ansible_runner.run(
        private_data_dir=private, playbook=os.path.join(PLAYBOOKS, "cutover.yml"), inventory=inventory(),
        extravars=dict(GREEN, release_smoke_requests=4), quiet=True,
        envvars={key: env[key] for key in ("ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH",
                                           "ANSIBLE_NOCOLOR", "ANSIBLE_FORCE_COLOR", "PATH")})
    assert (job.status, job.rc) == ("successful", 0), job.stdout.read()[-3000:]
    stats = [event for event in job.events if event.get("event") == "playbook_on_stats"]
    artifacts = stats[-1]["event_data"].get("artifact_data") or {}
    assert artifacts.get("release_target") == "backend_green", artifacts
    assert artifacts.get("release_outcome") == "succeeded", artifacts
    expect_fleet(fleet, "backend_green")


def expect_previewed(run):
    """Every node's PRECHECK tried the target through its test listener (release_test_listener)
    before any user was sent there: smoke.PREVIEW counts its requests, none failed."""
    for name, node in run.report["nodes"].items():
        preview = (node.get("smoke") or {}).get("PREVIEW") or {}
        assert preview.get("passed", 0) > 0 and preview.get("failed") == 0, (name, node.get("smoke"))


USERS = 240
CANARY = dict(GREEN, release_strategy="canary", release_canary_steps=[10, 50], release_canary_step_seconds=5,
              release_min_requests=10)


@pytest.mark.usefixtures("from_blue")
def test_canary_steps_judged_by_many_users_then_promotion(fleet):
    """240 users (each one's bucket hashed from its X-User-Id, each always through the same
    node) while the cutover raises green's share to 10% then 50% on every node, then promotes:
    at each step the share of users on green is the weight, no user sees both versions within
    a step, no request fails, and the fleet ends on green with the weight 0."""
    expect_fleet(fleet, "backend_blue")
    with Users([container_address(node.name) for node in fleet], USERS, threads=3) as users:
        wait_for(lambda: len({answer[1] for answer in users.all()}) >= USERS, timeout=60,
                 what="every user's first answer")
        run = playbook("cutover.yml", CANARY, report=True, log_name="cutover-canary")
    answers = users.all()
    assert run.rc == 0, run
    expect_outcome(run, "succeeded")
    assert [answer for answer in answers if answer[2] != 200] == [], "a healthy canary fails no request"
    nodes = run.report["nodes"]
    assert sorted(nodes) == sorted(node.name for node in fleet), run.report
    for name, node in nodes.items():
        steps = node["canary_steps"]
        assert [(step["weight"], step["verdict"]) for step in steps] == [(10, "passed"), (50, "passed")], (name, steps)
    expect_previewed(run)
    for index, weight in enumerate((10, 50)):
        # The step's window on every node: requests sent after the last node's switch to this
        # weight and answered before the first node's end of the step.
        switched = max(node["canary_steps"][index]["switched_at"] for node in nodes.values())
        ended = min(node["canary_steps"][index]["ended"] for node in nodes.values())
        seen = collections.defaultdict(set)
        for sent, user, _status, body, answered in answers:
            if switched <= sent and answered <= ended:
                seen[user].add(body)
        assert len(seen) >= USERS * 0.9, "%d users answered within the %d%% step" % (len(seen), weight)
        assert [user for user, bodies in seen.items() if len(bodies) > 1] == [], \
            "no user sees both versions within a step"
        share = 100.0 * sum(1 for bodies in seen.values() if bodies == {"version=green"}) / len(seen)
        assert abs(share - weight) <= 10, "%.1f%% of users on green at the %d%% step" % (share, weight)
    # Promoted: green live at runtime and on disk on every node, the share back to 0 at runtime,
    # the disk holds the live key only.
    expect_fleet(fleet, "backend_green")
    for node in fleet:
        assert node.runtime_map().get("active.weight") == "0", node.name
        assert set(node.disk_map()) == {"active"}, (node.name, node.disk_map())

    # The rollback leaves the fleet as every other test expects it: blue, no lock.
    run = playbook("rollback.yml", report=True, log_name="rollback-canary")
    assert run.rc == 0, run
    expect_outcome(run, "succeeded")
    expect_fleet(fleet, "backend_blue")


def blue_sessions(node):
    """The sessions blue's servers hold on that node (scur of each server row)."""
    return sum(int(row.get("scur") or 0) for row in node.cli("show stat backend_blue 4 -1", parse="stat")
               if row["svname"] in ("blue1", "blue2"))


@pytest.mark.usefixtures("from_blue")
def test_a_cutover_drains_blue_and_closes_a_held_stream(fleet):
    """A streaming response held on blue through lb1 while the cutover moves the fleet to green
    with release_drain_timeout and release_drain_shutdown: lb1's FINISH closes it (the client's
    stream ends before its last chunk), lb2 had nothing to close."""
    lb1, lb2 = fleet
    stream = HeldStream(container_address(lb1.name), 80, HOST_HEADER, seconds=120)
    stream.start()
    try:
        wait_for(lambda: stream.chunks >= 1, what="the first chunk of the held stream")
        assert b"version=blue" in stream.data, stream.data[:300]
        wait_for(lambda: blue_sessions(lb1) == 1, what="lb1's backend_blue to count the held session")

        run = playbook("cutover.yml", dict(GREEN, release_drain_timeout=3, release_drain_shutdown=True),
                       report=True, log_name="cutover-drain")

        assert run.rc == 0, run
        expect_outcome(run, "succeeded", {node.name: "switched" for node in fleet})
        drains = {name: node["drain"] for name, node in run.report["nodes"].items()}
        assert drains[lb1.name]["backend"] == "backend_blue", drains
        assert drains[lb1.name]["shut_down"] >= 1 and drains[lb1.name]["sessions_left"] == 0, drains
        assert (drains[lb2.name]["shut_down"], drains[lb2.name]["sessions_left"]) == (0, 0), drains
        # Closed by the FINISH step, before the playbook returned: cut short, not its normal end.
        wait_for(stream.ended.is_set, timeout=10, what="the held stream to end")
        assert not stream.complete and stream.ended_after < stream.seconds, (stream.ended_after, stream.data[-200:])
        expect_previewed(run)
        expect_fleet(fleet, "backend_green")
        assert blue_sessions(lb1) == 0
    finally:
        stream.close()
