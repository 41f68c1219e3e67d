# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make bench`: the collection side by side with the shell runbook, on loopback, bounded.

Everything runs against real HAProxy processes started here (tests/lab.py), sharing four
app processes (blue1, blue2, green1, green2), each case with its own nodes. Repetitions go
round-robin over the cases (`--reps`, median kept, targets alternating so every run really
switches), so every case gets a run first; no run starts after `--budget` seconds and a run
still going a minute later is stopped, so `make bench` stays under 10 minutes. Cases:

- the runbook as a shell script: socat (check, switch), curl (smoke), sed (persist);
- a socat loop setting N keys one `set map` at a time;
- haproxy_map, one key, and `entries` with N keys in one module run;
- the cutover playbook on 1 and on M nodes (the spread of `switched_at` across nodes);
- haproxy_map_info reading one key of a 1-entry and of a big map;
- the cutover playbook on a node whose map has the big number of entries.

It prints a table and writes it, with the machine it ran on, to docs/benchmarks.md
(`--output`). `--tiny` runs every case once with small sizes (tests/integration/test_bench.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests"))

from lab import HAPROXY, App, HAProxyEnv, ansible_bin, ansible_env, free_port, write_inventory  # noqa: E402

CUTOVER = os.path.join(REPO, "playbooks", "cutover.yml")
FULL = dict(reps=3, keys=10000, loop_keys=500, nodes=10, big=100000, budget=540)
TINY = dict(reps=1, keys=50, loop_keys=20, nodes=2, big=1000, budget=600)

MAP_PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  tasks:
    - name: bench
      {module}:
        socket: "{{{{ socket }}}}"
        map: "{{{{ map_name }}}}"
        key: "{{{{ key | default(omit) }}}}"
        value: "{{{{ value | default(omit) }}}}"
        keys: "{{{{ keys | default(omit) }}}}"
        entries: "{{{{ entries | default(omit) }}}}"
"""

RUNBOOK = r"""
set -euo pipefail
sock=$1 map=$2 port=$3 from=$4 to=$5
cli() { echo "$1" | socat -t 5 stdio "unix-connect:$sock"; }
cli "show map $map" | grep -q " active $from\$"
test "$(cli "show stat backend_${to#backend_} 4 -1" | grep -c ',UP,')" -ge 1
test -z "$(cli "set map $map active $to" | tr -d '\n')"
curl -fsS -H 'Host: release.test' "http://127.0.0.1:$port/release" | grep -q "version=${to#backend_}"
sed -i "s/^active .*/active $to/" "$map"
"""

SOCAT_LOOP = r"""
set -euo pipefail
sock=$1 map=$2 value=$3 count=$4
for i in $(seq 0 $((count - 1))); do
  printf 'set map %s svc%05d.example.com %s\n' "$map" "$i" "$value" | socat -t 5 stdio "unix-connect:$sock" >/dev/null
done
"""


class Bench(object):
    def __init__(self, sizes, workdir):
        self.sizes = sizes
        self.workdir = workdir
        self.deadline = time.monotonic() + sizes["budget"]
        self.rows = []
        self.apps = {}
        self.envs = []

    # -- lab ---------------------------------------------------------------

    def start_apps(self):
        for name in ("blue1", "blue2", "green1", "green2"):
            self.apps[name] = App(name=name, color=name.rstrip("12"), port=free_port(),
                                  workdir=self.workdir).start()

    def node(self, name, extra_keys=0):
        """A HAProxy sharing the apps; its map holds `active` plus `extra_keys` svc keys."""
        workdir = os.path.join(self.workdir, name)
        os.makedirs(os.path.join(workdir, "maps"))
        with open(os.path.join(workdir, "maps", "bluegreen.map"), "w") as handle:
            handle.write("# bluegreen switch\nactive backend_blue\n")
            handle.writelines("svc%05d.example.com backend_blue\n" % index for index in range(extra_keys))
        env = HAProxyEnv(workdir=workdir, apps=self.apps, frontend_port=free_port(), stats_port=free_port(),
                         inter="300ms")
        self.envs.append(env)
        env.start()
        env.wait_all_up()
        return env

    def stop(self):
        for env in self.envs:
            env.stop()
        for app in self.apps.values():
            app.stop()

    # -- runners -------------------------------------------------------------

    def timeout(self):
        """Seconds a run may still take: the budget plus one minute, so the whole stays bounded."""
        return max(30.0, self.deadline + 60 - time.monotonic())

    def shell(self, script, *arguments):
        subprocess.run(["bash", "-c", script, "bench"] + [str(argument) for argument in arguments],
                       check=True, capture_output=True, text=True, timeout=self.timeout())

    def playbook(self, playbook, extra_vars, inventory="localhost,"):
        """Run ansible-playbook with the JSON callback; return the report (raise on failure)."""
        handle, vars_file = tempfile.mkstemp(suffix=".json", dir=self.workdir)
        with os.fdopen(handle, "w") as stream:
            json.dump(extra_vars, stream)
        command = [ansible_bin("ansible-playbook"), "-i", inventory, "-c", "local", playbook, "-e", "@" + vars_file]
        completed = subprocess.run(command, env=ansible_env(), capture_output=True, text=True, cwd=REPO,
                                   timeout=self.timeout(), check=False)
        try:
            report = json.loads(completed.stdout)
        except ValueError:
            raise RuntimeError("%s printed no JSON: %s" % (playbook, completed.stderr[-2000:]))
        if completed.returncode != 0:
            failed = [result.get("msg") for play in report["plays"] for task in play["tasks"]
                      for result in task["hosts"].values() if result.get("failed") and not result.get("ignore_errors")]
            raise RuntimeError("%s failed (rc=%d): %s" % (os.path.basename(playbook), completed.returncode,
                                                          str(failed[-1:])[:500]))
        return report

    def map_playbook(self, module):
        path = os.path.join(self.workdir, "%s.yml" % module)
        if not os.path.exists(path):
            with open(path, "w") as handle:
                handle.write(MAP_PLAYBOOK.format(module="bluegreen.haproxy.%s" % module))
        return path

    # -- measuring -----------------------------------------------------------

    def case(self, name, run, baseline=None, note=""):
        """Register a case: `run(rep)` switches once (returning the spread for cutovers)."""
        self.rows.append(dict(name=name, run=run, baseline=baseline, note=note, error=None, seconds=[], spreads=[]))

    def measure_all(self):
        """Repetitions round-robin over the cases, so every case gets a run before the budget ends."""
        for rep in range(self.sizes["reps"]):
            for row in self.rows:
                if row["error"] or len(row["seconds"]) < rep:
                    continue
                if time.monotonic() > self.deadline:
                    if not row["seconds"]:
                        row["error"] = "skipped: time budget spent"
                    continue
                started = time.monotonic()
                try:
                    extra = row["run"](rep)
                except subprocess.TimeoutExpired:
                    row["error"] = "stopped: over the time budget"
                    continue
                except Exception as exc:  # a failing case is reported, the others still run
                    row["error"] = "failed: %s" % str(exc).splitlines()[0][:300]
                    continue
                row["seconds"].append(time.monotonic() - started)
                if isinstance(extra, float):  # only cutovers return one: the spread of switched_at
                    row["spreads"].append(extra)
                print("rep %d: %s %.3fs" % (rep + 1, row["name"], row["seconds"][-1]), flush=True)
        for row in self.rows:
            row.update(runs=len(row["seconds"]), median=statistics.median(row["seconds"]) if row["seconds"] else None,
                       spread=statistics.median(row["spreads"]) if row["spreads"] else None)
            if 0 < row["runs"] < self.sizes["reps"] and not row["error"]:
                row["note"] = (row["note"] + "; " if row["note"] else "") + "time budget: %d of %d runs" % (
                    row["runs"], self.sizes["reps"])

    def median_of(self, name):
        for row in self.rows:
            if row["name"] == name:
                return row["median"]
        return None

    def format_row(self, row):
        median = "%.3f" % row["median"] if row["median"] is not None else "-"
        base = self.median_of(row["baseline"]) if row["baseline"] else None
        ratio = ("%.1fx %s" % (row["median"] / base, row["baseline"])) if base and row["median"] else ""
        spread = "%.0f ms" % (row["spread"] * 1000) if row["spread"] is not None else ""
        note = "; ".join(part for part in (row["note"], row["error"]) if part)
        return "| %s | %s | %s | %s | %s | %s |" % (row["name"], median, row["runs"], ratio, spread, note)

    # -- cases ---------------------------------------------------------------

    def run(self):
        sizes = self.sizes
        targets = ("backend_green", "backend_blue")
        self.start_apps()
        # Each case has its own nodes, so every repetition really switches from a known state.
        runbook_node = self.node("runbook")
        bulk = self.node("bulk", sizes["keys"])
        cutover_node = self.node("cutover")
        fleet = [self.node("fleet%d" % index) for index in range(sizes["nodes"])]
        big = self.node("big", sizes["big"])

        def map_run(module, env, **variables):
            return self.playbook(self.map_playbook(module), dict(socket=env.socket, map_name=env.map_path, **variables))

        def bulk_entries(rep):
            return {"svc%05d.example.com" % index: "backend_bulk_%d" % rep for index in range(sizes["keys"])}

        runbook = "shell runbook (socat, curl, sed), 1 node"
        self.case(runbook, lambda rep: self.shell(RUNBOOK, runbook_node.socket, runbook_node.map_path,
                                                  runbook_node.frontend_port, targets[(rep + 1) % 2], targets[rep % 2]))
        self.case("socat loop, set map per key, %d keys" % sizes["loop_keys"],
                  lambda rep: self.shell(SOCAT_LOOP, bulk.socket, bulk.map_path, targets[rep % 2], sizes["loop_keys"]),
                  note="half-switched while it runs; %d keys would take ~%dx as long"
                       % (sizes["keys"], max(1, sizes["keys"] // sizes["loop_keys"])))
        map_single = "haproxy_map, one key"
        self.case(map_single, lambda rep: map_run("haproxy_map", bulk, key="svc00000.example.com",
                                                  value="backend_single_%d" % rep))
        self.case("haproxy_map entries, %d keys in one run" % sizes["keys"],
                  lambda rep: map_run("haproxy_map", bulk, entries=bulk_entries(rep)),
                  baseline=map_single, note="atomic: prepare, add map @version payloads, commit")
        info_small = "haproxy_map_info, one key, 1-entry map"
        self.case(info_small, lambda rep: map_run("haproxy_map_info", runbook_node, keys=["active"]))
        self.case("haproxy_map_info, one key, %d-entry map" % (sizes["big"] + 1),
                  lambda rep: map_run("haproxy_map_info", big, keys=["svc00001.example.com"]), baseline=info_small)
        one_node = "cutover playbook, 1 node"
        self.case(one_node, lambda rep: self.cutover([cutover_node], targets[rep % 2]), baseline=runbook)
        self.case("cutover playbook, 1 node, %d-entry map" % (sizes["big"] + 1),
                  lambda rep: self.cutover([big], targets[rep % 2]), baseline=one_node)
        # The most expensive case last: on a loaded machine the budget ends there.
        self.case("cutover playbook, %d nodes (default forks)" % sizes["nodes"],
                  lambda rep: self.cutover(fleet, targets[rep % 2]), baseline=one_node,
                  note="spread = last minus first node's switched_at")
        self.measure_all()

    def cutover(self, nodes, target):
        inventory = os.path.join(self.workdir, "inventory-%d.ini" % len(nodes))
        write_inventory(inventory, nodes, {"release_smoke_url": "http://release.test/release",
                                           "release_health_wait": 10, "release_smoke_requests": 6})
        report = self.playbook(CUTOVER, {"release_target": target}, inventory=inventory)
        switched = {}
        for play in report["plays"]:
            for task in play["tasks"]:
                for host, result in task["hosts"].items():
                    if isinstance(result, dict) and isinstance(result.get("switched_at"), (int, float)):
                        switched[host] = result["switched_at"]
        if len(nodes) > 1 and len(switched) == len(nodes):
            return max(switched.values()) - min(switched.values())
        return None


def machine():
    cpu = ""
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), "")
    except OSError:
        pass
    haproxy = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
    ansible = subprocess.run([ansible_bin("ansible"), "--version"], capture_output=True, text=True,
                             check=False).stdout.splitlines()[0]
    return dict(cpu=cpu or platform.processor(), cores=os.cpu_count(), system=platform.platform(), haproxy=haproxy,
                ansible=ansible, python=platform.python_version())


def render(bench, info, started, finished, load_before, load_after, tiny):
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (scripts/bench.py)%s. Everything on loopback against real HAProxy "
        "processes; the median of %d run(s) per case, targets alternating so every run switches."
        % (" in --tiny mode" if tiny else "", bench.sizes["reps"]),
        "",
        "| case | median (s) | runs | ratio | spread | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [bench.format_row(row) for row in bench.rows]
    lines += [
        "",
        "Ratios compare the case with the named one, measured in the same run. The numbers depend",
        "heavily on the machine's load: the ratios are the part to compare between runs.",
        "",
        "## Machine",
        "",
        "- when: %s to %s (UTC), %.0f s" % (started.strftime("%Y-%m-%d %H:%M:%S"), finished.strftime("%H:%M:%S"),
                                            (finished - started).total_seconds()),
        "- CPU: %s, %s cores" % (info["cpu"], info["cores"]),
        "- system: %s" % info["system"],
        "- load average (1, 5, 15 min) before: %s, after: %s" % (load_before, load_after),
        "- %s; %s; Python %s" % (info["haproxy"], info["ansible"], info["python"]),
        "",
    ]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="every case once, small sizes (for the test)")
    parser.add_argument("--output", default=os.path.join(REPO, "docs", "benchmarks.md"))
    for name, value in FULL.items():
        parser.add_argument("--%s" % name.replace("_", "-"), type=int, default=None,
                            help="default %s (tiny: %s)" % (value, TINY[name]))
    args = parser.parse_args(argv)
    sizes = dict(TINY if args.tiny else FULL)
    sizes.update({name: getattr(args, name) for name in FULL if getattr(args, name) is not None})

    for program in ("socat", "curl", "bash", "sed"):
        if not shutil.which(program):
            parser.error("%s is needed for the shell runbook cases" % program)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = " ".join("%.2f" % value for value in os.getloadavg())
    workdir = tempfile.mkdtemp(prefix="bluegreen-bench-")
    bench = Bench(sizes, workdir)
    try:
        bench.run()
    finally:
        bench.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    finished = datetime.datetime.now(datetime.timezone.utc)
    load_after = " ".join("%.2f" % value for value in os.getloadavg())
    text = render(bench, machine(), started, finished, load_before, load_after, args.tiny)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as handle:
        handle.write(text)
    print("\n".join(text.splitlines()[4:6] + [bench.format_row(row) for row in bench.rows]))
    print("\nwritten to %s" % args.output)
    return 1 if any(row["error"] and row["error"].startswith("failed") for row in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
