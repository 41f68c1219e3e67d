"""The role's routing for canary steps, the test listener and mode tcp, on a real HAProxy.

The role's own template (variables checked by its validate tasks first, the candidate checked
with `haproxy -c` as the role does) is rendered over a lab HAProxy on loopback (tests/lab.py,
blue and green app processes) and reloaded. The map entries the release engine will write at
runtime (`<key>.weight`, `<key>.canary`, `<key>.preview`) are set here with `set map`/`add map`,
and users' requests show where they land.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess

import pytest

from lab import APP, HAPROXY, App, HAProxyEnv, free_port, wait_for

USERS = 1000
SHARE_TOLERANCE = 5.0  # percentage points

RENDER_PLAYBOOK = """\
- name: Render the haproxy role's configuration as the role does
  hosts: localhost
  gather_facts: false
  tasks:
    - name: The role's variable checks (its validate tasks), defaults and vars
      ansible.builtin.include_role:
        name: bluegreen.haproxy.haproxy
        tasks_from: validate
        public: true
    - name: The role's template, checked with haproxy -c before it replaces the lab's
      ansible.builtin.template:
        src: {template}
        dest: "{{{{ routing_config_path }}}}"
        mode: "0644"
        validate: "{{{{ haproxy_binary }}}} -c -f %s"
"""
TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "roles", "haproxy", "templates", "haproxy.cfg.j2")


def role_vars(env, **extra):
    """The role configured like the lab's HAProxy (same sockets, map and app servers)."""
    def servers(color):
        return [dict(name=app.name, address="127.0.0.1", port=app.port)
                for app in env.apps.values() if app.color == color]
    variables = dict(
        routing_config_path=env.config_path,
        haproxy_binary=HAPROXY,
        haproxy_stats_socket_path=env.socket,
        haproxy_stats_socket_options="",
        haproxy_global_log=[],
        haproxy_global_chroot="",
        haproxy_global_extra=["noreuseport"],
        haproxy_switch_map_path=env.map_path,
        haproxy_defaults_timeouts={"connect": "2s", "client": "10s", "server": "10s"},
        haproxy_defaults_default_server={"inter": env.inter, "fall": 2, "rise": 2},
        haproxy_frontends=[dict(name="fe_main", binds=[dict(address="127.0.0.1:%d" % env.frontend_port)])],
        haproxy_backends=[dict(name="backend_blue", servers=servers("blue")),
                          dict(name="backend_green", servers=servers("green"))],
    )
    variables.update(extra)
    return variables


def render(run_playbook, tmp_path, variables):
    playbook = tmp_path / "render-routing.yml"
    playbook.write_text(RENDER_PLAYBOOK.format(template=TEMPLATE))
    return run_playbook(str(playbook), variables)


def failure_messages(report):
    return [result.get("msg", "") for play in report["plays"] for task in play["tasks"]
            for result in task["hosts"].values() if result.get("failed")]


def apply(env, run_playbook, tmp_path, variables, map_lines=()):
    """Render the role's configuration over the lab's, add map lines to the file, reload."""
    code, report = render(run_playbook, tmp_path, variables)
    assert code == 0, failure_messages(report)
    if map_lines:
        with open(env.map_path, "a") as handle:
            handle.write("".join(line + "\n" for line in map_lines))
    env.reload()
    env.wait_all_up()
    with open(env.config_path) as handle:
        return handle.read()


class Client:
    """Requests to one listener, each on a fresh connection (as a new user's browser would)."""

    def __init__(self, port):
        self.port = port

    def get(self, headers=None, path="/release"):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            connection.request("GET", path, headers=dict(headers or {}, Connection="close"))
            response = connection.getresponse()
            return response.status, response.read().decode().strip()
        finally:
            connection.close()

    def color(self, headers=None):
        status, body = self.get(headers)
        assert status == 200 and body.startswith("version="), (status, body)
        return body[len("version="):]


def user_colors(client, users, **headers):
    """The version each user (x-user-id: user<n>) gets."""
    return {user: client.color(dict(headers, **{"x-user-id": "user%d" % user})) for user in users}


def set_entry(env, key, value):
    """Set a map entry at runtime (add it when absent), as the engine will; wait until it reads back."""
    if env.map_value(key) is None:
        env.runtime("add map %s %s %s" % (env.map_path, key, value))
    else:
        env.runtime("set map %s %s %s" % (env.map_path, key, value))
    wait_for(lambda: env.map_value(key) == str(value), what="%s = %s at runtime" % (key, value))


def delete_entry(env, key):
    env.runtime("del map %s %s" % (env.map_path, key))
    wait_for(lambda: env.map_value(key) is None, what="%s removed at runtime" % key)


def share(colors, color="green"):
    return 100.0 * sum(1 for value in colors.values() if value == color) / len(colors)


@pytest.fixture
def canary_lab(haproxy_env, run_playbook, tmp_path):
    """fe_main: the canary by header bucket on str(active); fe_host: a host-keyed map; a test listener."""
    env = haproxy_env
    env.host_port = host_port = free_port()
    env.listener_port = listener_port = free_port()
    env.config_text = apply(env, run_playbook, tmp_path, role_vars(
        env,
        haproxy_canary=True,
        haproxy_canary_bucket="req.hdr(x-user-id)",
        haproxy_test_listener=["127.0.0.1:%d" % listener_port],
        haproxy_frontends=[
            # A rule of the public frontend the test listener must apply too.
            dict(name="fe_main", binds=[dict(address="127.0.0.1:%d" % env.frontend_port)],
                 options=["http-request return status 418 content-type text/plain string teapot if { path /teapot }"]),
            dict(name="fe_host", switch_key="req.hdr(host),lower", binds=[dict(address="127.0.0.1:%d" % host_port)]),
        ],
    ), map_lines=["app.test backend_blue"])
    yield env


def test_the_weight_sends_a_stable_monotone_share_of_users_to_the_canary(canary_lab):
    env = canary_lab
    client = Client(env.frontend_port)
    users = range(USERS)

    # No weight entry at all: exactly the plain switch.
    assert share(user_colors(client, users)) == 0.0
    set_entry(env, "active.canary", "backend_green")
    assert share(user_colors(client, users)) == 0.0, "absent weight: nobody on the canary"
    set_entry(env, "active.weight", 0)
    assert share(user_colors(client, users)) == 0.0, "weight 0: nobody on the canary"

    set_entry(env, "active.weight", 30)
    at_30 = user_colors(client, users)
    assert abs(share(at_30) - 30) <= SHARE_TOLERANCE, share(at_30)
    for _repeat in range(2):
        assert user_colors(client, users) == at_30, "a user saw both versions at one weight"

    set_entry(env, "active.weight", 50)
    at_50 = user_colors(client, users)
    assert abs(share(at_50) - 50) <= SHARE_TOLERANCE, share(at_50)
    moved_back = [user for user, color in at_30.items() if color == "green" and at_50[user] != "green"]
    assert moved_back == [], "raising the weight flipped %d canary users back" % len(moved_back)

    set_entry(env, "active.weight", 100)
    assert share(user_colors(client, users)) == 100.0, "weight 100: everybody on the canary"
    # A request without the bucket's sample (no x-user-id) has no bucket: it stays stable.
    assert client.color() == "blue"

    delete_entry(env, "active.weight")
    assert share(user_colors(client, users)) == 0.0, "weight removed: back to the plain switch"


def test_a_host_keyed_map_runs_a_canary_per_host(canary_lab):
    env = canary_lab
    client = Client(env.host_port)
    users = range(USERS)
    host = {"Host": "App.Test"}  # the key is req.hdr(host),lower
    assert share(user_colors(client, users, **host)) == 0.0

    set_entry(env, "app.test.canary", "backend_green")
    set_entry(env, "app.test.weight", 30)
    at_30 = user_colors(client, users, **host)
    assert abs(share(at_30) - 30) <= SHARE_TOLERANCE, share(at_30)
    assert user_colors(client, users, **host) == at_30
    # Another service of the map (its own keys absent) and the str(active) frontend are untouched.
    assert client.get({"Host": "other.test", "x-user-id": "user1"}) == (200, "version=blue")
    assert share(user_colors(Client(env.frontend_port), range(200))) == 0.0

    set_entry(env, "app.test.weight", 100)
    assert share(user_colors(client, users, **host)) == 100.0


def test_the_test_listener_serves_the_preview_only(canary_lab):
    env = canary_lab
    listener, public = Client(env.listener_port), Client(env.frontend_port)
    # No preview entry: refused, never the live version passed off as the preview.
    assert [listener.get()[0] for _attempt in range(5)] == [503] * 5

    set_entry(env, "active.preview", "backend_green")
    assert [listener.color() for _attempt in range(20)] == ["green"] * 20
    assert [public.color({"x-user-id": "user%d" % n}) for n in range(200)] == ["blue"] * 200

    delete_entry(env, "active.preview")
    assert listener.get()[0] == 503
    assert public.color() == "blue"


def test_the_test_listener_applies_the_frontends_rules(canary_lab):
    """The test listener is what fe_main serves: its raw lines and switch key, routed by preview."""
    env = canary_lab
    set_entry(env, "active.preview", "backend_green")
    assert Client(env.listener_port).get(path="/teapot") == (418, "teapot")
    assert Client(env.frontend_port).get(path="/teapot") == (418, "teapot")
    frontend = env.config_text.split("frontend bg_test_listener", 1)[1].split("\nbackend ", 1)[0]
    assert "bind 127.0.0.1:%d" % env.listener_port in frontend
    assert "str(active.preview),map(%s)" % canary_lab.map_path in frontend
    assert "http-request deny deny_status 503 unless { var(txn.bg_preview) -m found }" in frontend


def tcp_color(port, connection=None):
    """The version a raw TCP connection reaches (one request on it); the socket stays open when given."""
    sock = connection or socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /release HTTP/1.1\r\nHost: release.test\r\n\r\n")
    data = b""
    while b"version=" not in data or not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    if connection is None:
        sock.close()
    return data.decode().rsplit("version=", 1)[1].strip()


def test_a_mode_tcp_frontend_switches_new_connections_by_the_map(haproxy_env, run_playbook, tmp_path):
    env = haproxy_env
    variables = role_vars(env, haproxy_canary=True)
    # The tcp frontend routes to mode tcp backends, its fallback one of them.
    variables["haproxy_frontends"] = [
        dict(name="fe_tcp", mode="tcp", switch_fallback_backend="backend_tcp_blue",
             binds=[dict(address="127.0.0.1:%d" % env.frontend_port)]),
    ]
    env.make_live("backend_tcp_blue")
    for color in ("blue", "green"):
        # The servers speak HTTP: option httpchk stays in a mode tcp backend.
        variables["haproxy_backends"].append(dict(name="backend_tcp_" + color, mode="tcp", servers=[
            dict(name=app.name, address="127.0.0.1", port=app.port) for app in env.apps.values() if app.color == color]))
    text = apply(env, run_playbook, tmp_path, variables)
    frontend = text.split("frontend fe_tcp", 1)[1].split("\nbackend ", 1)[0]
    assert "http-request" not in frontend and "idle-close-on-response" not in frontend
    assert "option tcplog" in frontend  # the defaults' httplog would only warn and fall back
    assert "tcp-request content set-var(txn.bg_bucket) src,crc32(1),mod(100)" in frontend
    assert "map(%s,backend_tcp_blue)" % env.map_path in frontend
    assert "option httpchk GET /healthz" in text.split("backend backend_tcp_green", 1)[1]
    env.wait_status("backend_tcp_green", "green1", "UP")

    held = socket.create_connection(("127.0.0.1", env.frontend_port), timeout=5)
    assert tcp_color(env.frontend_port, held) == "blue"
    assert [tcp_color(env.frontend_port) for _attempt in range(10)] == ["blue"] * 10

    env.runtime("set map %s active backend_tcp_green" % env.map_path)
    wait_for(lambda: env.map_value() == "backend_tcp_green", what="active = backend_tcp_green")
    assert [tcp_color(env.frontend_port) for _attempt in range(10)] == ["green"] * 10
    # A TCP connection is routed once: the one opened before the switch stays on blue.
    assert tcp_color(env.frontend_port, held) == "blue"
    held.close()

    # The canary rules work in mode tcp too (one client address, one bucket: 0 or 100 here).
    set_entry(env, "active.canary", "backend_tcp_blue")
    set_entry(env, "active.weight", 100)
    assert [tcp_color(env.frontend_port) for _attempt in range(10)] == ["blue"] * 10
    set_entry(env, "active.weight", 0)
    assert [tcp_color(env.frontend_port) for _attempt in range(10)] == ["green"] * 10


def test_the_default_configuration_renders_no_canary_and_no_test_listener(haproxy_env, run_playbook, tmp_path):
    text = apply(haproxy_env, run_playbook, tmp_path, role_vars(haproxy_env))
    assert "bg_" not in text and "tcp-request" not in text
    assert "    use_backend %%[str(active),map(%s,backend_blue)]\n" % haproxy_env.map_path in text


@pytest.mark.parametrize("extra, expected", [
    (dict(haproxy_canary=True, haproxy_canary_bucket=""), 'haproxy_canary_bucket "" must be a sample expression'),
    (dict(haproxy_canary=True, haproxy_canary_bucket="req.hdr(x user)"), "haproxy_canary_bucket"),
    (dict(haproxy_test_listener=["127.0.0.1:18080"], haproxy_frontends=[
        dict(name="fe_main", use_switch=False, default_backend="backend_blue", binds=[dict(address="127.0.0.1:18081")])]),
     "haproxy_test_listener is set but no HTTP frontend routes by the switch"),
    (dict(haproxy_test_listener=["127.0.0.1:18080"], haproxy_frontends=[
        dict(name="fe_main", mode="tcp", binds=[dict(address="127.0.0.1:18081")])]),
     "haproxy_test_listener is set but no HTTP frontend routes by the switch"),
    (dict(haproxy_test_listener=["localhost"]), 'haproxy_test_listener: bind address "localhost" must be [ADDRESS]:PORT'),
    (dict(haproxy_test_listener=["127.0.0.1:18080"], haproxy_test_listener_name="backend_green"),
     "haproxy_test_listener_name 'backend_green' is already the name of a frontend or backend"),
    (dict(haproxy_test_listener=["127.0.0.1:18080"], haproxy_test_listener_frontend="fe_other"),
     "haproxy_test_listener_frontend 'fe_other' is not one of the HTTP frontends with the switch"),
    (dict(haproxy_canary=True, haproxy_frontends=[
        dict(name="fe_main", canary=False, binds=[dict(address="127.0.0.1:18081")])]),
     "haproxy_canary is true but no frontend routes by the switch with the canary"),
    (dict(haproxy_frontends=[dict(name="fe_main", canary=True, use_switch=False, default_backend="backend_blue",
                                  binds=[dict(address="127.0.0.1:18081")])]),
     "frontend 'fe_main' has canary: true but use_switch: false"),
    (dict(haproxy_frontends=[dict(name="fe_main", canary_bucket="", binds=[dict(address="127.0.0.1:18081")])]),
     "frontend 'fe_main': canary_bucket \"\" must be a sample expression"),
    (dict(haproxy_frontends=[dict(name="fe_main", switch_fallback_backend="backend_nope",
                                  binds=[dict(address="127.0.0.1:18081")])]),
     "frontend 'fe_main': switch_fallback_backend 'backend_nope' is not one of the backends"),
])
def test_bad_routing_inputs_fail_before_anything_changes(run_playbook, tmp_path, extra, expected):
    # No HAProxy needed: the role's checks refuse the variables before the template is rendered.
    apps = {name: App(name=name, color=name[:-1], port=port, workdir=str(tmp_path))
            for name, port in (("blue1", 18091), ("green1", 18092))}
    env = HAProxyEnv(workdir=str(tmp_path), apps=apps, frontend_port=18081, stats_port=18082, inter="1s")
    before = "# the configuration in place\n"
    with open(env.config_path, "w") as handle:
        handle.write(before)
    code, report = render(run_playbook, tmp_path, role_vars(env, **extra))
    messages = failure_messages(report)
    assert code != 0 and any(expected in message for message in messages), messages
    assert all("nothing on the node was changed" in message for message in messages), messages
    with open(env.config_path) as handle:
        assert handle.read() == before


# ------------------------------------------------------------------ HAProxy 3.0 (Debian trixie)

HAPROXY_30_IMAGE = "bluegreen/haproxy-node:trixie"  # `make images`; Debian 13's HAProxy 3.0

# The same checks, standard library only, run by the image's python3 next to its HAProxy 3.0,
# on the configuration the role rendered here (the directory is mounted at the same path).
CHECK_IN_CONTAINER = r'''
import http.client, json, socket, subprocess, sys, time
D, APP, PORTS = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
MAP, CFG, SOCK = D + "/maps/bluegreen.map", D + "/haproxy.cfg", D + "/admin.sock"
results = {"version": subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]}
results["check"] = subprocess.run(["haproxy", "-c", "-q", "-f", CFG]).returncode
apps = [subprocess.Popen([sys.executable, APP, "--color", color, "--bind", "127.0.0.1", "--port", str(PORTS[color])],
                         stderr=subprocess.DEVNULL) for color in ("blue", "green")]
haproxy = subprocess.Popen(["haproxy", "-db", "-f", CFG], stderr=subprocess.DEVNULL)
def cli(command):
    deadline = time.monotonic() + 15
    while True:
        try:
            sock = socket.socket(socket.AF_UNIX); sock.connect(SOCK); break
        except OSError:
            if time.monotonic() > deadline: raise
            time.sleep(0.1)
    sock.sendall((command + "\n").encode()); out = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk: break
        out += chunk
    sock.close(); return out.decode()
deadline = time.monotonic() + 30
while cli("show stat").count(",UP,") < 4:
    assert time.monotonic() < deadline, cli("show stat")
    time.sleep(0.2)
def put(key, value):
    keys = [line.split()[1] for line in cli("show map " + MAP).splitlines() if len(line.split()) == 3]
    cli("%s map %s %s %s" % ("set" if key in keys else "add", MAP, key, value))
def get(port, headers):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    connection.request("GET", "/release", headers=headers)
    response = connection.getresponse(); body = response.read().decode().strip(); connection.close()
    return response.status, body
def colors(port, users=1000, **headers):
    return {user: get(port, dict(headers, **{"x-user-id": "user%d" % user}))[1] for user in range(users)}
def share(answers):
    return 100.0 * sum(answer == "version=green" for answer in answers.values()) / len(answers)
def tcp(sock=None):
    own = sock is None
    sock = sock or socket.create_connection(("127.0.0.1", PORTS["tcp"]), timeout=5)
    sock.sendall(b"GET /release HTTP/1.1\r\nHost: release.test\r\n\r\n"); data = b""
    while b"version=" not in data or not data.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk: break
        data += chunk
    if own: sock.close()
    return data.decode().rsplit("version=", 1)[1].strip()
results["absent"] = share(colors(PORTS["main"]))
put("active.canary", "backend_green"); put("active.weight", 0)
results["weight0"] = share(colors(PORTS["main"]))
put("active.weight", 30); at_30 = colors(PORTS["main"])
results["weight30"], results["stable"] = share(at_30), colors(PORTS["main"]) == at_30
put("active.weight", 50); at_50 = colors(PORTS["main"])
results["weight50"] = share(at_50)
results["flipped_back"] = sum(1 for user, answer in at_30.items() if answer == "version=green" and at_50[user] != answer)
put("active.weight", 100)
results["weight100"], results["no_bucket"] = share(colors(PORTS["main"])), get(PORTS["main"], {})[1]
put("app.test.canary", "backend_green"); put("app.test.weight", 30)
results["host30"] = share(colors(PORTS["host"], Host="App.Test"))
results["other_host"] = get(PORTS["host"], {"Host": "other.test", "x-user-id": "user1"})[1]
results["listener_without_preview"] = get(PORTS["listener"], {})[0]
put("active.preview", "backend_green"); put("active.weight", 0)
results["listener_with_preview"] = get(PORTS["listener"], {})[1]
results["public_with_preview"] = share(colors(PORTS["main"], 200))
held = socket.create_connection(("127.0.0.1", PORTS["tcp"]), timeout=5)
results["tcp_before"] = [tcp(held)] + [tcp() for _attempt in range(5)]
cli("set map %s tcp backend_tcp_green" % MAP)
results["tcp_after"], results["tcp_held"] = [tcp() for _attempt in range(5)], tcp(held)
haproxy.terminate()
for app in apps: app.terminate()
print(json.dumps(results))
'''


def docker_image_present(image):
    if not shutil.which("docker"):
        return False
    return subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode == 0


def test_the_same_routing_on_haproxy_3_0(run_playbook, tmp_path):
    """The configuration the role renders, checked and driven by traffic on HAProxy 3.0 (trixie image)."""
    if not docker_image_present(HAPROXY_30_IMAGE):
        pytest.skip("docker or the image %s is not available (make images)" % HAPROXY_30_IMAGE)
    ports = dict(main=29301, host=29302, listener=29303, tcp=29304, blue=29311, green=29312)  # in the container
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "bluegreen.map").write_text("active backend_blue\napp.test backend_blue\ntcp backend_tcp_blue\n")

    def backend(name, port, **extra):
        return dict(name=name, servers=[dict(name=name.rsplit("_", 1)[1] + "1", address="127.0.0.1", port=port)], **extra)

    code, report = render(run_playbook, tmp_path, dict(
        routing_config_path=str(tmp_path / "haproxy.cfg"),
        haproxy_binary=HAPROXY,  # the host's 2.6 checks it here, 3.0 in the container
        haproxy_user="root", haproxy_group="root",
        haproxy_stats_socket_path=str(tmp_path / "admin.sock"),
        haproxy_global_log=[], haproxy_global_chroot="", haproxy_global_extra=["noreuseport"],
        haproxy_switch_map_path=str(tmp_path / "maps" / "bluegreen.map"),
        haproxy_defaults_default_server={"inter": "300ms", "fall": 2, "rise": 2},
        haproxy_canary=True, haproxy_canary_bucket="req.hdr(x-user-id)",
        haproxy_test_listener=["127.0.0.1:%d" % ports["listener"]],
        haproxy_frontends=[
            dict(name="fe_main", binds=[dict(address="127.0.0.1:%d" % ports["main"])]),
            dict(name="fe_host", switch_key="req.hdr(host),lower", binds=[dict(address="127.0.0.1:%d" % ports["host"])]),
            dict(name="fe_tcp", mode="tcp", switch_key="str(tcp)", switch_fallback_backend="backend_tcp_blue",
                 binds=[dict(address="127.0.0.1:%d" % ports["tcp"])]),
        ],
        haproxy_backends=[backend("backend_blue", ports["blue"]), backend("backend_green", ports["green"]),
                          backend("backend_tcp_blue", ports["blue"], mode="tcp"),
                          backend("backend_tcp_green", ports["green"], mode="tcp")],
    ))
    assert code == 0, failure_messages(report)
    (tmp_path / "check.py").write_text(CHECK_IN_CONTAINER)
    app_dir = os.path.dirname(APP)
    completed = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "-v", "%s:%s" % (tmp_path, tmp_path),
         "-v", "%s:%s:ro" % (app_dir, app_dir), "--entrypoint", "python3", HAPROXY_30_IMAGE,
         str(tmp_path / "check.py"), str(tmp_path), APP, json.dumps(ports)],
        capture_output=True, text=True, timeout=600, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results["version"].startswith("HAProxy version 3.0"), results
    assert results["check"] == 0
    assert results["absent"] == results["weight0"] == 0.0
    assert abs(results["weight30"] - 30) <= SHARE_TOLERANCE and results["stable"], results
    assert abs(results["weight50"] - 50) <= SHARE_TOLERANCE and results["flipped_back"] == 0, results
    assert results["weight100"] == 100.0 and results["no_bucket"] == "version=blue", results
    assert abs(results["host30"] - 30) <= SHARE_TOLERANCE and results["other_host"] == "version=blue", results
    assert results["listener_without_preview"] == 503 and results["listener_with_preview"] == "version=green", results
    assert results["public_with_preview"] == 0.0, results
    assert results["tcp_before"] == ["blue"] * 6, results
    assert results["tcp_after"] == ["green"] * 5 and results["tcp_held"] == "blue", results
