"""What the Molecule scenarios' testinfra tests share (molecule/<scenario>/tests/conftest.py
imports it).

Molecule's testinfra verifier runs pytest in the scenario directory with
`--connection=ansible --ansible-inventory=<the scenario's inventory>`; testinfra's `host`
fixture then reaches each container with `docker exec`. On top of it:

  Node        one HAProxy node through its testinfra host: Runtime API and master CLI commands
              (tests/support/runtime_client.py, copied onto the node and run by its python3),
              the map at runtime and on disk, HTTP through its own frontend (curl), a reload.
  nodes()     {inventory name: Node} of an inventory group.
  haproxy_check()  `haproxy -c` on a node, exit 0 or the test fails.
  playbook()  ansible-playbook against the scenario's inventory (the collection's playbooks,
              or a scenario playbook such as converge.yml), as a release owner or AWX runs it.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass

import testinfra
from testinfra.utils.ansible_runner import AnsibleRunner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLAYBOOKS = os.path.join(REPO, "playbooks")
RUNTIME_CLIENT = os.path.join(REPO, "tests", "support", "runtime_client.py")
# Where the client goes on a node.
NODE_CLIENT = "/usr/local/lib/bluegreen-tests/runtime_client.py"

ADMIN_SOCKET = "/run/haproxy/admin.sock"
MASTER_SOCKET = "/run/haproxy-master.sock"
MAP = "/etc/haproxy/maps/bluegreen.map"
CONFIG = "/etc/haproxy/haproxy.cfg"

sys.path.insert(0, os.path.dirname(RUNTIME_CLIENT))
import runtime_client  # noqa: E402  (tests/support, stdlib only)


def ephemeral_dir():
    path = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY")
    if not path:
        raise RuntimeError("MOLECULE_EPHEMERAL_DIRECTORY is not set: run these tests through "
                           "`molecule verify` / `molecule test` (scripts/molecule.sh)")
    return path


def inventory():
    return os.path.join(ephemeral_dir(), "inventory")


def logs_dir():
    """Where the playbook runs of the tests leave their output (Molecule's ephemeral directory
    goes away with `destroy`): .tmp/molecule/test-logs/<scenario>-<image tag>/."""
    path = os.path.join(REPO, ".tmp", "molecule", "test-logs", "%s-%s" % (
        os.environ.get("MOLECULE_SCENARIO_NAME", "scenario"), os.environ.get("HAPROXY_IMAGE_TAG", "bookworm")))
    os.makedirs(path, exist_ok=True)
    return path


def wait_for(predicate, timeout=30.0, interval=0.2, what="condition"):
    """Poll predicate until it returns something truthy (returned), or fail after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = predicate()
        except (AssertionError, OSError, ValueError, RuntimeError) as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %ss waiting for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


@dataclass
class Node:
    """One HAProxy node, seen from outside the collection."""

    name: str
    host: object  # testinfra Host

    # --- the shared Runtime API client, on the node ----------------------------------------
    def install_client(self):
        with open(RUNTIME_CLIENT, "rb") as handle:
            payload = base64.b64encode(handle.read()).decode()
        self.host.run_expect([0], "mkdir -p %s && echo %s | base64 -d > %s"
                             % (shlex.quote(os.path.dirname(NODE_CLIENT)), payload, shlex.quote(NODE_CLIENT)))
        return self

    def cli(self, command, socket=ADMIN_SOCKET, parse=None, retry_for=10.0, timeout=10.0):
        """One Runtime API (or master CLI) command on the node: the reply, or parsed JSON."""
        argv = ["python3", NODE_CLIENT, "--socket", socket, "--retry-for", str(retry_for),
                "--timeout", str(timeout)]
        if parse:
            argv += ["--json", parse]
        result = self.host.run(" ".join(shlex.quote(word) for word in argv + [command]))
        if result.rc != 0:
            raise RuntimeError("%s: %r failed: %s" % (self.name, command, result.stderr.strip()))
        return json.loads(result.stdout) if parse else result.stdout

    def runtime_map(self, path=MAP):
        return self.cli("show map %s" % path, parse="map")

    def disk_map(self, path=MAP):
        entries = {}
        for line in self.host.file(path).content_string.splitlines():
            words = line.split(None, 1)
            if len(words) == 2 and not words[0].startswith("#"):
                entries.setdefault(words[0], words[1].strip())
        return entries

    def processes(self):
        return self.cli("show proc", socket=MASTER_SOCKET, parse="proc")

    def servers(self):
        return self.cli("show stat", parse="servers")

    def wait_servers(self, status, names, timeout=30.0):
        def ready():
            current = self.servers()
            wrong = {name: current.get(name) for name in names if current.get(name) != status}
            assert not wrong, wrong
            return True
        wait_for(ready, timeout, what="%s: %s %s" % (self.name, ", ".join(names), status))

    def reload(self, timeout=30.0):
        """A plain master CLI reload (what `systemctl reload` sends): HAProxy re-reads every
        file, the map file included. Waits until a new worker serves the admin socket."""
        before = self.processes()["workers"]
        self.cli("reload", socket=MASTER_SOCKET, timeout=timeout)

        def new_worker():
            after = self.processes()["workers"]
            pid = runtime_client.info(self.cli("show info")).get("Pid")
            return after if set(after) - set(before) and int(pid) in set(after) - set(before) else None
        return wait_for(new_worker, timeout, what="%s: a new worker after the reload" % self.name)

    # --- HTTP through the node's own frontend ------------------------------------------------
    def get(self, url="http://127.0.0.1/release", host_header=None, count=1):
        """count requests (a new connection each) with curl on the node: [(status, body)]."""
        argv = ["curl", "-sS", "-k", "--max-time", "5", "-o", "-", "-w", r"\n%{http_code}"]
        if host_header:
            argv += ["-H", "Host: %s" % host_header]
        answers = []
        for dummy in range(count):
            result = self.host.run(" ".join(shlex.quote(word) for word in argv + [url]))
            body, _newline, status = result.stdout.rpartition("\n")
            answers.append((int(status) if status.isdigit() and result.rc == 0 else None,
                            body.strip() if result.rc == 0 else result.stderr.strip()))
        return answers

    def answers(self, count=4, **kwargs):
        """The distinct answers of count requests, e.g. {(200, "version=blue")}."""
        return set(self.get(count=count, **kwargs))


def haproxy_check(host, config=CONFIG):
    """`haproxy -c -f config` on the node must exit 0; HAProxy's messages are in the failure.
    (testinfra's host.run_test() accepts exit status 0 OR 1, and `haproxy -c` exits 1 on an
    invalid configuration: a check through it could never fail.)"""
    return host.run_expect([0], "haproxy -c -f %s" % shlex.quote(config))


def unix_socket_listening(host, path):
    """Whether a process listens on the UNIX socket path. HAProxy binds "<path>.<pid>.tmp" and
    renames it, so `ss` (and testinfra's host.socket) knows it by the temporary name."""
    listed = host.check_output("ss --unix --listening --numeric --no-header | awk '{print $5}'")
    return host.file(path).is_socket and any(
        name == path or name.startswith(path + ".") for name in listed.split())


def nodes(group):
    """{inventory name: Node} of an inventory group, each with the runtime client installed."""
    runner = AnsibleRunner(inventory())
    found = {}
    for name in sorted(runner.get_hosts(group)):
        found[name] = Node(name, testinfra.get_host("ansible://%s" % name, ansible_inventory=inventory())).install_client()
    return found


# --- Ansible runs ----------------------------------------------------------------------------
def ansible_env(**extra):
    """The verifier's environment (Molecule's), with this checkout's collections first."""
    env = dict(os.environ)
    paths = [os.path.join(REPO, ".collections")]
    paths += [p for p in env.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep) if p]
    paths.append(sysconfig.get_paths()["purelib"])
    env.update(
        ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(dict.fromkeys(paths)),
        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="false",
        ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )
    env.update(extra)
    return env


@dataclass
class Run:
    playbook: str
    rc: int
    output: str
    seconds: float
    report: dict

    def __str__(self):
        tail = "\n".join(self.output.splitlines()[-80:])
        return "%s: rc=%d after %.1fs\n%s" % (self.playbook, self.rc, self.seconds, tail)


def playbook(path, extra_vars=None, limit=None, log_name=None, report=False):
    """ansible-playbook PATH (a file under playbooks/ when relative and found there) against the
    scenario's inventory. With report=True, asks the release engine for its report file
    (release_report_file) and returns it parsed in Run.report ({} if none was written)."""
    if not os.path.isabs(path):
        path = os.path.join(PLAYBOOKS, path) if os.path.exists(os.path.join(PLAYBOOKS, path)) else os.path.abspath(path)
    extra_vars = dict(extra_vars or {})
    logs = logs_dir()
    base = log_name or os.path.basename(path).rsplit(".", 1)[0]
    report_file = os.path.join(logs, "%s.report.json" % base)
    if report:
        if os.path.exists(report_file):
            os.remove(report_file)
        extra_vars["release_report_file"] = report_file
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", inventory(), path]
    if extra_vars:
        argv += ["-e", json.dumps(extra_vars)]
    if limit:
        argv += ["--limit", limit]
    started = time.monotonic()
    completed = subprocess.run(argv, env=ansible_env(), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    seconds = time.monotonic() - started
    with open(os.path.join(logs, "%s.log" % base), "w") as handle:
        handle.write("$ %s\n\n%s" % (" ".join(shlex.quote(a) for a in argv), completed.stdout))
    parsed = {}
    if report and os.path.exists(report_file):
        with open(report_file) as handle:
            parsed = json.load(handle)
    return Run(os.path.relpath(path, REPO), completed.returncode, completed.stdout, seconds, parsed)
