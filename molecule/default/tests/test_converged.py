"""What the role promises once converged (HAProxy 2.6 or 3.0 in a container, started by the
role in master-worker mode): package, processes, sockets, files with owner and mode, a
configuration `haproxy -c` accepts and that runs, the map, health checks, HTTP through every
frontend. Read-only, except for /tmp/seed-* (test_the_seed_configuration)."""

from __future__ import annotations

import os
import re

from bluegreen_molecule import CONFIG, MAP, haproxy_check, playbook, unix_socket_listening, wait_for
from conftest import SCENARIO

testinfra_hosts = ["haproxy_nodes"]

TAG = os.environ.get("HAPROXY_IMAGE_TAG", "bookworm")
HAPROXY_VERSION = {"bookworm": "2.6.", "trixie": "3.0."}[TAG]
SERVERS = ["backend_blue/blue1", "backend_blue/blue2", "backend_green/green1", "backend_green/green2"]


def test_haproxy_package_is_installed(host):
    package = host.package("haproxy")
    assert package.is_installed
    assert package.version.startswith(HAPROXY_VERSION)


def test_one_master_and_one_worker_run_the_rendered_file(host, node):
    processes = node.processes()
    assert processes["master_pid"] and len(processes["workers"]) == 1
    assert processes["failed_reloads"] == 0
    master = host.process.get(pid=processes["master_pid"])
    assert master.comm == "haproxy"
    words = master.args.split()
    assert "-W" in words
    assert words[words.index("-f") + 1] == CONFIG
    assert words[words.index("-S") + 1].startswith("/run/haproxy-master.sock")
    assert len(host.process.filter(comm="haproxy")) == 2


def test_sockets_listen(host):
    for spec in ("tcp://0.0.0.0:80", "tcp://0.0.0.0:443", "tcp://0.0.0.0:8080"):
        assert host.socket(spec).is_listening, spec
    for path in ("/run/haproxy/admin.sock", "/run/haproxy-master.sock"):
        assert unix_socket_listening(host, path), path


def test_files_owner_and_mode(host):
    admin_socket = host.file("/run/haproxy/admin.sock")
    assert admin_socket.is_socket and admin_socket.mode == 0o660
    socket_dir = host.file("/run/haproxy")
    assert (socket_dir.user, socket_dir.group, socket_dir.mode) == ("haproxy", "haproxy", 0o2775)
    map_dir = host.file(os.path.dirname(MAP))
    assert map_dir.is_directory and map_dir.mode == 0o755
    map_file = host.file(MAP)
    assert (map_file.user, map_file.group, map_file.mode) == ("root", "root", 0o644)
    certificate = host.file("/etc/haproxy/certs/bluegreen-test.pem")
    assert (certificate.user, certificate.mode) == ("root", 0o600)
    config = host.file(CONFIG)
    assert (config.user, config.group, config.mode) == ("root", "root", 0o644)


def test_the_configuration_passes_haproxy_check(host):
    haproxy_check(host)


def test_running_proxies_are_the_rendered_ones(host, node):
    config = host.file(CONFIG).content_string
    rows = node.cli("show stat", parse="stat")
    running_frontends = sorted(r["pxname"] for r in rows if r["svname"] == "FRONTEND")
    running_backends = sorted(r["pxname"] for r in rows if r["svname"] == "BACKEND")
    assert running_frontends == sorted(re.findall(r"(?m)^frontend (\S+)", config)) == ["hosts_in", "http_in"]
    assert running_backends == sorted(re.findall(r"(?m)^backend (\S+)", config)) == ["backend_blue", "backend_green"]
    assert sorted("%s/%s" % (r["pxname"], r["svname"]) for r in rows
                  if r["svname"] not in ("FRONTEND", "BACKEND")) == SERVERS
    assert re.search(r"(?m)^    server blue1 blue1:8080 check$", config)
    assert "(%s)" % MAP in node.cli("show map")


def test_the_map_says_blue_at_runtime_and_on_disk(host, node):
    expected = {"active": "backend_blue", "app.example.test": "backend_blue"}
    assert node.runtime_map() == expected
    assert node.disk_map() == expected


def test_every_server_is_up_with_a_passing_http_check(node):
    def checked():
        rows = [r for r in node.cli("show stat", parse="stat") if r["svname"] not in ("FRONTEND", "BACKEND")]
        assert {(r["status"], r["check_status"], r["check_code"]) for r in rows} == {("UP", "L7OK", "200")}, rows
        return True
    wait_for(checked, timeout=30, what="every server UP with L7OK 200")


def test_http_through_every_frontend(node):
    blue = {(200, "version=blue")}
    assert node.answers(count=6) == blue
    assert node.answers(url="https://127.0.0.1/release", count=2) == blue
    # The Host-header frontend routes by the map (keys are lower-cased).
    assert node.answers(url="http://127.0.0.1:8080/release", host_header="APP.example.test", count=2) == blue


def test_the_seed_configuration(host):
    """The role's defaults alone render the seed: its frontend, backends, checks and sockets,
    and HAProxy accepts it."""
    run = playbook(os.path.join(SCENARIO, "seed.yml"))
    assert run.rc == 0, run
    seed = host.file("/tmp/seed-haproxy.cfg").content_string
    for pattern in (
        r"(?m)^frontend http_in\n    bind \*:80\n    option idle-close-on-response\n"
        r"    use_backend %\[str\(active\),map\(/etc/haproxy/maps/bluegreen\.map,backend_blue\)\]$",
        r"(?m)^backend backend_blue\n    balance roundrobin\n    option httpchk GET /healthz\n"
        r"    http-check expect status 200\n    server blue1 127\.0\.0\.1:8081 check$",
        r"(?m)^backend backend_green\n    balance roundrobin\n    option httpchk GET /healthz\n"
        r"    http-check expect status 200\n    server green1 127\.0\.0\.1:8082 check$",
        r"(?m)^    default-server inter 5s fall 3 rise 2$",
        r"(?m)^    mode http$",
        r"(?m)^    stats socket /run/haproxy/admin\.sock mode 660 level admin$",
        r"(?m)^    master-worker$",
        # Reloads lossless for keep-alive clients (both HAProxy 2.6 and 3.0 have the option).
        r"(?m)^    hard-stop-after 60s$",
    ):
        assert re.search(pattern, seed), (pattern, seed)
    assert len(re.findall(r"(?m)^frontend ", seed)) == 1
    assert len(re.findall(r"(?m)^backend ", seed)) == 2
    assert re.search(r"(?m)^active backend_blue$", host.file("/tmp/seed-bluegreen.map").content_string)
    haproxy_check(host, "/tmp/seed-haproxy.cfg")
