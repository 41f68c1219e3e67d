"""`make bench` runs: the harness in --tiny mode, every case once with small sizes, so it cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys

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


CASES = ("shell runbook", "socat loop", "haproxy_map, one key", "haproxy_map entries, 50 keys",
         "cutover playbook, 1 node |", "cutover playbook, 2 nodes", "haproxy_map_info, one key, 1-entry",
         "haproxy_map_info, one key, 1001-entry", "cutover playbook, 1 node, 1001-entry")


def cases_that_did_not_run(text):
    """Every case of the table must have run exactly once, without an error or a note that the
    time budget stopped it (the harness must not rot unseen), and no case may be missing."""
    rows = [line for line in text.splitlines()
            if line.startswith("| ") and not line.startswith(("| case ", "| --- "))]
    problems = ["%s: %d rows" % (case, count) for case, count in
                ((case, sum(row.startswith("| " + case) for row in rows)) for case in CASES) if count != 1]
    problems += ["not one of the expected cases: %s" % row for row in rows
                 if not any(row.startswith("| " + case) for case in CASES)]
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        if cells[2] != "1" or cells[1] == "-" or "failed" in cells[5] or "budget" in cells[5]:
            problems.append(row)
    return problems


def test_a_case_that_did_not_run_fails_the_harness_test():
    ran = "| haproxy_map, one key | 1.234 | 1 |  |  |  |"
    assert cases_that_did_not_run("\n".join(
        ["| case | median (s) | runs | ratio | spread | note |", "|---|---|---|---|---|---|"]
        + [ran.replace("haproxy_map, one key", case.rstrip(" |")) for case in CASES])) == []
    skipped = "| cutover playbook, 2 nodes (default forks) | - | 0 |  |  | skipped: time budget spent |"
    text = "\n".join([ran.replace("haproxy_map, one key", case.rstrip(" |")) for case in CASES[:5]]
                     + [skipped] + [ran.replace("haproxy_map, one key", case) for case in CASES[6:]])
    assert cases_that_did_not_run(text) == [skipped]
    assert cases_that_did_not_run(text.replace(skipped + "\n", "")) == ["cutover playbook, 2 nodes: 0 rows"]
