"""The release playbooks against a containerized fleet (lb1, lb2; HAProxy 2.6 or 3.0), each run
for real with ansible-playbook (or ansible-runner) against the scenario's inventory. The
assertions are on states, read from outside the collection: the switch at runtime and on disk
on every node, the answers through each frontend, the run's exit status and outcome.

  cutover under live traffic   blue -> green -> (reload) -> blue, zero failed requests
  a wrong green                green answers version=blue behind lb2: every node rolls back
  gates                        DOWN / MAINT / DRAIN green servers: refused, nothing changed
  reload in the watch window   caught, every node rolled back, consistent
  ansible-runner               the cutover as AWX runs it, with its artifacts

On bookworm (HAProxy 2.6) only the cutover under live traffic runs: the others are marked
`loopback_twin`, proven on the same HAProxy 2.6 by tests/integration (see conftest.py).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
import time

import pytest

from bluegreen_molecule import (ADMIN_SOCKET, MAP, MASTER_SOCKET, NODE_CLIENT, PLAYBOOKS, ansible_env, inventory,
                                playbook, wait_for)
from conftest import (Load, backend_2xx, container_address, expect_fleet, resolve,
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

    # Without the preflight (servers the nodes cannot reach directly), the smoke test after the
    # switch catches it and every node rolls back.
    run = playbook("cutover.yml", dict(GREEN, release_preflight=False), report=True,
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
    # Nothing changed on either node: runtime, map file, no lock; green served nothing.
    assert [state(node) for node in fleet] == before
    assert [backend_2xx(node, "backend_green") for node in fleet] == served
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
