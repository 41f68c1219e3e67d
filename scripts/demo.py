"""`make demo`: a blue-green release, end to end, on this machine.

Runs the collection's own playbooks the way a release owner would: status,
cutover to green (health gate, compare-and-set, verify, smoke, persist), a
reload to show the switch survives it, a cutover that fails and rolls back by
itself, and a rollback to blue. Everything it starts, it stops.

Where it runs:
  containers (default when a Docker engine answers `docker info` and the images
      exist or scripts/build-images.sh can build them): two HAProxy containers
      converged with the bluegreen.haproxy.haproxy role, blue1 blue2 green1
      green2 containers behind both - the Molecule scenario molecule/release
      (`molecule converge`, then `molecule destroy`), containers named demo-*;
  loopback (the fallback): two HAProxy processes on loopback, each with blue
      and green releases behind it.

  scripts/demo.py [--containers | --loopback] [--image bookworm|trixie] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from lab import REPO, App, HAProxyEnv, ansible_bin, free_port, write_inventory  # noqa: E402

PLAYBOOKS = os.path.join(REPO, "playbooks")


def say(text):
    print("\n\033[1m== %s\033[0m" % text, flush=True)


def start_node(workdir, colors):
    os.makedirs(workdir, exist_ok=True)
    apps = {name: App(name=name, color=color, port=free_port(), workdir=workdir).start()
            for name, color in colors.items()}
    node = HAProxyEnv(workdir=workdir, apps=apps, frontend_port=free_port(), stats_port=free_port(),
                      inter="500ms").start()
    node.wait_all_up()
    return node


def playbook(name, inventory, extra_vars=None, expect_failure=False):
    command = [ansible_bin("ansible-playbook"), "-i", inventory, os.path.join(PLAYBOOKS, name)]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    print("$ ansible-playbook -i inventory playbooks/%s%s" % (
        name, " -e '%s'" % json.dumps(extra_vars) if extra_vars else ""), flush=True)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"),
               ANSIBLE_DISPLAY_SKIPPED_HOSTS="false",
               ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
    result = subprocess.run(command, env=env, cwd=REPO, check=False)
    if (result.returncode != 0) != expect_failure:
        raise SystemExit("demo: playbooks/%s exited %d, which was not expected" % (name, result.returncode))


# The watch window judges real users' requests only; the demo sends none, so without
# release_insufficient_traffic=pass the default (fail) would roll the cutover back.
DEMO_CUTOVER = {"release_target": "backend_green", "release_watch_seconds": 3, "release_insufficient_traffic": "pass"}


def traffic(nodes):
    for index, node in enumerate(nodes, start=1):
        print("   node%d  frontend 127.0.0.1:%d answers %s   (map: runtime %s)"
              % (index, node.frontend_port, node.get()[1].strip(), node.map_value()))


def loopback_demo():
    workdir = tempfile.mkdtemp(prefix="bluegreen-demo-")
    seed = {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "green"}
    nodes = []
    try:
        say("Starting two HAProxy nodes on loopback, each with blue1 blue2 green1 green2 behind it")
        nodes = [start_node(os.path.join(workdir, "node%d" % index), seed) for index in (1, 2)]
        inventory = write_inventory(os.path.join(workdir, "inventory.ini"), nodes, {
            "release_smoke_url": "http://release.example.test/release", "release_smoke_requests": 10})
        traffic(nodes)

        say("status: what is live where")
        playbook("status.yml", inventory)

        say("cutover to green: gate on health, switch every node, verify, smoke, watch, persist "
            "(a demo has no users: too little traffic to judge is accepted, and the summary says so)")
        playbook("cutover.yml", inventory, DEMO_CUTOVER)
        traffic(nodes)

        say("reload every HAProxy: the map file says green too, so green stays live")
        for node in nodes:
            node.reload()
        traffic(nodes)

        say("a bad release: node2's blue2 now answers green, then a cutover to blue must roll back by itself")
        nodes[1].apps["blue2"].stop()
        nodes[1].apps["blue2"] = App(name="blue2", color="green", port=nodes[1].apps["blue2"].port,
                                     workdir=nodes[1].workdir).start()
        playbook("cutover.yml", inventory, {"release_target": "backend_blue"}, expect_failure=True)
        traffic(nodes)

        say("fix node2's blue2, then roll back to blue with rollback.yml")
        nodes[1].apps["blue2"].stop()
        nodes[1].apps["blue2"] = App(name="blue2", color="blue", port=nodes[1].apps["blue2"].port,
                                     workdir=nodes[1].workdir).start()
        playbook("rollback.yml", inventory)
        traffic(nodes)
        say("done: every node runs blue, at runtime and on disk")
    finally:
        for node in nodes:
            node.stop()
            for app in node.apps.values():
                app.stop()


# --- containers ---------------------------------------------------------------------------
# The Molecule scenario molecule/release: platforms <name>-lb1-<tag>, <name>-lb2-<tag> (group
# `haproxy`, HAProxy converged by the role) and the app containers; the release inputs are in
# its inventory (molecule/release/group_vars/haproxy.yml). Each node carries the tests'
# Runtime API client (tests/support/runtime_client.py), used here through `docker exec`.
SCENARIO = "release"
DEMO_NAME = "demo"


def docker_answers():
    if not shutil.which("docker"):
        return False, "no docker command"
    try:
        result = subprocess.run(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                universal_newlines=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        return False, "docker info: %s" % exc
    if result.returncode != 0:
        return False, "docker info: %s" % (result.stderr.strip().splitlines() or ["exit %d" % result.returncode])[-1]
    return True, ""


def images_ready(tag):
    images = ["bluegreen/haproxy-node:%s" % tag, "bluegreen/app:latest"]
    missing = [image for image in images
               if subprocess.run(["docker", "image", "inspect", image], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, check=False).returncode != 0]
    if not missing:
        return True, ""
    say("building the container images (%s missing): scripts/build-images.sh" % ", ".join(missing))
    result = subprocess.run([os.path.join(REPO, "scripts", "build-images.sh")], cwd=REPO, check=False)
    if result.returncode != 0:
        return False, "scripts/build-images.sh exited %d" % result.returncode
    return True, ""


class Fleet:
    """The demo's containers, through Molecule and `docker exec`."""

    def __init__(self, tag, workdir):
        self.tag = tag
        self.workdir = workdir
        self.ephemeral = os.path.join(workdir, "molecule-%s" % tag)
        self.inventory = os.path.join(self.ephemeral, "inventory")
        self.nodes = ["%s-lb%d-%s" % (DEMO_NAME, index, tag) for index in (1, 2)]
        self.step = 0
        os.makedirs(self.ephemeral, exist_ok=True)
        collections = [os.path.join(REPO, ".collections"), sysconfig.get_paths()["purelib"]]
        self.env = dict(os.environ,
                        HAPROXY_IMAGE_TAG=tag,
                        BLUEGREEN_RELEASE_NAME=DEMO_NAME,
                        MOLECULE_EPHEMERAL_DIRECTORY=self.ephemeral,
                        ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(collections),
                        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
                        ANSIBLE_PIPELINING="True",
                        ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1",
                        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))

    def molecule(self, action):
        self.step += 1
        log = os.path.join(self.workdir, "%d-molecule-%s.log" % (self.step, action))
        started = time.monotonic()
        print("$ molecule %s -s %s   (log: %s)" % (action, SCENARIO, os.path.relpath(log, REPO)), flush=True)
        with open(log, "w") as handle:
            result = subprocess.run([ansible_bin("molecule"), action, "-s", SCENARIO], cwd=REPO, env=self.env,
                                    stdout=handle, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            with open(log) as handle:
                sys.stdout.write("".join(handle.readlines()[-60:]))
            raise SystemExit("demo: molecule %s exited %d (log: %s)" % (action, result.returncode, log))
        print("   done in %ds" % (time.monotonic() - started), flush=True)

    # The tests' Runtime API client (tests/support/runtime_client.py), which the scenario's
    # prepare.yml installs on every node, run there with `docker exec`.
    CLIENT = "/usr/local/lib/bluegreen-tests/runtime_client.py"
    ADMIN_SOCKET = "/run/haproxy/admin.sock"
    MASTER_SOCKET = "/run/haproxy-master.sock"
    MAP = "/etc/haproxy/maps/bluegreen.map"

    def docker_exec(self, node, *argv):
        result = subprocess.run(["docker", "exec", node] + list(argv), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, check=False)
        if result.returncode != 0:
            raise SystemExit("demo: %s on %s failed: %s" % (" ".join(argv), node, result.stderr.strip()))
        return result.stdout

    def runtime(self, node, command, socket=ADMIN_SOCKET, parse=None):
        """One Runtime API (or master CLI) command on the node; retried while HAProxy reloads."""
        argv = ["python3", self.CLIENT, "--socket", socket, "--retry-for", "10"]
        reply = self.docker_exec(node, *(argv + (["--json", parse] if parse else []) + [command]))
        return json.loads(reply) if parse else reply

    def traffic(self):
        for node in self.nodes:
            body = self.docker_exec(node, "curl", "-sS", "--max-time", "5", "-H", "Host: release.example.test",
                                    "http://127.0.0.1/release").strip()
            runtime = self.runtime(node, "show map %s" % self.MAP, parse="map").get("active")
            disk = self.docker_exec(node, "sed", "-n", "s/^active[ \t]*//p", self.MAP).strip()
            print("   %s  frontend :80 answers %s   (map: runtime %s, disk %s)" % (node, body, runtime, disk),
                  flush=True)

    def reload(self, node, timeout=30.0):
        """A plain master CLI reload (what `systemctl reload` sends); waits for the new worker."""
        before = self.runtime(node, "show proc", socket=self.MASTER_SOCKET, parse="proc")["workers"]
        self.runtime(node, "reload", socket=self.MASTER_SOCKET)
        deadline = time.monotonic() + timeout
        while True:
            workers = self.runtime(node, "show proc", socket=self.MASTER_SOCKET, parse="proc")["workers"]
            pid = self.runtime(node, "show info", parse="info").get("Pid")
            if pid and int(pid) in set(workers) - set(before):
                return
            if time.monotonic() >= deadline:
                raise SystemExit("demo: no new HAProxy worker on %s %ds after the reload" % (node, timeout))
            time.sleep(0.2)

    def playbook(self, name, extra_vars=None, expect_failure=False):
        report = os.path.join(self.workdir, "report.json")
        if os.path.exists(report):
            os.remove(report)
        shown = dict(extra_vars or {})
        extra = dict(shown, release_report_file=report) if name != "status.yml" else shown
        command = [ansible_bin("ansible-playbook"), "-i", self.inventory, os.path.join(PLAYBOOKS, name),
                   "-e", json.dumps(extra)]
        print("$ ansible-playbook -i inventory playbooks/%s%s" % (
            name, " -e '%s'" % json.dumps(shown) if shown else ""), flush=True)
        env = dict(self.env, ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
        result = subprocess.run(command, env=env, cwd=REPO, check=False)
        if (result.returncode != 0) != expect_failure:
            raise SystemExit("demo: playbooks/%s exited %d, which was not expected" % (name, result.returncode))
        if os.path.exists(report):
            with open(report) as handle:
                nodes = json.load(handle)["nodes"]
            print("   REPORT  (release_report_file)")
            for node, summary in sorted(nodes.items()):
                smoke = ", ".join("%s %s/%s" % (phase, counts.get("passed"), counts.get("failed"))
                                  for phase, counts in sorted((summary.get("smoke") or {}).items()))
                print("   %s  %-11s runtime %-13s disk %-13s smoke passed/failed: %s%s"
                      % (node, summary.get("outcome"), summary.get("live_runtime"), summary.get("live_disk"),
                         smoke or "-", "   failures: %s" % "; ".join(summary["failures"])
                         if summary.get("failures") else ""), flush=True)

    def point(self, node, server, at):
        """Point one server of one node at another app container (Runtime API `set server addr`)."""
        address = self.docker_exec(node, "getent", "ahostsv4", at).split()[0]
        self.runtime(node, "set server %s addr %s port 8080" % (server, address))


def containers_demo(tag, keep):
    workdir = os.path.join(REPO, ".tmp", "demo")
    os.makedirs(workdir, exist_ok=True)
    fleet = Fleet(tag, workdir)
    try:
        version = {"bookworm": "2.6", "trixie": "3.0"}.get(tag, tag)
        say("Starting the fleet in containers: %s (HAProxy %s), each converged with the haproxy role, "
            "blue1 blue2 green1 green2 behind both" % (" and ".join(fleet.nodes), version))
        fleet.molecule("destroy")
        fleet.molecule("converge")
        fleet.traffic()

        say("status: what is live where")
        fleet.playbook("status.yml")

        say("cutover to green: gate on health, switch every node, verify, smoke, watch, persist "
            "(a demo has no users: too little traffic to judge is accepted, and the summary says so)")
        fleet.playbook("cutover.yml", DEMO_CUTOVER)
        fleet.traffic()

        say("reload every HAProxy (master CLI reload, the map is re-read from disk): the file says green too")
        for node in fleet.nodes:
            fleet.reload(node)
        fleet.traffic()

        say("a bad release: %s's blue2 now answers green, then a cutover to blue must roll back by itself"
            % fleet.nodes[1])
        fleet.point(fleet.nodes[1], "backend_blue/blue2", "green1")
        fleet.playbook("cutover.yml", {"release_target": "backend_blue"}, expect_failure=True)
        fleet.traffic()

        say("fix %s's blue2, then roll back to blue with rollback.yml" % fleet.nodes[1])
        fleet.point(fleet.nodes[1], "backend_blue/blue2", "blue2")
        fleet.playbook("rollback.yml")
        fleet.traffic()
        say("done: every node runs blue, at runtime and on disk")
    finally:
        if keep:
            say("--keep: the containers stay; remove them with: HAPROXY_IMAGE_TAG=%s BLUEGREEN_RELEASE_NAME=%s "
                "MOLECULE_EPHEMERAL_DIRECTORY=%s molecule destroy -s %s"
                % (tag, DEMO_NAME, os.path.relpath(fleet.ephemeral, REPO), SCENARIO))
        else:
            say("removing the containers")
            fleet.molecule("destroy")


def main(argv=None):
    parser = argparse.ArgumentParser(description="A blue-green release, end to end, on this machine.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--containers", action="store_true",
                       help="containerized HAProxy (Docker, molecule/release); fail if Docker is not usable")
    where.add_argument("--loopback", action="store_true", help="HAProxy processes on loopback")
    parser.add_argument("--image", default=os.environ.get("HAPROXY_IMAGE_TAG", "bookworm"),
                        choices=["bookworm", "trixie"],
                        help="containers: HAProxy 2.6 (bookworm, default) or 3.0 (trixie)")
    parser.add_argument("--keep", action="store_true", help="containers: leave them running at the end")
    args = parser.parse_args(argv)

    if args.loopback:
        return loopback_demo()
    usable, why = docker_answers()
    if usable:
        usable, why = images_ready(args.image)
    if usable:
        return containers_demo(args.image, args.keep)
    if args.containers:
        raise SystemExit("demo: --containers, but the containers cannot run here: %s" % why)
    say("no usable container engine (%s): falling back to HAProxy processes on loopback" % why)
    return loopback_demo()


if __name__ == "__main__":
    main()
