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
    for case in ("shell runbook", "socat loop", "haproxy_map, one key", "haproxy_map entries, 50 keys",
                 "cutover playbook, 1 node |", "cutover playbook, 2 nodes", "haproxy_map_info, one key, 1-entry",
                 "haproxy_map_info, one key, 1001-entry", "cutover playbook, 1 node, 1001-entry"):
        rows = [line for line in text.splitlines() if line.startswith("| " + case)]
        assert len(rows) == 1, (case, text)
        assert "failed" not in rows[0], rows[0]
        # On a machine too loaded to finish within the budget, later cases say so instead of running.
        assert rows[0].split("|")[3].strip() == "1" or "time budget" in rows[0], rows[0]
    print("\n" + text)
    assert "## Machine" in text and "HAProxy version" in text
    ran = [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[3].strip() == "1"]
    assert len(ran) >= 4, "the runbook, the socat loop and both haproxy_map cases always run"
