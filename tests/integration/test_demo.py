"""`make demo` shows what its headings promise.

scripts/demo.py checks each scene's promise itself (the playbook's exit status, the JSON
report, every node's live value at runtime and on disk, what its simulated users saw) and
prints `DEMO-SCENE <name> OK: ...` for each, or `DEMO-SCENE <name> BROKEN: ...` and a non-zero
exit. This runs the demo on loopback (the route every machine has; the containers route runs
the same scenes, only its nodes are containers) and asserts every scene was shown - above all
the automatic rollback (a bad green that passes the health gate, the preflight and the smoke
test, caught by the users' real traffic in the watch window, every node back on blue at runtime
and on disk) and the refusal of a wrong green server by the preflight. About two and a half
minutes on two cores.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from lab import REPO

DEMO = os.path.join(REPO, "scripts", "demo.py")
SCENES = ("status", "cutover", "reload", "rollback", "refused", "auto-rollback")


def scene_line(output, scene):
    found = re.findall(r"^DEMO-SCENE %s OK \(\d+s\): (.*)$" % re.escape(scene), output, re.M)
    assert len(found) == 1, "scene %s: expected one DEMO-SCENE %s OK line, found %d" % (scene, scene, len(found))
    return found[0]


def test_demo_shows_every_scene_and_the_automatic_rollback():
    result = subprocess.run([sys.executable, DEMO, "--loopback"], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=900, check=False)
    output = result.stdout
    assert result.returncode == 0, "scripts/demo.py --loopback exited %d:\n%s" % (result.returncode, output[-6000:])

    lines = {scene: scene_line(output, scene) for scene in SCENES}
    assert "DEMO-RESULT 6/6 scenes OK" in output
    assert "BROKEN" not in output

    assert lines["status"].startswith("backend_blue live on node1 and node2, at runtime and on disk")
    assert lines["cutover"].startswith("backend_green live on node1 and node2, at runtime and on disk; users:")
    assert ", 0 failed" in lines["cutover"]
    assert lines["reload"].startswith("backend_green live on node1 and node2, at runtime and on disk after the reload")
    assert lines["rollback"].startswith("backend_blue live on node1 and node2, at runtime and on disk; users:")

    # Prevention: a wrong green server refused by the preflight, before any user reached it.
    assert lines["refused"].startswith("cutover.yml refused before the switch ("), lines["refused"]
    assert "green2" in lines["refused"]
    assert "backend_blue live on node1 and node2, at runtime and on disk; users:" in lines["refused"]
    assert ", 0 failed" in lines["refused"]

    # The automatic rollback: the engine's traffic gate judged the users' requests, every node
    # went back to blue by itself, and the users saw the bad green only while it was live.
    auto = lines["auto-rollback"]
    assert auto.startswith("cutover.yml failed and every node rolled back by itself ("), auto
    assert "backend_green" in auto and "real requests" in auto, auto
    assert "backend_blue live on node1 and node2, at runtime and on disk" in auto
    assert re.search(r"users: [1-9]\d* of \d+ requests failed, all from the bad green in the [\d.]+ s it was "
                     r"live, 0 of [1-9]\d* since$", auto), auto
