"""The fleet instant at any forks setting (issue 14, item 3).

Against real HAProxy on loopback, a 4-node fleet at forks 2 (two batches: the switch an async job,
collected) and at forks 4 (one batch, more nodes at once than this machine's cores on a 2-core CI
runner: the switch a plain run that waits for the instant):
- the lead is estimated from the slowest host's PREPARE module run, its own work taken out (timed per host by the
  release_step action), the batches of forks and the controller's cores: the role chooses
  exactly what the engine's switch_lead step computes from those;
- every node is armed for one instant, switches, and reports how late it was (`late_by`), and
  the fleet's spread is within release_max_spread (a later node would fail the run).
Timings are not asserted (a loaded CI machine): states, the recorded fields and the estimate's
own inputs are.
"""

from __future__ import annotations

import json
import os

import pytest

from release_report import final_message, ran, results, switch_steps

from ansible_collections.bluegreen.haproxy.plugins.plugin_utils import release_engine as release

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
NODES = 4


def chosen_lead(report):
    """(lead, instant) as the role chose them for the fleet (the run_once set_fact)."""
    for _name, _host, result in ran(report, "set_fact"):
        facts = result.get("ansible_facts", {})
        if "_release_switch_lead" in facts:
            return float(facts["_release_switch_lead"]), facts.get("_release_switch_at")
    raise AssertionError("no switch lead was chosen: %s" % final_message(report))


@pytest.mark.parametrize("forks", [2, NODES])
def test_the_fleet_switches_at_one_instant_at_any_forks(fleet_factory, run_playbook, tmp_path, monkeypatch, forks):
    fleet = fleet_factory(nodes=NODES)
    monkeypatch.setenv("ANSIBLE_FORKS", str(forks))
    report_file = tmp_path / "report.json"

    rc, report = run_playbook(CUTOVER, {"release_target": "backend_green", "release_report_file": str(report_file)},
                              inventory=fleet.inventory)

    assert rc == 0, final_message(report)
    assert fleet.map_values() == ["backend_green"] * NODES
    written = json.loads(report_file.read_text())
    assert written["outcome"] == "succeeded", written

    # The estimate's input: each host's own PREPARE module run, timed by the release_step
    # action, less the node's own work in it (its waits and requests).
    runs = dict((host, dict(started=result.get("module_started"), seconds=result.get("module_seconds"),
                            work=result.get("work_seconds")))
                for _name, host, result in ran(report, "release_step", "prepare") if result.get("clock"))
    assert sorted(runs) == ["node%d" % index for index in range(1, NODES + 1)], runs
    assert all(isinstance(run["started"], float) and isinstance(run["seconds"], float) and run["seconds"] > run["work"] >= 0
               for run in runs.values()), runs
    # The lead is one estimate from those runs (the slowest one's cost per batch), the batches of
    # forks and the cores.
    lead, instant = chosen_lead(report)
    expected = release.switch_lead(NODES, forks, 0, cores=os.cpu_count(), runs=list(runs.values()))
    assert lead == pytest.approx(expected, abs=0.11), (lead, expected, runs)

    # Every node was armed for that instant and says how late it was: as an async job with more
    # nodes than forks, as a plain run that waits for it when the fleet is one batch.
    steps = switch_steps(report)
    armed = [host for host, result in steps.items()
             if float((result.get("invocation") or {}).get("module_args", {}).get("switch_at") or 0) == float(instant)]
    assert len(armed) == NODES, steps
    async_jobs = [host for _name, host, result in results(report, "release_step", "switch") if result.get("ansible_job_id")]
    assert len(async_jobs) == (NODES if forks < NODES else 0), async_jobs
    nodes = written["nodes"]
    assert sorted(nodes) == sorted(runs)
    for host, node in nodes.items():
        assert isinstance(node["switched_at"], float), (host, node)
        assert isinstance(node["late_by"], float) and node["late_by"] >= 0, (host, node)
        assert node["switched_at"] >= float(instant) - 0.05, (host, node["switched_at"], instant)
    switch = written["switch"]
    assert switch["nodes"] == NODES
    assert switch["late"] == {} and switch["warning"] is None, switch
    assert switch["spread_ms"] <= switch["max_spread_ms"], switch
