"""Fixtures: a real HAProxy on loopback with real blue and green releases behind it.

Every test gets its own HAProxy (master-worker, admin stats socket, master
socket) and its own four app processes on free loopback ports; the classes
live in tests/lab.py, shared with `make demo`.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from lab import (
    HAPROXY,
    REPO,
    App,
    Fleet,
    HAProxyEnv,
    ansible_bin,
    ansible_env,
    free_port,
    write_inventory,
)


# `make test-integration` hands whole files to three workers (pytest-xdist --dist loadfile), in
# collection order. These files run many playbooks against fleets (minutes each, measured with
# --durations): handed out first, the longest file does not start last and run on alone while
# the other workers are idle.
LONGEST_FIRST = ("test_playbooks.py", "test_release_canary.py", "test_release_prevention.py",
                 "test_provision_safety.py", "test_release_services.py", "test_packaging.py", "test_demo.py")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: a file's own tests keep their order


@pytest.fixture
def app_factory(tmp_path):
    apps = []

    def start(color, name=None):
        app = App(name=name or "%s%d" % (color, len(apps) + 1), color=color,
                  port=free_port(), workdir=str(tmp_path)).start()
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def haproxy_factory(tmp_path):
    """Build a HAProxy environment; colors lets a test put a wrong release behind a backend."""
    if not os.path.exists(HAPROXY):
        pytest.fail("haproxy is not installed (apt-get install haproxy); integration tests need it")
    envs = []

    def build(colors=None, inter="300ms", start_apps=True, tcp=False, **env_options):
        colors = colors or {"blue1": "blue", "blue2": "blue", "green1": "green", "green2": "green"}
        # Each HAProxy gets its own directory, so a test can run a fleet of them.
        workdir = tmp_path if not envs else tmp_path / ("node%d" % (len(envs) + 1))
        workdir.mkdir(exist_ok=True)
        apps = {name: App(name=name, color=color, port=free_port(), workdir=str(workdir))
                for name, color in colors.items()}
        if start_apps:
            for app in apps.values():
                app.start()
        env = HAProxyEnv(workdir=str(workdir), apps=apps, frontend_port=free_port(),
                         stats_port=free_port(), inter=inter, tcp_port=free_port() if tcp else None,
                         **env_options)
        envs.append(env)
        return env.start()

    yield build
    for env in envs:
        env.stop()
        for app in env.apps.values():
            app.stop()


@pytest.fixture
def haproxy_env(haproxy_factory):
    env = haproxy_factory()
    env.wait_all_up()
    return env


def run_ansible(command, check=False, diff=False, timeout=600):
    """Run an ansible CLI with the test_json callback: (returncode, the JSON report)."""
    command = command + (["--check"] if check else []) + (["--diff"] if diff else [])
    completed = subprocess.run(command, env=ansible_env(), capture_output=True, text=True,
                               cwd=REPO, timeout=timeout, check=False)
    try:
        if os.environ.get("BG_DUMP"):  # debugging: BG_DUMP=<file> keeps the last run's JSON report
            open(os.environ["BG_DUMP"], "w").write(completed.stdout)
        report = json.loads(completed.stdout)
    except ValueError:
        raise AssertionError("%s printed no JSON (rc=%s):\n%s\n%s"
                             % (os.path.basename(command[0]), completed.returncode, completed.stdout, completed.stderr))
    # Every user would see these on every run: no task of the collection's may cause one.
    deprecations = ["%s: %s" % (task["task"]["name"], item.get("msg")) for play in report.get("plays", [])
                    for task in play.get("tasks", []) for result in task.get("hosts", {}).values()
                    for item in result.get("deprecations") or []]
    assert not deprecations, "deprecation warnings:\n%s" % "\n".join(deprecations)
    return completed.returncode, report


@pytest.fixture
def run_module():
    """Run one module as Ansible does (ad hoc, local connection); return its result dict."""

    def run(module, args, check=False, diff=False):
        command = [ansible_bin("ansible"), "localhost", "-c", "local",
                   "-m", "bluegreen.haproxy.%s" % module, "-a", json.dumps(args)]
        report = run_ansible(command, check, diff, timeout=120)[1]
        return report["plays"][0]["tasks"][0]["hosts"]["localhost"]

    return run


@pytest.fixture
def run_playbook(tmp_path):
    """Run a playbook file with extra vars; return (returncode, json report)."""

    def run(playbook, extra_vars=None, check=False, diff=False, inventory="localhost,"):
        command = [ansible_bin("ansible-playbook"), "-i", inventory, "-c", "local", playbook]
        if extra_vars:
            vars_file = tmp_path / "extra_vars.json"
            vars_file.write_text(json.dumps(extra_vars))
            command += ["-e", "@%s" % vars_file]
        return run_ansible(command, check, diff)

    return run


@pytest.fixture
def fleet_factory(haproxy_factory, tmp_path):
    """N HAProxy nodes, an inventory group `haproxy` of local hosts, one per node.

    node_colors lets a test put a wrong release behind one node only. With tcp, each node also has
    lab.py's `mode tcp` frontend (map key `tcp`), and release_smoke_resolve is its port.
    """

    def build(nodes=2, node_colors=None, inter="300ms", tcp=False, test_listener=False, **env_options):
        envs = []
        for index in range(nodes):
            colors = (node_colors or {}).get(index)
            # test_listener: each node's own test listener port (release_test_listener, a host variable).
            options = dict(env_options, test_port=free_port()) if test_listener else env_options
            envs.append(haproxy_factory(colors=colors, inter=inter, tcp=tcp, **options))
        for env in envs:
            env.wait_all_up()
        inventory = write_inventory(str(tmp_path / "inventory.ini"), envs, {
            "release_smoke_url": "http://release.test/release",
            "release_health_wait": 10,
            "release_smoke_requests": 6,
            # The lab's fleets share 2 busy cores with two other xdist workers: a node armed late
            # by seconds there says nothing about the test's subject, and a 1 s spread would roll
            # it back. The spread tests (test_release_inputs, test_release_instant) pass their own.
            "release_max_spread": 5,
            # Every lab node is this machine, on the controller's own clock: what the clock check
            # can see here is its measurement's error, which a loaded machine widens (CI: a node
            # refused at 0.174s off measured to within 0.401s, against 0.5s). The clock test
            # (test_release_inputs) passes its own tolerance.
            "release_clock_tolerance": 2,
        }, tcp=tcp)
        return Fleet(nodes=envs, inventory=inventory)

    return build
