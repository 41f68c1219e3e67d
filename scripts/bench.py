# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""`make bench`: the collection side by side with the shell runbook, on loopback, bounded.

Everything runs against real HAProxy processes started here (tests/lab.py), sharing four
app processes (blue1, blue2, green1, green2), each case with its own nodes. Repetitions go
round-robin over the cases (`--reps`, median kept, targets alternating so every run really
switches), so every case gets a run first; no run starts after `--budget` seconds and a run
still going a minute later is stopped, so `make bench` stays under 10 minutes. Cases:

- the runbook as a shell script: socat (check, switch), curl (smoke), sed (persist);
- the runbook as a hand-written Ansible playbook: 8 tasks (`shell` + socat for `show map`,
  `show stat`, `set map` and its read-back, `uri` for both smoke tests, `assert`,
  `lineinfile`), 7 module runs - what a user would write instead of the collection;
- a play of N `ping`s (N = the module runs of the one-node cutover, counted through an
  interpreter wrapper that logs each module process) - Ansible's floor for N module runs -
  and an empty play (start-up alone);
- a socat loop setting N keys one `set map` at a time;
- haproxy_map, one key, and `entries` with N keys in one module run;
- the cutover playbook on 1 node, and on M nodes (and on 20) at forks 5 and at forks = nodes,
  with the switch spread from the run's REPORT message;
- the cutover under Mitogen's strategy (mitogen_linear, installed by this script into its own
  directory, --mitogen-dir) on 1 and on 2 nodes: measured, or the engine's refusal.
- haproxy_map_info reading one key of a 1-entry and of a big map;
- the cutover playbook on a node whose map has the big number of entries.

Every case is timed (wall) and its CPU seconds are those of the whole process tree it started:
ansible-playbook, its workers and every module process, the armed (async) switch steps included,
not the HAProxy and app processes. They are counted in a control group of the bench's own
(CPUMeter): a fleet's switch steps run under async_wrapper, which detaches them from
ansible-playbook, so resource.getrusage(RUSAGE_CHILDREN) never sees their CPU (about 0.5 s a
node). Without a writable cgroup file system the bench falls back to RUSAGE_CHILDREN and says
so. idle is wall - CPU / cores: time the run waited instead of working.

It prints a table and writes it, with the machine it ran on, to docs/benchmarks.md
(`--output`). `--tiny` runs every case once with small sizes (tests/integration/test_bench.py).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
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
FULL = dict(reps=3, keys=10000, loop_keys=500, nodes=10, big_fleet=20, big=100000, budget=510)
TINY = dict(reps=1, keys=50, loop_keys=20, nodes=2, big_fleet=0, big=1000, budget=600)
MITOGEN = "mitogen==0.3.54"

# The seed's runbook as plain Ansible tasks: what a user writes without the collection.
HAND_WRITTEN = """\
- hosts: haproxy
  gather_facts: false
  vars:
    cli: "socat -t 5 stdio unix-connect:{{ release_socket }}"
    port: "{{ release_smoke_resolve.split(':')[1] }}"
  tasks:
    - name: show map
      ansible.builtin.shell: echo "show map {{ release_map }}" | {{ cli }}
      register: shown
      changed_when: false
    - name: show stat of the target backend
      ansible.builtin.shell: echo "show stat {{ to }} 4 -1" | {{ cli }}
      register: stat
      changed_when: false
    - name: smoke the current version
      ansible.builtin.uri:
        url: "http://127.0.0.1:{{ port }}/release"
        headers: {Host: release.test}
        return_content: true
      register: before
    - name: the current backend is live and the target has a server UP
      ansible.builtin.assert:
        that:
          - shown.stdout is search(' active ' ~ current ~ '$', multiline=true)
          - stat.stdout is search(',UP,')
          - before.content is search('version=' ~ current | replace('backend_', ''))
    - name: set map
      ansible.builtin.shell: echo "set map {{ release_map }} active {{ to }}" | {{ cli }}
      register: switched
      failed_when: switched.stdout | trim | length > 0
    - name: read back
      ansible.builtin.shell: echo "show map {{ release_map }}" | {{ cli }}
      register: readback
      changed_when: false
      failed_when: readback.stdout is not search(' active ' ~ to ~ '$', multiline=true)
    - name: smoke the new version
      ansible.builtin.uri:
        url: "http://127.0.0.1:{{ port }}/release"
        headers: {Host: release.test}
        return_content: true
      register: after
      failed_when: after.content is not search('version=' ~ to | replace('backend_', ''))
    - name: persist
      ansible.builtin.lineinfile:
        path: "{{ release_map }}"
        regexp: "^active "
        line: "active {{ to }}"
"""

PINGS = """\
- hosts: haproxy
  gather_facts: false
  tasks:
"""
PING_TASK = """\
    - name: ping {index}
      ansible.builtin.ping:
"""

EMPTY = """\
- hosts: haproxy
  gather_facts: false
  tasks: []
"""

# The interpreter of every lab node: logs each module process (its script's name) to
# $BENCH_MODULE_LOG, so a run's module runs are counted, not guessed.
INTERPRETER = """\
#!/bin/sh
if [ -n "$BENCH_MODULE_LOG" ]; then echo "${1##*/}" >> "$BENCH_MODULE_LOG"; fi
exec %s "$@"
"""

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


class CPUMeter(object):
    """CPU seconds of every process a case starts, those that detach from it included.

    A process started through `subprocess_options()` joins a control group of the bench's own,
    and so do all its descendants, whatever they do: async_wrapper double-forks the armed
    switch steps away from ansible-playbook, out of reach of RUSAGE_CHILDREN, but not out of
    their cgroup. cgroup v2 (`cpu.stat` usage_usec) or v1's cpuacct (`cpuacct.usage`); with
    neither writable (not root, no cgroup fs) it measures RUSAGE_CHILDREN, and `method` says so.
    """

    def __init__(self, name):
        self.path = self.usage_file = None
        self.method = "getrusage(RUSAGE_CHILDREN): the armed switch steps are not counted (no writable cgroup)"
        for root, usage_file, scale in self._hierarchies():
            path = os.path.join(root, name)
            try:
                os.mkdir(path)
                self._read(os.path.join(path, usage_file), scale)
            except OSError:
                continue
            self.path, self.usage_file, self.scale = path, os.path.join(path, usage_file), scale
            self.method = "a control group of its own (%s)" % ("cgroup v2" if usage_file == "cpu.stat" else "cgroup v1 cpuacct")
            break

    @staticmethod
    def _hierarchies():
        """(mount point, usage file, seconds per unit) of cgroup v2, then of v1's cpuacct."""
        found = []
        with open("/proc/mounts") as handle:
            for line in handle:
                fields = line.split()
                if len(fields) < 4:
                    continue
                if fields[2] == "cgroup2":
                    found.insert(0, (fields[1], "cpu.stat", 1e-6))
                elif fields[2] == "cgroup" and "cpuacct" in fields[3].split(","):
                    found.append((fields[1], "cpuacct.usage", 1e-9))
        return found

    @staticmethod
    def _read(usage_file, scale):
        with open(usage_file) as handle:
            text = handle.read()
        if usage_file.endswith("cpu.stat"):
            text = next(line.split()[1] for line in text.splitlines() if line.startswith("usage_usec "))
        return int(text.split()[0]) * scale

    def usage(self):
        if self.path is None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            return usage.ru_utime + usage.ru_stime
        return self._read(self.usage_file, self.scale)

    def subprocess_options(self):
        """subprocess keyword arguments that put the child (and so its descendants) in the group."""
        if self.path is None:
            return {}
        procs = os.path.join(self.path, "cgroup.procs")

        def join():
            with open(procs, "w") as handle:
                handle.write(str(os.getpid()))
        return dict(preexec_fn=join)

    def close(self):
        if self.path is not None:
            # A detached process may outlive its case by a moment: the group goes when it does.
            for _attempt in range(50):
                try:
                    os.rmdir(self.path)
                    return
                except OSError:
                    time.sleep(0.1)


class Bench(object):
    def __init__(self, sizes, workdir, mitogen_dir):
        self.sizes = sizes
        self.workdir = workdir
        self.mitogen_dir = mitogen_dir
        self.deadline = time.monotonic() + sizes["budget"]
        self.cores = os.cpu_count() or 1
        self.cpu = CPUMeter("bluegreen-bench-%d" % os.getpid())
        self.rows = []
        self.apps = {}
        self.envs = []
        self.module_log = os.path.join(workdir, "modules.log")
        self.interpreter = os.path.join(workdir, "python")
        with open(self.interpreter, "w") as handle:
            handle.write(INTERPRETER % sys.executable)
        os.chmod(self.interpreter, 0o755)
        self.cutover_modules = None  # module runs of the one-node cutover (the ping play's N)
        self.modules = []
        self.only = ""

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
        # Checks every 2 s: the nodes share four single-process apps, and at 20 nodes a 300 ms
        # interval is 270 checks a second on two cores already busy with the run's own module
        # processes; slow replies then mark servers DOWN and the run measures the lab, not the engine.
        env = HAProxyEnv(workdir=workdir, apps=self.apps, frontend_port=free_port(), stats_port=free_port(),
                         inter="2s")
        self.envs.append(env)
        env.start()
        env.wait_all_up()
        return env

    def stop(self):
        for env in self.envs:
            env.stop()
        for app in self.apps.values():
            app.stop()
        self.cpu.close()

    def inventory(self, nodes, group_vars=None):
        """The lab inventory, every node's interpreter the counting wrapper."""
        names = "-".join(os.path.basename(node.workdir) for node in nodes)
        path = os.path.join(self.workdir, "inventory-%s.ini" % names)
        write_inventory(path, nodes, group_vars)
        with open(path) as handle:
            text = handle.read().replace("ansible_python_interpreter=%s " % sys.executable,
                                         "ansible_python_interpreter=%s " % self.interpreter)
        with open(path, "w") as handle:
            handle.write(text)
        return path

    @staticmethod
    def live(node):
        """The `active` value of a node's map file: the engine persists it, so it is what is live."""
        with open(node.map_path) as handle:
            return next(line.split()[1] for line in handle if line.startswith("active "))

    def other(self, node):
        return "backend_blue" if self.live(node) == "backend_green" else "backend_green"

    # -- runners -------------------------------------------------------------

    def timeout(self):
        """Seconds a run may still take: the budget plus one minute, so the whole stays bounded."""
        return max(30.0, self.deadline + 60 - time.monotonic())

    def shell(self, script, *arguments):
        subprocess.run(["bash", "-c", script, "bench"] + [str(argument) for argument in arguments],
                       check=True, capture_output=True, text=True, timeout=self.timeout(),
                       **self.cpu.subprocess_options())

    def playbook(self, playbook, extra_vars, inventory="localhost,", forks=None, env=None):
        """Run ansible-playbook with the JSON callback; return the report (raise on failure).

        `self.modules` is then the list of module processes the run started on lab nodes."""
        handle, vars_file = tempfile.mkstemp(suffix=".json", dir=self.workdir)
        with os.fdopen(handle, "w") as stream:
            json.dump(extra_vars, stream)
        command = [ansible_bin("ansible-playbook"), "-i", inventory, "-c", "local", playbook, "-e", "@" + vars_file]
        if forks:
            command += ["--forks", str(forks)]
        if os.path.exists(self.module_log):
            os.unlink(self.module_log)
        run_env = dict(ansible_env(), BENCH_MODULE_LOG=self.module_log, **(env or {}))
        completed = subprocess.run(command, env=run_env, capture_output=True, text=True, cwd=REPO,
                                   timeout=self.timeout(), check=False, **self.cpu.subprocess_options())
        self.modules = []
        if os.path.exists(self.module_log):
            with open(self.module_log) as handle:
                self.modules = handle.read().split()
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

    def write_playbook(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def map_playbook(self, module):
        path = os.path.join(self.workdir, "%s.yml" % module)
        if not os.path.exists(path):
            self.write_playbook("%s.yml" % module, MAP_PLAYBOOK.format(module="bluegreen.haproxy.%s" % module))
        return path

    # -- measuring -----------------------------------------------------------

    def case(self, name, run, baseline=(), note="", nodes=1, max_reps=None):
        """Register a case: `run(rep)` switches once; it may return a dict of spread, late,
        modules (module runs per node) or refused (the engine's refusal, an expected result)."""
        if self.only and not any(part in name for part in self.only.split(",")):
            return
        baselines = (baseline,) if isinstance(baseline, str) else tuple(baseline)
        self.rows.append(dict(name=name, run=run, baselines=baselines, note=note, error=None, seconds=[], cpu=[],
                              spreads=[], late=[], modules=[], refused=None, nodes=nodes,
                              max_reps=max_reps or self.sizes["reps"]))

    def measure_all(self):
        """Repetitions round-robin over the cases, so every case gets a run before the budget ends."""
        for rep in range(self.sizes["reps"]):
            for row in self.rows:
                if row["error"] or len(row["seconds"]) < rep or rep >= row["max_reps"]:
                    continue
                if time.monotonic() > self.deadline:
                    if not row["seconds"]:
                        row["error"] = "skipped: time budget spent"
                    continue
                started = time.monotonic()
                usage = self.cpu.usage()
                try:
                    extra = row["run"](rep) or {}
                except subprocess.TimeoutExpired:
                    row["error"] = "stopped: over the time budget"
                    continue
                except Exception as exc:  # a failing case is reported, the others still run
                    row["error"] = "failed: %s" % str(exc).splitlines()[0][:300]
                    continue
                row["seconds"].append(time.monotonic() - started)
                row["cpu"].append(self.cpu.usage() - usage)
                for key, values in (("spread", row["spreads"]), ("late", row["late"]), ("modules", row["modules"])):
                    if extra.get(key) is not None:
                        values.append(extra[key])
                row["refused"] = extra.get("refused") or row["refused"]
                print("rep %d: %s %.3fs, %.2fs CPU" % (rep + 1, row["name"], row["seconds"][-1], row["cpu"][-1]),
                      flush=True)
        for row in self.rows:
            median = statistics.median(row["seconds"]) if row["seconds"] else None
            cpu = statistics.median(row["cpu"]) if row["cpu"] else None
            idle = [wall - used / self.cores for wall, used in zip(row["seconds"], row["cpu"])]
            row.update(runs=len(row["seconds"]), median=median, cpu_median=cpu,
                       idle=statistics.median(idle) if idle else None,
                       spread=statistics.median(row["spreads"]) if row["spreads"] else None)
            if 0 < row["runs"] < row["max_reps"] and not row["error"]:
                row["note"] = (row["note"] + "; " if row["note"] else "") + "time budget: %d of %d runs" % (
                    row["runs"], row["max_reps"])
            if row["late"] and max(row["late"]):
                row["note"] = (row["note"] + "; " if row["note"] else "") + (
                    "nodes later than release_max_spread per run: %s" % ", ".join(str(late) for late in row["late"]))
            if row["refused"]:
                row["note"] = (row["note"] + "; " if row["note"] else "") + "refused: %s" % row["refused"]

    def median_of(self, name):
        for row in self.rows:
            if row["name"] == name:
                return row["median"]
        return None

    HEADER = ("| case | median (s) | runs | ratio | CPU (s) | CPU/node (s) | idle (s) | spread | module runs | note |\n"
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")

    def format_row(self, row):
        def seconds(value):
            return "%.3f" % value if value is not None else ""

        median = seconds(row["median"]) or "-"
        ratios = []
        for baseline in row["baselines"]:
            base = self.median_of(baseline)
            if base and row["median"]:
                ratios.append("%.2fx %s" % (row["median"] / base, re.sub(r" \([^)]*\)", "", baseline)))
        cpu = row["cpu_median"]
        per_node = seconds(cpu / row["nodes"]) if cpu is not None and row["nodes"] > 1 else ""
        spread = "%.0f ms" % (row["spread"] * 1000) if row["spread"] is not None else ""
        modules = ("%g" % statistics.median(row["modules"])) if row["modules"] else ""
        note = "; ".join(part for part in (row["note"], row["error"]) if part)
        return "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row["name"], median, row["runs"], "; ".join(ratios), seconds(cpu), per_node, seconds(row["idle"]),
            spread, modules, note)

    # -- cases ---------------------------------------------------------------

    def run(self):
        sizes = self.sizes
        targets = ("backend_green", "backend_blue")
        self.start_apps()
        # Each case has its own nodes (the fleets' forks cases share theirs: every cutover
        # switches to the backend its first node's map file does not hold), so every
        # repetition really switches from a known state.
        runbook_node = self.node("runbook")
        hand_node = self.node("hand")
        bulk = self.node("bulk", sizes["keys"])
        cutover_node = self.node("cutover")
        fleet = [self.node("fleet%d" % index) for index in range(sizes["nodes"])]
        big_fleet = [self.node("bigfleet%d" % index) for index in range(sizes["big_fleet"])]
        big = self.node("big", sizes["big"])
        mitogen_nodes = [self.node("mitogen%d" % index) for index in range(3)]

        def map_run(module, env, **variables):
            return self.playbook(self.map_playbook(module), dict(socket=env.socket, map_name=env.map_path, **variables))

        def bulk_entries(rep):
            return {"svc%05d.example.com" % index: "backend_bulk_%d" % rep for index in range(sizes["keys"])}

        def modules_per_node(nodes):
            return len(self.modules) / float(len(nodes))

        def hand_written(rep):
            frm, to = self.live(hand_node), self.other(hand_node)
            self.playbook(self.write_playbook("hand-written.yml", HAND_WRITTEN), dict(current=frm, to=to),
                          inventory=self.inventory([hand_node]))
            return dict(modules=modules_per_node([hand_node]))

        def pings(rep):
            count = int(self.cutover_modules or 7)
            text = PINGS + "".join(PING_TASK.format(index=index + 1) for index in range(count))
            self.playbook(self.write_playbook("pings.yml", text), {}, inventory=self.inventory([cutover_node]))
            return dict(modules=modules_per_node([cutover_node]))

        def empty(rep):
            self.playbook(self.write_playbook("empty.yml", EMPTY), {}, inventory=self.inventory([cutover_node]))

        def one_node(rep):
            result = self.cutover([cutover_node])
            if self.cutover_modules is None:
                self.cutover_modules = result["modules"]
            return result

        runbook = "shell runbook (socat, curl, sed), 1 node"
        self.case(runbook, lambda rep: self.shell(RUNBOOK, runbook_node.socket, runbook_node.map_path,
                                                  runbook_node.frontend_port, self.live(runbook_node),
                                                  self.other(runbook_node)))
        hand = "hand-written playbook (8 tasks, 7 module runs), 1 node"
        self.case(hand, hand_written, baseline=runbook, note="the runbook as shell, uri, assert, lineinfile tasks")
        one = "cutover playbook, 1 node"
        ping = "ping play, one ping task per module run of the 1-node cutover, 1 node"
        self.case(one, one_node, baseline=(hand, runbook, ping))
        self.case(ping, pings, baseline=hand, note="Ansible's floor for the cutover's module runs")
        self.case("empty play, 1 node", empty, note="start-up alone")
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
        self.case("cutover playbook, 1 node, %d-entry map" % (sizes["big"] + 1),
                  lambda rep: self.cutover([big]), baseline=one)
        self.mitogen_cases(mitogen_nodes, one)
        # The most expensive cases last: on a loaded machine the budget ends there.
        for nodes, max_reps in ((fleet, None), (big_fleet, 1)):
            for forks in sorted(set((5, len(nodes)))) if nodes else ():
                self.case("cutover playbook, %d nodes, forks %d" % (len(nodes), forks),
                          lambda rep, nodes=nodes, forks=forks: self.cutover(nodes, forks=forks, fleet=True),
                          baseline=one, nodes=len(nodes), max_reps=max_reps,
                          note="release_spread_action=warn" + (", 1 run" if max_reps else ""))
        self.measure_all()

    def mitogen_cases(self, nodes, one):
        """The cutover under mitogen_linear (installed here, outside the test venv): 1 and 2 nodes."""
        names = ("Mitogen (mitogen_linear) cutover playbook, 1 node",
                 "Mitogen (mitogen_linear) cutover playbook, 2 nodes")
        strategies = os.path.join(self.mitogen_dir, "ansible_mitogen", "plugins", "strategy")
        if not os.path.isdir(strategies):
            completed = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet",
                                        "--disable-pip-version-check", "--target", self.mitogen_dir, MITOGEN],
                                       capture_output=True, text=True, timeout=180, check=False)
            if completed.returncode != 0 or not os.path.isdir(strategies):
                reason = (completed.stderr.strip().splitlines() or ["pip failed"])[-1][:200]
                for name in names:
                    self.case(name, lambda rep: None, note="not measured: %s could not be installed (%s)"
                              % (MITOGEN, reason), max_reps=0)
                return
        env = dict(ANSIBLE_STRATEGY_PLUGINS=strategies, ANSIBLE_STRATEGY="mitogen_linear")

        def run(rep, selected):
            try:
                return self.cutover(selected, env=env)
            except RuntimeError as exc:
                if "linear strategy" not in str(exc):
                    raise
                message = str(exc).split(": ", 1)[-1].strip("[]'\"")
                return dict(refused=message[:200] + ("..." if len(message) > 200 else ""))

        self.case(names[0], lambda rep: run(rep, nodes[:1]), baseline=one, note=MITOGEN)
        self.case(names[1], lambda rep: run(rep, nodes[1:3]), nodes=2, note=MITOGEN)

    def cutover(self, nodes, forks=None, env=None, fleet=False):
        """One cutover to the backend the first node does not hold: {spread, late, modules}.

        No release_report_file (writing it is one more module run, which a user who does not ask
        for it does not pay): the fleet's spread is read from the run's REPORT message."""
        target = self.other(nodes[0])
        group_vars = {"release_smoke_url": "http://release.test/release", "release_health_wait": 10,
                      "release_smoke_requests": 6}
        if fleet:
            # A late node is measured (the spread column), not a failed run that rolls back.
            group_vars["release_spread_action"] = "warn"
        report = self.playbook(CUTOVER, {"release_target": target},
                               inventory=self.inventory(nodes, group_vars), forks=forks, env=env)
        result = dict(modules=len(self.modules) / float(len(nodes)) if not env else None)
        switch = {}
        for play in report["plays"]:
            for task in play["tasks"]:
                for value in task["hosts"].values():
                    message = value.get("msg") if isinstance(value, dict) else None
                    if isinstance(message, dict) and "switch" in message and "nodes" in message:
                        switch = message["switch"] or {}
        if len(nodes) > 1 and switch.get("spread_ms") is not None:
            result.update(spread=switch["spread_ms"] / 1000.0, late=len(switch.get("late") or {}))
        return result


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


def targets(bench):
    """Issue 14's targets, each judged from this run's rows: [(target, measured, met)] (None: not measured)."""
    rows = dict((row["name"], row) for row in bench.rows)
    names = ("cutover playbook, 1 node", "hand-written playbook (8 tasks, 7 module runs), 1 node",
             "shell runbook (socat, curl, sed), 1 node")
    one, hand, shell = (rows.get(name) for name in names)
    found = []

    def ratio(row, base):
        return row["median"] / base["median"] if row and base and row.get("median") and base.get("median") else None

    value = ratio(one, hand)
    found.append(("one-node cutover <= 0.7x the hand-written playbook",
                  "%.2fx" % value if value else None, value is not None and value <= 0.7))
    value = ratio(one, shell)
    found.append(("one-node cutover <= 50x the shell runbook", "%.0fx" % value if value else None,
                  value is not None and value <= 50))
    runs = statistics.median(one["modules"]) if one and one["modules"] else None
    found.append(("<= 3 module runs per node (one node)", "%g" % runs if runs is not None else None,
                  runs is not None and runs <= 3))
    # The big map and the bulk switch keep their ratios (rows named by their sizes).
    for prefix, base, limit, label in (
            ("cutover playbook, 1 node, ", one, 1.1, "cutover on a %s <= 1.1x the plain cutover"),
            ("haproxy_map entries, ", rows.get("haproxy_map, one key"), 1.7, "haproxy_map entries, %s <= 1.7x one key")):
        row = next((row for row in bench.rows if row["name"].startswith(prefix)), None)
        value = ratio(row, base)
        size = row["name"][len(prefix):] if row else "?"
        found.append((label % size, "%.2fx" % value if value else None, value is not None and value <= limit))
    one_cpu = one["cpu_median"] if one else None
    for row in bench.rows:
        if not row["name"].startswith("cutover playbook, ") or " forks " not in row["name"] or not row["median"]:
            continue
        label = row["name"][len("cutover playbook, "):]
        if row["spread"] is not None:
            found.append(("%s: every node switches within 100 ms" % label, "%.0f ms" % (row["spread"] * 1000),
                          row["spread"] <= 0.1))
        if one_cpu and row["cpu_median"]:
            per_node = row["cpu_median"] / row["nodes"]
            found.append(("%s: CPU per node <= 1.2x one node's" % label, "%.2fx" % (per_node / one_cpu),
                          per_node <= 1.2 * one_cpu))
        if row["cpu_median"]:
            bound = 1.15 * row["cpu_median"] / bench.cores + 2
            found.append(("%s: wall <= 1.15x CPU/cores + 2 s" % label, "%.1f s (bound %.1f s)" % (row["median"], bound),
                          row["median"] <= bound))
    return found


def render(bench, info, started, finished, load_before, load_after, tiny):
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (scripts/bench.py)%s. Everything on loopback against real HAProxy "
        "processes; the median of %d run(s) per case, targets alternating so every run switches."
        % (" in --tiny mode" if tiny else "", bench.sizes["reps"]),
        "",
    ] + Bench.HEADER.splitlines()
    lines += [bench.format_row(row) for row in bench.rows]
    lines += ["", "## Targets (issue 14)", "", "| target | measured | met |", "| --- | --- | --- |"]
    lines += ["| %s | %s | %s |" % (target, measured or "not measured", "yes" if met else "**no**")
              for target, measured, met in targets(bench)]
    lines += [
        "",
        "Ratios compare the case with the named ones, measured in the same run. CPU is the median CPU",
        "seconds (user + system) of the case's whole process tree, the armed switch steps included",
        "(measured with %s); CPU/node divides it by the nodes;" % bench.cpu.method,
        "idle is wall - CPU / %d cores (time spent waiting, not working); spread is the last minus the"
        % info["cores"],
        "first node's switch (the run's REPORT message); module runs are per node, counted from the module",
        "processes each run started. One node runs the release in one module run (a fleet of one",
        "has no gate to wait at: release_step step single), a fleet's nodes in three each plus the",
        "collection of the armed switch: \"CPU per node <= 1.2x one node's\" compares the two paths.",
        "The numbers depend heavily on the machine's load: the ratios are the part to compare between runs.",
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
    parser.add_argument("--mitogen-dir", default=os.path.join(tempfile.gettempdir(), "bluegreen-bench-mitogen"),
                        help="where %s is installed (pip --target) for the Mitogen rows, outside every venv" % MITOGEN)
    parser.add_argument("--only", default="",
                        help="run only the cases whose name contains one of these comma-separated texts")
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
    bench = Bench(sizes, workdir, args.mitogen_dir)
    bench.only = args.only
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
    print("\n".join(Bench.HEADER.splitlines() + [bench.format_row(row) for row in bench.rows]))
    print("\nwritten to %s" % args.output)
    return 1 if any(row["error"] and row["error"].startswith("failed") for row in bench.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
