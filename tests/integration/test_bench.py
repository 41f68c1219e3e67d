"""`make bench` runs: the harness in --tiny mode, every case once with small sizes, so it cannot rot."""

from __future__ import annotations

import importlib.util
import os
import resource
import subprocess
import sys
import time

import pytest

from lab import REPO, ansible_env


def test_bench_harness_runs_every_case_in_tiny_mode(tmp_path):
    output = tmp_path / "benchmarks.md"
    completed = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "bench.py"), "--tiny",
                                "--output", str(output)], env=ansible_env(), capture_output=True, text=True,
                               timeout=900, check=False)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    text = output.read_text()
    print("\n" + text)
    assert cases_that_did_not_run(text) == [], text
    assert "## Machine" in text and "HAProxy version" in text
    # Issue 14's targets are judged from the run's own rows, each with what it measured.
    targets = text.split("## Targets (issue 14)")[1].split("\n\n", 2)[1].splitlines()[2:]
    assert [row.split(" | ")[0] for row in targets][:3] == [
        "| one-node cutover <= 0.7x the hand-written playbook", "| one-node cutover <= 50x the shell runbook",
        "| <= 3 module runs per node (one node)"], targets
    assert not any("not measured" in row for row in targets), targets
    assert any(row.startswith("| 2 nodes, forks 2: every node switches within 100 ms") for row in targets), targets


CASES = ("shell runbook", "hand-written playbook", "cutover playbook, 1 node |", "ping play", "empty play",
         "socat loop", "haproxy_map, one key", "haproxy_map entries, 50 keys", "haproxy_map_info, one key, 1-entry",
         "haproxy_map_info, one key, 1001-entry", "cutover playbook, 1 node, 1001-entry",
         "Mitogen (mitogen_linear) cutover playbook, 1 node", "Mitogen (mitogen_linear) cutover playbook, 2 nodes",
         "cutover playbook, 2 nodes, forks 2", "cutover playbook, 2 nodes, forks 5")
# Where pip cannot reach PyPI the Mitogen rows say so instead of running: not a harness failure.
NOT_INSTALLED = "not measured: mitogen"


def cases_that_did_not_run(text):
    """Every case of the table must have run exactly once, without an error or a note that the
    time budget stopped it (the harness must not rot unseen), and no case may be missing. The
    note is the last column; a Mitogen row may say Mitogen could not be installed."""
    table = text.split("## Targets")[0]
    rows = [line for line in table.splitlines()
            if line.startswith("| ") and not line.startswith(("| case ", "| --- "))]
    problems = ["%s: %d rows" % (case, count) for case, count in
                ((case, sum(row.startswith("| " + case) for row in rows)) for case in CASES) if count != 1]
    problems += ["not one of the expected cases: %s" % row for row in rows
                 if not any(row.startswith("| " + case) for case in CASES)]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if cells[0].startswith("Mitogen") and cells[-1].startswith(NOT_INSTALLED):
            continue
        if cells[2] != "1" or cells[1] == "-" or "failed" in cells[-1] or "budget" in cells[-1]:
            problems.append(row)
    return problems


def test_a_case_that_did_not_run_fails_the_harness_test():
    def row(case, note=""):
        return "| %s | 1.234 | 1 |  | 1.0 |  | 0.7 |  | 1 | %s |" % (case.rstrip(" |"), note)

    header = ["| case | median (s) | runs | ratio | CPU (s) | CPU/node (s) | idle (s) | spread | module runs | note |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    every = header + [row(case) for case in CASES]
    assert cases_that_did_not_run("\n".join(every)) == []
    skipped = "| cutover playbook, 2 nodes, forks 5 | - | 0 |  |  |  |  |  |  | skipped: time budget spent |"
    assert cases_that_did_not_run("\n".join(every[:-1] + [skipped])) == [skipped]
    assert cases_that_did_not_run("\n".join(every[:-1])) == ["cutover playbook, 2 nodes, forks 5: 0 rows"]
    failed = row("empty play", "failed: empty.yml failed (rc=2)")
    assert cases_that_did_not_run("\n".join(every).replace(row("empty play"), failed)) == [failed]
    # Mitogen that pip could not install is said, not failed; a Mitogen refusal is a result.
    not_installed = "| %s | - | 0 |  |  |  |  |  |  | %s==0.3.54 could not be installed (offline) |" % (
        CASES[12], NOT_INSTALLED)
    refused = row(CASES[12], "refused: this run uses mitogen_linear on a fleet of 2 nodes")
    assert cases_that_did_not_run("\n".join(every).replace(row(CASES[12]), not_installed)) == []
    assert cases_that_did_not_run("\n".join(every).replace(row(CASES[12]), refused)) == []


# A process that detaches from the run (setsid + exit of its parent, as async_wrapper does with
# a fleet's armed switch step) and burns this much CPU before it ends.
DETACHED_BURN = """
import os, sys, time
if os.fork():
    sys.exit(0)
os.setsid()
started = time.process_time()
while time.process_time() - started < 0.6:
    pass
with open(sys.argv[1], "w") as handle:
    handle.write("done")
"""


def load_bench():
    spec = importlib.util.spec_from_file_location("bench", os.path.join(REPO, "scripts", "bench.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cpu_of_a_case_includes_processes_that_detached_from_it(tmp_path):
    """The armed switch steps run detached from ansible-playbook: RUSAGE_CHILDREN misses them,
    the bench's control group does not (issue 14's idle bound is judged from this CPU)."""
    bench = load_bench()
    meter = bench.CPUMeter("bluegreen-test-%d" % os.getpid())
    if meter.path is None:
        pytest.skip(meter.method)
    done = tmp_path / "done"
    try:
        before, children_before = meter.usage(), resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-c", DETACHED_BURN, str(done)], check=True, **meter.subprocess_options())
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert done.exists(), "the detached process did not finish in 30 s"
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert meter.usage() - before >= 0.55
        assert (children.ru_utime + children.ru_stime) - (children_before.ru_utime + children_before.ru_stime) < 0.3
    finally:
        meter.close()
    assert not os.path.exists(meter.path)
