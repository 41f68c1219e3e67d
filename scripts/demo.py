"""`make demo`: a blue-green release, end to end, on this machine, with users on it.

Runs the collection's own playbooks the way a release owner would, while simulated users send
real requests through every HAProxy node (the demo's load generator, bounded, loopback only):

  status          what is live where: blue, at runtime and on disk
  cutover         to green: health gate, per-server preflight, one-instant switch, smoke test,
                  a watch window judging the users' real requests, persist
  reload          every HAProxy reloads; the map file says green too, so green stays live
  rollback        rollback.yml: back to blue, by hand
  refused         a wrong green server (it answers version=blue): the per-server preflight
                  refuses the cutover before anything moves
  auto-rollback   a bad green: healthy, its servers answer the preflight and the smoke test
                  (/release), but one in ten of the users' homepage requests (/) fails; only the users'
                  real traffic shows it, and the watch window's traffic gate rolls every node
                  back to blue by itself

Each scene checks its own promise (the playbook's result, the JSON report, every node's live
value at runtime and on disk, what the users saw) and prints one line for it:
  DEMO-SCENE <name> OK: <what was shown>
and at the end `DEMO-RESULT 6/6 scenes OK`; a broken promise stops the demo with
`DEMO-SCENE <name> BROKEN: ...` and a non-zero exit (tests/integration/test_demo.py reads these
lines). Everything it starts, it stops.

Where it runs:
  containers (default when a Docker engine answers `docker info` and the images exist or
      scripts/build-images.sh can build them): two HAProxy containers converged with the
      bluegreen.haproxy.haproxy role (molecule/release's converge.yml and inventory variables),
      blue1 blue2 green1 green2 containers behind both, all started with the docker CLI
      (containers and network named demo-*); Ansible reaches the nodes through community.docker's
      `docker` connection. Each node's port 80 is published on 127.0.0.1 for the users.
  loopback (the fallback): two HAProxy processes on loopback, each with blue and green releases
      behind it (tests/lab.py).

  scripts/demo.py [--containers | --loopback] [--image bookworm|trixie] [--keep]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))

from lab import REPO, App, HAProxyEnv, ansible_bin, free_port, write_inventory  # noqa: E402

PLAYBOOKS = os.path.join(REPO, "playbooks")
PUBLIC_HOST = "release.example.test"
BLUE, GREEN = "backend_blue", "backend_green"

# The users: every node gets USER_RATE requests a second for the homepage, `/`, on a fresh
# connection each. The engine's smoke test and preflight ask for /release, never for `/`.
USER_PATH = "/"
USER_RATE = 20
USERS_MAX_SECONDS = 900  # the load generator stops by itself, whatever happens to the demo

# The bad green of the auto-rollback scene: one in ten of its answers to the users' path fail
# (evenly spread: tests/app/bluegreen_app.py --fail-file), ten times the engine's limit.
BAD_SHARE = 0.1

# The watch window judges the users' real requests (release_max_error_rate, default 1%, once
# release_min_requests, default 20, were counted; the engine's own smoke requests are not
# counted). A good cutover's window runs to its end; a bad one fails as soon as the gate can judge.
GOOD_CUTOVER = {"release_target": GREEN, "release_watch_seconds": 4}
BAD_CUTOVER = {"release_target": GREEN, "release_watch_seconds": 15}


SCENE_STARTED = [time.monotonic()]


def say(text):
    SCENE_STARTED[0] = time.monotonic()
    print("\n\033[1m== %s\033[0m" % text, flush=True)


class PromiseBroken(SystemExit):
    pass


def scene_ok(name, text):
    print("DEMO-SCENE %s OK (%ds): %s" % (name, time.monotonic() - SCENE_STARTED[0], text), flush=True)


def promise(name, condition, text):
    if not condition:
        print("DEMO-SCENE %s BROKEN: %s" % (name, text), flush=True)
        raise PromiseBroken("demo: scene %s did not show its promise: %s" % (name, text))


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise SystemExit("demo: timed out after %ds waiting for %s" % (timeout, what))
        time.sleep(0.2)


# --- the users -------------------------------------------------------------------------------
class Users:
    """Simulated users: one thread per node, USER_RATE requests a second through its listener.

    Every request is recorded as (time, node, status or None, the X-Release that answered), so a
    scene can tell what the users saw between two marks: how many requests, how many failed, and
    which version answered them."""

    def __init__(self, endpoints, rate=USER_RATE, max_seconds=USERS_MAX_SECONDS):
        self.endpoints = endpoints  # [(node name, host, port)], host on loopback
        self.rate = rate
        self.max_seconds = max_seconds
        self.records = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=endpoint, daemon=True) for endpoint in endpoints]

    def start(self):
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, node, host, port):
        started = time.monotonic()
        sent = 0
        while not self.stop_event.is_set() and time.monotonic() - started < self.max_seconds:
            status, release = None, None
            # 10 s, HAProxy's own server timeout in the lab: a busy CI machine is not a failed request.
            connection = http.client.HTTPConnection(host, port, timeout=10)
            try:
                connection.request("GET", USER_PATH, headers={"Host": PUBLIC_HOST})
                response = connection.getresponse()
                response.read()
                status, release = response.status, response.getheader("X-Release")
            except (OSError, http.client.HTTPException):
                pass
            finally:
                connection.close()
            with self.lock:
                self.records.append((time.monotonic(), node, status, release))
            sent += 1
            # A steady rate: sleep until this request's slot, not a fixed pause after it.
            self.stop_event.wait(max(0.0, started + sent / self.rate - time.monotonic()))

    def mark(self):
        with self.lock:
            return len(self.records)

    def since(self, mark, until=None):
        with self.lock:
            return self.records[mark:until]

    def wait_more(self, count, timeout=30):
        target = self.mark() + count
        wait_for(lambda: self.mark() >= target, timeout, "%d more user requests" % count)

    def stop(self):
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)


def failed(records):
    return [record for record in records if record[2] != 200]


def releases(records):
    counts = {}
    for _when, _node, _status, release in records:
        counts[release or "no answer"] = counts.get(release or "no answer", 0) + 1
    return ", ".join("%s %d" % item for item in sorted(counts.items()))


def users_line(records):
    bad = failed(records)
    text = "users: %d requests, %d failed (%.1f%%); answered by %s" % (
        len(records), len(bad), 100.0 * len(bad) / max(1, len(records)), releases(records) or "-")
    if bad:
        text += "; failures answered by %s over %.1f s" % (releases(bad), bad[-1][0] - bad[0][0])
    print("   " + text, flush=True)
    return text


# --- running the playbooks -------------------------------------------------------------------
class Runner:
    """ansible-playbook against a route's inventory, with the JSON report (release_report_file)."""

    def __init__(self, inventory, env, workdir):
        self.inventory = inventory
        self.env = dict(env, ANSIBLE_DISPLAY_SKIPPED_HOSTS="false", ANSIBLE_CALLBACK_RESULT_FORMAT="yaml")
        self.workdir = workdir

    def playbook(self, name, extra_vars=None):
        """Runs playbooks/<name>; returns (exit status, the report's nodes or {})."""
        report = os.path.join(self.workdir, "report.json")
        if os.path.exists(report):
            os.remove(report)
        shown = dict(extra_vars or {})
        extra = dict(shown, release_report_file=report) if name != "status.yml" else shown
        command = [ansible_bin("ansible-playbook"), "-i", self.inventory, os.path.join(PLAYBOOKS, name),
                   "-e", json.dumps(extra)]
        print("$ ansible-playbook -i inventory playbooks/%s%s" % (
            name, " -e '%s'" % json.dumps(shown) if shown else ""), flush=True)
        result = subprocess.run(command, env=self.env, cwd=REPO, check=False)
        nodes = {}
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
        print("   playbooks/%s exited %d" % (name, result.returncode), flush=True)
        return result.returncode, nodes


# --- the scenes, the same on both routes --------------------------------------------------------
def check_live(scene, route, backend):
    """Every node: `backend` live at runtime and on disk, and the listener answers it."""
    live = route.live()
    for node, (runtime, disk, answer) in sorted(live.items()):
        print("   %s  answers %-14s map: runtime %-13s disk %s" % (node, answer, runtime, disk), flush=True)
    wrong = {node: values for node, values in live.items()
             if values[:2] != (backend, backend) or values[2] != "version=" + backend[len("backend_"):]}
    promise(scene, not wrong, "%s should be live at runtime and on disk everywhere; found %s" % (backend, wrong))
    return "%s live on %s, at runtime and on disk" % (backend, " and ".join(sorted(live)))


def check_report(scene, nodes, outcome, backend):
    promise(scene, bool(nodes), "no JSON report was written")
    wrong = {node: (summary.get("outcome"), summary.get("live_runtime"), summary.get("live_disk"))
             for node, summary in nodes.items()
             if (summary.get("outcome"), summary.get("live_runtime"), summary.get("live_disk"))
             != (outcome, backend, backend)}
    promise(scene, not wrong, "the report should say %s, %s at runtime and on disk, on every node; it says %s"
            % (outcome, backend, wrong))


SCENES = ("status", "cutover", "reload", "rollback", "refused", "auto-rollback")


def run_scenes(route, runner, users):
    say("status: what is live where")
    rc, _nodes = runner.playbook("status.yml")
    promise("status", rc == 0, "status.yml exited %d" % rc)
    scene_ok("status", check_live("status", route, BLUE))

    say("users: %d requests a second for %s through every node's listener, from now to the end"
        % (USER_RATE, USER_PATH))
    users.start()
    users.wait_more(2 * USER_RATE)
    users_line(users.since(0))

    say("cutover to green: health gate, preflight of every green server, switch every node at one "
        "instant, verify, smoke, a %d s watch window judging the users' real requests, persist"
        % GOOD_CUTOVER["release_watch_seconds"])
    mark = users.mark()
    rc, nodes = runner.playbook("cutover.yml", GOOD_CUTOVER)
    promise("cutover", rc == 0, "cutover.yml exited %d" % rc)
    check_report("cutover", nodes, "switched", GREEN)
    users.wait_more(USER_RATE)
    seen = users.since(mark)
    text = users_line(seen)
    promise("cutover", not failed(seen), "the users saw failures: %s" % text)
    scene_ok("cutover", "%s; %s" % (check_live("cutover", route, GREEN), text))

    say("reload every HAProxy: the map is read from the file again, and the file says green")
    mark = users.mark()
    route.reload()
    users.wait_more(USER_RATE)
    seen = users.since(mark)
    text = users_line(seen)
    promise("reload", not failed(seen), "the users saw failures: %s" % text)
    scene_ok("reload", "%s after the reload; %s" % (check_live("reload", route, GREEN), text))

    say("rollback to blue by hand: rollback.yml")
    mark = users.mark()
    rc, nodes = runner.playbook("rollback.yml")
    promise("rollback", rc == 0, "rollback.yml exited %d" % rc)
    check_report("rollback", nodes, "switched", BLUE)
    users.wait_more(USER_RATE)
    seen = users.since(mark)
    text = users_line(seen)
    promise("rollback", not failed(seen), "the users saw failures: %s" % text)
    scene_ok("rollback", "%s; %s" % (check_live("rollback", route, BLUE), text))

    say("a wrong server: %s's green2 answers version=blue; the preflight asks every green server "
        "directly before the switch, so the cutover is refused and nothing moves" % route.names()[-1])
    route.set_green2_wrong(True)
    mark = users.mark()
    rc, nodes = runner.playbook("cutover.yml", GOOD_CUTOVER)
    promise("refused", rc != 0, "cutover.yml should be refused; it exited 0")
    outcomes = {node: summary.get("outcome") for node, summary in nodes.items()}
    promise("refused", bool(nodes) and all(outcome in ("failed", "refused") for outcome in outcomes.values())
            and not any(summary.get("switched") for summary in nodes.values()),
            "the report should say no node switched; it says %s" % outcomes)
    reasons = sorted({failure for summary in nodes.values() for failure in summary.get("failures") or []})
    promise("refused", any("green2" in reason for reason in reasons),
            "the refusal should name the wrong server green2; the reasons were %s" % reasons)
    users.wait_more(USER_RATE)
    seen = users.since(mark)
    text = users_line(seen)
    promise("refused", not failed(seen) and all(record[3] == "blue" for record in seen),
            "every user request should be answered by blue: %s" % text)
    route.set_green2_wrong(False)
    scene_ok("refused", "cutover.yml refused before the switch (%s); %s; %s"
             % (reasons[0], check_live("refused", route, BLUE), text))

    say("a bad release: green now fails %d%% of the users' %s requests; its health check and its "
        "servers' answers to the preflight and the smoke test (/release) are fine, so only real "
        "traffic can show it; the cutover must roll back by itself" % (100 * BAD_SHARE, USER_PATH))
    route.set_green_failing(BAD_SHARE, USER_PATH)
    mark = users.mark()
    rc, nodes = runner.playbook("cutover.yml", BAD_CUTOVER)
    ended = users.mark()
    promise("auto-rollback", rc != 0, "cutover.yml should fail and roll back; it exited 0")
    check_report("auto-rollback", nodes, "rolled back", BLUE)
    reasons = sorted({failure for summary in nodes.values() for failure in summary.get("failures") or []})
    # What revealed it: the users' requests, not the gates before the switch.
    promise("auto-rollback", any("real requests" in reason or "hrsp_5xx" in reason for reason in reasons),
            "the failure should come from the watch window's traffic gate; the reasons were %s" % reasons)
    users.wait_more(2 * USER_RATE)
    seen, after = users.since(mark, ended), users.since(ended)
    print("   during the run:", flush=True)
    text = users_line(seen)
    print("   after the rollback:", flush=True)
    after_text = users_line(after)
    bad = failed(seen)
    promise("auto-rollback", bad and all(record[3] == "green" for record in bad),
            "the users' failures should all come from the bad green (and there should be some): %s" % text)
    # Had the bad green stayed, BAD_SHARE of every user request would go on failing; the engine's
    # rollback keeps the users' failures to the seconds green was live.
    promise("auto-rollback", len(bad) < BAD_SHARE * len(seen),
            "the rollback should keep the users' failures below the bad green's %d%%: %s" % (100 * BAD_SHARE, text))
    promise("auto-rollback", not failed(after) and all(record[3] == "blue" for record in after),
            "after the rollback every user request should be answered by blue: %s" % after_text)
    route.set_green_failing(None, USER_PATH)
    green_live = bad[-1][0] - bad[0][0]
    print("   what the users saw: %d of %d requests failed (%.1f%%), all answered by the bad green in the "
          "%.1f s it was live; %d of %d failed since the rollback (had green stayed, %d%% of every request "
          "would go on failing)" % (len(bad), len(seen), 100.0 * len(bad) / len(seen), green_live,
                                    len(failed(after)), len(after), 100 * BAD_SHARE), flush=True)
    scene_ok("auto-rollback", "cutover.yml failed and every node rolled back by itself (%s); %s; users: %d of %d "
             "requests failed, all from the bad green in the %.1f s it was live, 0 of %d since"
             % (reasons[0], check_live("auto-rollback", route, BLUE), len(bad), len(seen), green_live, len(after)))
    print("DEMO-RESULT %d/%d scenes OK" % (len(SCENES), len(SCENES)), flush=True)


def demo(route, keep=False):
    users = None
    try:
        runner = route.start()
        users = Users(route.endpoints())
        run_scenes(route, runner, users)
        say("done: every node runs blue, at runtime and on disk; the users saw the bad green only "
            "until the engine rolled it back")
    finally:
        if users:
            users.stop()
        route.stop(keep)


# --- loopback ---------------------------------------------------------------------------------
class Loopback:
    """Two HAProxy processes on loopback (tests/lab.py), blue1 blue2 green1 green2 behind each."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="bluegreen-demo-")
        self.nodes = {}

    def start(self):
        say("Starting two HAProxy nodes on loopback, each with blue1 blue2 green1 green2 behind it")
        seed = {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "green"}
        for index in (1, 2):
            workdir = os.path.join(self.workdir, "node%d" % index)
            os.makedirs(workdir)
            apps = {name: App(name=name, color=color, port=free_port(), workdir=workdir).start()
                    for name, color in seed.items()}
            # Registered before it starts, so stop() ends its apps whatever happens next.
            node = self.nodes["node%d" % index] = HAProxyEnv(
                workdir=workdir, apps=apps, frontend_port=free_port(), stats_port=free_port(), inter="500ms")
            node.start()
            node.wait_all_up()
        inventory = write_inventory(os.path.join(self.workdir, "inventory.ini"), list(self.nodes.values()), {
            "release_smoke_url": "http://%s/release" % PUBLIC_HOST, "release_smoke_requests": 10})
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, ".collections"),
                   ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false")
        return Runner(inventory, env, self.workdir)

    def endpoints(self):
        return [(name, "127.0.0.1", node.frontend_port) for name, node in sorted(self.nodes.items())]

    def live(self):
        values = {}
        for name, node in sorted(self.nodes.items()):
            disk = dict(line.split(None, 1) for line in node.disk_text().splitlines()
                        if line.strip() and not line.startswith("#")).get("active", "").strip()
            values[name] = (node.map_value(), disk, node.get("/release", host=PUBLIC_HOST)[1].strip())
        return values

    def reload(self):
        for node in self.nodes.values():
            node.reload()

    def names(self):
        return sorted(self.nodes)

    def set_green2_wrong(self, wrong):
        """The last node's green2 restarted as a release that answers version=blue (or green again)."""
        node = self.nodes[self.names()[-1]]
        app = node.apps["green2"]
        app.stop()
        node.apps["green2"] = App(name="green2", color="blue" if wrong else "green", port=app.port,
                                  workdir=node.workdir).start()
        node.wait_all_up()

    def set_green_failing(self, share, path):
        for node in self.nodes.values():
            for app in node.apps.values():
                if app.color == "green":
                    app.set_failing(share, path)

    def stop(self, keep=False):
        for node in self.nodes.values():
            node.stop()
            for app in node.apps.values():
                app.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- containers -------------------------------------------------------------------------------
# The fleet of the Molecule scenario molecule/release, started with the docker CLI: nodes
# demo-lb1-<tag> and demo-lb2-<tag> (group `haproxy`, converged by the role with
# molecule/release/converge.yml and the inventory variables in molecule/release/group_vars) and
# the app containers, reached by their network aliases. The nodes carry the tests' Runtime API
# client (tests/support/runtime_client.py), used through `docker exec`.
DEMO_NAME = "demo"
APPS = {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "green"}
APP_FAIL_FILE = "/tmp/bluegreen-app.failing"


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


def docker_connection_available():
    """community.docker (its `docker` connection) where the demo points Ansible."""
    for path in (sysconfig.get_paths()["purelib"], os.path.join(REPO, ".collections")):
        if os.path.exists(os.path.join(path, "ansible_collections", "community", "docker", "plugins",
                                       "connection", "docker.py")):
            return True, ""
    return False, "no community.docker collection in this venv (scripts/demo-venv.sh installs it)"


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


def docker(*argv, check=True):
    result = subprocess.run(["docker"] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, check=False)
    if check and result.returncode != 0:
        raise SystemExit("demo: docker %s failed: %s" % (" ".join(argv), result.stderr.strip()))
    return result.stdout


class Containers:
    """The demo's containers, with the docker CLI and `docker exec`."""

    CLIENT = "/usr/local/lib/bluegreen-tests/runtime_client.py"
    ADMIN_SOCKET = "/run/haproxy/admin.sock"
    MASTER_SOCKET = "/run/haproxy-master.sock"
    MAP = "/etc/haproxy/maps/bluegreen.map"

    def __init__(self, tag):
        self.tag = tag
        self.workdir = os.path.join(REPO, ".tmp", "demo-%s" % tag)
        self.network = "%s-net-%s" % (DEMO_NAME, tag)
        self.nodes = ["%s-lb%d-%s" % (DEMO_NAME, index, tag) for index in (1, 2)]
        self.apps = {alias: "%s-%s-%s" % (DEMO_NAME, alias, tag) for alias in APPS}
        self.ports = {}
        collections = [os.path.join(REPO, ".collections"), sysconfig.get_paths()["purelib"]]
        self.env = dict(os.environ,
                        ANSIBLE_COLLECTIONS_PATH=os.pathsep.join(collections),
                        ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
                        ANSIBLE_PIPELINING="True",
                        ANSIBLE_FORCE_COLOR="0", PY_COLORS="0", NO_COLOR="1")

    def remove(self):
        docker("rm", "--force", *(self.nodes + list(self.apps.values())), check=False)
        docker("network", "rm", self.network, check=False)

    def start(self):
        version = {"bookworm": "2.6", "trixie": "3.0"}.get(self.tag, self.tag)
        say("Starting the fleet in containers: %s (HAProxy %s), blue1 blue2 green1 green2 behind both"
            % (" and ".join(self.nodes), version))
        started = time.monotonic()
        shutil.rmtree(self.workdir, ignore_errors=True)
        os.makedirs(self.workdir)
        self.remove()  # what an interrupted run left
        docker("network", "create", self.network)
        for alias, color in sorted(APPS.items()):
            docker("run", "--detach", "--name", self.apps[alias], "--network", self.network,
                   "--network-alias", alias, "bluegreen/app:latest",
                   "--color", color, "--port", "8080", "--fail-file", APP_FAIL_FILE)
        for node in self.nodes:
            # Port 80 published on loopback only: the users reach every node there.
            docker("run", "--detach", "--name", node, "--hostname", node, "--network", self.network,
                   "--publish", "127.0.0.1::80", "bluegreen/haproxy-node:%s" % self.tag)
            docker("exec", node, "mkdir", "-p", os.path.dirname(self.CLIENT))
            docker("cp", os.path.join(REPO, "tests", "support", "runtime_client.py"), "%s:%s" % (node, self.CLIENT))
            self.ports[node] = int(docker("port", node, "80/tcp").split()[0].rsplit(":", 1)[1])
        print("   started in %ds" % (time.monotonic() - started), flush=True)

        inventory = os.path.join(self.workdir, "inventory")
        os.makedirs(inventory)
        # The scenario's inventory variables (role configuration and release inputs), as a release
        # owner's inventory would carry them.
        os.symlink(os.path.join(REPO, "molecule", "release", "group_vars"), os.path.join(inventory, "group_vars"))
        with open(os.path.join(inventory, "hosts.ini"), "w") as handle:
            handle.write("[haproxy]\n%s\n\n[haproxy:vars]\nansible_connection=community.docker.docker\n"
                         % "\n".join(self.nodes))
        runner = Runner(inventory, self.env, self.workdir)

        say("Converging both nodes with the bluegreen.haproxy.haproxy role (molecule/release/converge.yml)")
        started = time.monotonic()
        log = os.path.join(self.workdir, "converge.log")
        print("$ ansible-playbook -i inventory molecule/release/converge.yml   (log: %s)"
              % os.path.relpath(log, REPO), flush=True)
        with open(log, "w") as handle:
            result = subprocess.run([ansible_bin("ansible-playbook"), "-i", inventory,
                                     os.path.join(REPO, "molecule", "release", "converge.yml")],
                                    cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT, check=False)
        if result.returncode != 0:
            with open(log) as handle:
                sys.stdout.write("".join(handle.readlines()[-60:]))
            raise SystemExit("demo: the converge exited %d (log: %s)" % (result.returncode, log))
        wait_for(self._all_up, 60, "every server UP on every node")
        print("   done in %ds" % (time.monotonic() - started), flush=True)
        return runner

    def _all_up(self):
        for node in self.nodes:
            for backend in (BLUE, GREEN):
                states = self.runtime(node, "show stat %s 4 -1" % backend)
                if states.count(",UP,") < 2:
                    return False
        return True

    def endpoints(self):
        return [(node, "127.0.0.1", self.ports[node]) for node in self.nodes]

    def runtime(self, node, command, socket=ADMIN_SOCKET, parse=None):
        """One Runtime API (or master CLI) command on the node; retried while HAProxy reloads."""
        argv = ["python3", self.CLIENT, "--socket", socket, "--retry-for", "10"]
        reply = docker("exec", node, *(argv + (["--json", parse] if parse else []) + [command]))
        return json.loads(reply) if parse else reply

    def live(self):
        values = {}
        for node in self.nodes:
            answer = docker("exec", node, "curl", "-sS", "--max-time", "5", "-H", "Host: %s" % PUBLIC_HOST,
                            "http://127.0.0.1/release").strip()
            runtime = self.runtime(node, "show map %s" % self.MAP, parse="map").get("active")
            disk = docker("exec", node, "sed", "-n", "s/^active[ \t]*//p", self.MAP).strip()
            values[node] = (runtime, disk, answer)
        return values

    def workers(self, node, timeout=10.0):
        """The worker pids from the master CLI's `show proc`. A read that fails is read again: the
        master CLI has reset a connection now and then (seen on HAProxy 2.6 right after a cutover)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return set(self.runtime(node, "show proc", socket=self.MASTER_SOCKET, parse="proc")["workers"])
            except SystemExit:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def reload(self, timeout=30.0):
        """A plain master CLI reload (what `systemctl reload` sends); waits for the new worker."""
        for node in self.nodes:
            before = self.workers(node)
            self.runtime(node, "reload", socket=self.MASTER_SOCKET)

            def reloaded():
                pid = self.runtime(node, "show info", parse="info").get("Pid")
                return bool(pid) and int(pid) in self.workers(node) - before
            wait_for(reloaded, timeout, "a new HAProxy worker on %s" % node)

    def names(self):
        return list(self.nodes)

    def set_green2_wrong(self, wrong):
        """The last node's backend_green/green2 pointed at blue1's container (or back at green2's),
        with the Runtime API's `set server addr`."""
        node = self.nodes[-1]
        address = docker("exec", node, "getent", "ahostsv4", "blue1" if wrong else "green2").split()[0]
        self.runtime(node, "set server backend_green/green2 addr %s port 8080" % address)

    def set_green_failing(self, share, path):
        for alias, container in sorted(self.apps.items()):
            if APPS[alias] != "green":
                continue
            if share is None:
                docker("exec", container, "rm", "-f", APP_FAIL_FILE)
            else:
                docker("exec", container, "sh", "-c", 'echo "$1" > "$2"', "-", "%s %s" % (share, path), APP_FAIL_FILE)

    def stop(self, keep=False):
        if keep:
            say("--keep: the containers stay; remove them with: docker rm -f %s && docker network rm %s"
                % (" ".join(self.nodes + list(self.apps.values())), self.network))
        else:
            say("removing the containers")
            self.remove()


def main(argv=None):
    parser = argparse.ArgumentParser(description="A blue-green release, end to end, on this machine.")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--containers", action="store_true",
                       help="containerized HAProxy (Docker); fail if the containers cannot run here")
    where.add_argument("--loopback", action="store_true", help="HAProxy processes on loopback")
    parser.add_argument("--image", default=os.environ.get("HAPROXY_IMAGE_TAG", "bookworm"),
                        choices=["bookworm", "trixie"],
                        help="containers: HAProxy 2.6 (bookworm, default) or 3.0 (trixie)")
    parser.add_argument("--keep", action="store_true", help="containers: leave them running at the end")
    args = parser.parse_args(argv)

    started = time.monotonic()
    try:
        if args.loopback:
            return demo(Loopback())
        usable, why = docker_answers()
        if usable:
            usable, why = docker_connection_available()
        if usable:
            usable, why = images_ready(args.image)
        if usable:
            return demo(Containers(args.image), keep=args.keep)
        if args.containers:
            raise SystemExit("demo: --containers, but the containers cannot run here: %s" % why)
        say("no usable container engine (%s): falling back to HAProxy processes on loopback" % why)
        return demo(Loopback())
    finally:
        print("demo: %ds in all" % (time.monotonic() - started), flush=True)


if __name__ == "__main__":
    main()
