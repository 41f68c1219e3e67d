"""The haproxy role on a plain Debian node with systemd as PID 1 (HAProxy 2.6 on Debian 12,
3.0 on 13): installed from apt, run by systemd, reloaded through `systemctl reload`, and a
cutover and a rollback against it. The tests run in this order; the last two change the node
and leave it as converge did."""

from __future__ import annotations

import json
import os
import re
import shlex

from bluegreen_molecule import CONFIG, MAP, haproxy_check, playbook, unix_socket_listening, wait_for

testinfra_hosts = ["haproxy"]

TAG = os.environ.get("HAPROXY_IMAGE_TAG", "bookworm")
HAPROXY_VERSION = {"bookworm": "2.6.", "trixie": "3.0."}[TAG]
HOST_HEADER = "release.example.test"
BLUE = {(200, "version=blue")}
GREEN = {(200, "version=green")}


def main_pid(host):
    return int(host.check_output("systemctl show --property=MainPID --value haproxy"))


def test_systemd_is_pid_1(host):
    assert host.file("/proc/1/comm").content_string.strip() == "systemd"
    assert host.file("/run/systemd/system").is_directory


def test_haproxy_was_installed_from_apt_by_the_role(host):
    package = host.package("haproxy")
    assert package.is_installed
    assert package.version.startswith(HAPROXY_VERSION)
    # The image has no HAProxy: apt's history shows the role's install.
    assert re.search(r"(?m)^Install: .*\bhaproxy:", host.file("/var/log/apt/history.log").content_string)


def test_the_service_is_enabled_and_running(host):
    service = host.service("haproxy")
    assert service.is_enabled
    assert service.is_running
    assert host.file("/etc/systemd/system/multi-user.target.wants/haproxy.service").is_symlink


def test_the_units_main_process_is_the_master_running_the_role_config(host, node):
    processes = node.processes()
    assert processes["master_pid"] == main_pid(host)
    assert len(processes["workers"]) == 1
    assert processes["failed_reloads"] == 0
    master = host.process.get(pid=processes["master_pid"])
    assert "-Ws" in master.args and "-f %s" % CONFIG in master.args


def test_sockets_listen(host):
    assert host.socket("tcp://0.0.0.0:80").is_listening
    assert unix_socket_listening(host, "/run/haproxy/admin.sock")
    assert unix_socket_listening(host, "/run/haproxy-master.sock")


def test_files_owner_and_mode(host):
    admin_socket = host.file("/run/haproxy/admin.sock")
    assert admin_socket.is_socket and admin_socket.mode == 0o660
    socket_dir = host.file("/run/haproxy")
    assert (socket_dir.user, socket_dir.group, socket_dir.mode) == ("haproxy", "haproxy", 0o2775)
    map_file = host.file(MAP)
    assert (map_file.user, map_file.group, map_file.mode) == ("root", "root", 0o644)
    config = host.file(CONFIG)
    assert (config.user, config.mode) == ("root", 0o644)
    assert config.contains("^frontend http_in$")


def test_the_configuration_passes_haproxy_check(host):
    haproxy_check(host)


def test_the_map_says_blue_at_runtime_and_on_disk(node):
    assert node.runtime_map() == {"active": "backend_blue"}
    assert node.disk_map() == {"active": "backend_blue"}


def test_http_through_the_frontend_answers_blue(node):
    node.wait_servers("UP", ["backend_blue/blue1", "backend_green/green1"])
    assert node.answers(host_header=HOST_HEADER) == BLUE


def test_a_config_change_reloads_through_systemctl_and_runs(host, node):
    """The role reloads with `systemctl reload` (same main process, new worker) and the new
    configuration runs: a frontend it adds on :8081 serves. Then back to converge's config."""
    pid, workers = main_pid(host), node.processes()["workers"]
    since = int(host.check_output("date +%s")) - 1
    frontends = [{"name": "http_in", "binds": [{"address": "*:80"}]},
                 {"name": "extra_in", "binds": [{"address": "*:8081"}]}]
    run = playbook(os.path.join(os.path.dirname(__file__), "..", "converge.yml"),
                   {"haproxy_frontends": frontends}, log_name="converge-extra-frontend")
    assert run.rc == 0, run
    assert main_pid(host) == pid, "HAProxy was restarted, not reloaded"
    assert not set(node.processes()["workers"]) & set(workers)
    journal = host.check_output("journalctl --no-pager -o cat -u haproxy --since @%d" % since)
    assert re.search(r"Reload(ing|ed) haproxy\.service", journal), journal
    wait_for(lambda: host.socket("tcp://0.0.0.0:8081").is_listening, what=":8081 listening")
    assert node.answers(url="http://127.0.0.1:8081/release", host_header=HOST_HEADER, count=2) == BLUE

    run = playbook(os.path.join(os.path.dirname(__file__), "..", "converge.yml"), log_name="converge-back")
    assert run.rc == 0, run
    assert main_pid(host) == pid
    wait_for(lambda: not host.socket("tcp://0.0.0.0:8081").is_listening, what=":8081 closed")
    assert node.processes()["failed_reloads"] == 0


# Keep-alive clients inside the node, through :80, until /tmp/ka.stop exists (bounded: 300 s);
# the result in /tmp/ka.json: requests, failed (with the errors), reused connections.
KEEPALIVE_CLIENTS = r"""
import http.client, json, os, threading, time
stats = {"requests": 0, "reused": 0, "failed": []}
def client():
    conn, served, end = None, 0, time.monotonic() + 300
    while not os.path.exists("/tmp/ka.stop") and time.monotonic() < end:
        if conn is None:
            conn, served = http.client.HTTPConnection("127.0.0.1", 80, timeout=10), 0
        try:
            conn.request("GET", "/release", headers={"Host": "%s"})
            response = conn.getresponse()
            response.read()
            stats["reused"] += served > 0
            served += 1
            if response.status != 200:
                stats["failed"].append(response.status)
            if (response.getheader("Connection") or "").lower() == "close":
                conn.close(); conn = None
        except (OSError, http.client.HTTPException) as exc:
            stats["failed"].append(repr(exc)); conn.close(); conn = None
        stats["requests"] += 1
        time.sleep(0.005)
threads = [threading.Thread(target=client) for _ in range(4)]
[thread.start() for thread in threads]
[thread.join() for thread in threads]
with open("/tmp/ka.tmp", "w") as handle:
    json.dump(stats, handle)
os.rename("/tmp/ka.tmp", "/tmp/ka.json")
""" % HOST_HEADER


def test_systemctl_reloads_lose_no_keepalive_request(host, node):
    """`systemctl reload` (SIGUSR2 to the master) three times while clients keep their connections
    alive: the role's option idle-close-on-response lets the old worker answer each idle
    connection's next request (with `Connection: close`) instead of closing it under the client."""
    host.run_expect([0], "rm -f /tmp/ka.stop /tmp/ka.json")
    host.check_output("nohup python3 -c %s >/tmp/ka.log 2>&1 &" % shlex.quote(KEEPALIVE_CLIENTS))
    try:
        for _reload in range(3):
            workers = node.processes()["workers"]
            host.run_expect([0], "systemctl reload haproxy")
            wait_for(lambda: not set(node.processes()["workers"]) & set(workers), what="a new worker")
    finally:
        host.run_expect([0], "touch /tmp/ka.stop")
    stats = json.loads(wait_for(lambda: host.file("/tmp/ka.json").exists and host.file("/tmp/ka.json").content_string,
                                timeout=60, what="the keep-alive clients' result"))
    assert stats["failed"] == [], stats
    assert stats["reused"] > stats["requests"] // 4 > 0, stats
    assert node.processes()["failed_reloads"] == 0


def test_cutover_survives_systemctl_reload_and_rolls_back(host, node):
    run = playbook("cutover.yml", {"release_target": "backend_green"})
    assert run.rc == 0, run
    assert node.runtime_map() == {"active": "backend_green"}
    assert node.disk_map() == {"active": "backend_green"}
    assert node.answers(host_header=HOST_HEADER) == GREEN

    # What an operator's reload does: HAProxy re-reads the map file, which the cutover persisted.
    workers = node.processes()["workers"]
    host.run_expect([0], "systemctl reload haproxy")
    wait_for(lambda: not set(node.processes()["workers"]) & set(workers), what="a new worker")
    assert node.runtime_map() == {"active": "backend_green"}
    node.wait_servers("UP", ["backend_blue/blue1", "backend_green/green1"])
    assert node.answers(host_header=HOST_HEADER) == GREEN

    run = playbook("rollback.yml")
    assert run.rc == 0, run
    assert node.runtime_map() == {"active": "backend_blue"}
    assert node.disk_map() == {"active": "backend_blue"}
    assert node.answers(host_header=HOST_HEADER) == BLUE
    assert not host.file(MAP + ".lock").exists
