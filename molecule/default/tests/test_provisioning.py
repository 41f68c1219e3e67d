"""Provisioning safety: re-running the role never moves traffic, whatever the runtime or the
disk says, even when the re-run reloads HAProxy; a lost map file comes back with what is live,
not with the initial values; new services are appended and route at once, without a reload.

One sequential story (each role run costs a full converge, so no step is repeated); it ends
with the node as converge left it (traffic on blue)."""

from __future__ import annotations

import shlex

from bluegreen_molecule import MAP
from conftest import snapshot

testinfra_hosts = ["haproxy_nodes"]

BLUE = {(200, "version=blue")}
GREEN = {(200, "version=green")}
ENTRIES = {"active": "backend_blue", "app.example.test": "backend_blue"}
# A harmless configuration change, to make a re-run reload HAProxy.
TIMEOUTS_CHANGED = {"connect": "5s", "client": "50s", "server": "50s", "http-request": "10s",
                    "http-keep-alive": "2s"}


def test_role_re_runs_never_move_traffic(host, node, converge):
    converged = snapshot(node)
    try:
        # 1. Runtime green (a cutover in progress), disk blue. Same variables: nothing to do,
        #    no reload, the runtime value stays.
        assert node.cli("set map %s active backend_green" % MAP).strip() == ""
        assert node.answers() == GREEN
        before = snapshot(node)
        run = converge(log_name="1-rerun-runtime-green")
        assert run.rc == 0, run
        assert snapshot(node) == before
        assert node.disk_map()["active"] == "backend_blue"
        assert node.answers() == GREEN

        # 2. The map file is lost, and the variables change the configuration: the file comes
        #    back with what is live (green), HAProxy reloads (new worker) and green survives it.
        host.run_expect([0], "mv %s %s.lost" % (MAP, MAP))
        run = converge(log_name="2-reload-lost-map", haproxy_defaults_timeouts=TIMEOUTS_CHANGED)
        assert run.rc == 0, run
        after = snapshot(node)
        assert not set(after["proc"]["workers"]) & set(before["proc"]["workers"])
        assert after["proc"]["failed_reloads"] == 0
        assert "timeout http-keep-alive 2s" in after["config"]
        assert node.disk_map() == dict(ENTRIES, active="backend_green")
        assert after["runtime"]["active"] == "backend_green"
        assert node.answers() == GREEN

        # 3. Runtime and disk green; the original variables change the configuration back
        #    (reload): still green, the map file untouched.
        before = after
        run = converge(log_name="3-reload-disk-green")
        assert run.rc == 0, run
        after = snapshot(node)
        assert after["config"] == converged["config"]
        assert not set(after["proc"]["workers"]) & set(before["proc"]["workers"])
        assert (after["map_file"], after["runtime"]) == (before["map_file"], before["runtime"])
        assert node.answers() == GREEN

        # 4. A new service in the variables: appended to the file (existing lines kept, their
        #    values untouched), added at runtime, routed by the Host-header frontend, no reload.
        before = after
        run = converge(log_name="4-new-service",
                       haproxy_switch_entries=dict(ENTRIES, **{"shop.example.test": "backend_green"}))
        assert run.rc == 0, run
        after = snapshot(node)
        assert after["map_file"] == before["map_file"] + "shop.example.test backend_green\n"
        assert after["runtime"] == dict(before["runtime"], **{"shop.example.test": "backend_green"})
        assert after["proc"]["workers"] == before["proc"]["workers"]
        assert node.answers(url="http://127.0.0.1:8080/release", host_header="shop.example.test",
                            count=2) == GREEN
        # An unknown host falls back to backend_blue.
        assert node.answers(url="http://127.0.0.1:8080/release", host_header="unknown.example.test",
                            count=2) == BLUE
    finally:
        # Back to what converge left: the original map file, blue at runtime, no new service.
        host.run("test -e %s.lost && mv -f %s.lost %s" % (MAP, MAP, MAP))
        host.run_expect([0], "printf %%s %s > %s" % (shlex.quote(converged["map_file"]), MAP))
        node.cli("set map %s active backend_blue" % MAP)
        node.cli("del map %s shop.example.test" % MAP)
    end = snapshot(node)
    assert (end["config"], end["map_file"], end["runtime"]) == (
        converged["config"], converged["map_file"], converged["runtime"])
    assert node.answers() == BLUE
