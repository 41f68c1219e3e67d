"""`make demo`: a blue-green release, end to end, on this machine.

Starts two HAProxy nodes on loopback, each with blue and green releases behind
it, then runs the collection's own playbooks the way a release owner would:
status, cutover to green (health gate, compare-and-set, verify, smoke, persist),
a reload to show the switch survives it, a cutover that fails and rolls back by
itself, and a rollback to blue. Everything it starts, it stops.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

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


def traffic(nodes):
    for index, node in enumerate(nodes, start=1):
        print("   node%d  frontend 127.0.0.1:%d answers %s   (map: runtime %s)"
              % (index, node.frontend_port, node.get()[1].strip(), node.map_value()))


def main():
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

        say("cutover to green: gate on health, switch every node, verify, smoke, persist")
        playbook("cutover.yml", inventory, {"release_target": "backend_green", "release_watch_seconds": 3})
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


if __name__ == "__main__":
    main()
