"""Test helper on each HAProxy node of the `release` scenario (/usr/local/bin/bgrelease,
run as `python3 /usr/local/bin/bgrelease ...`).

Independent of the collection under test: it speaks the Runtime API and the master CLI
itself, and sends HTTP through the node's own frontend, the way a client does. Every
subcommand prints one JSON object.

  bgrelease state                      the switch at runtime and on disk, server states, workers
      -> {"runtime": "backend_blue", "disk": "backend_blue", "map_file": "...",
          "runtime_map": {...}, "servers": {"backend_green/green2": "UP", ...},
          "workers": [pid, ...], "lock": false}
  bgrelease get [--count N]            N requests through 127.0.0.1:80, a new connection each
      -> {"bodies": ["version=blue", ...], "statuses": [200, ...]}
  bgrelease check [--count N]          state and get in one call -> {"state": ..., "traffic": ...}
  bgrelease cli COMMAND...             one Runtime API command -> {"reply": "..."}
  bgrelease cli-batch 'CMD 1' 'CMD 2'  several commands, one connection each; fails on any reply
                                       that is not empty or a known success message
  bgrelease wait-status STATUS BACKEND/SERVER... [--timeout S]
                                       until `show stat` says exactly STATUS (UP, DOWN, MAINT,
                                       DRAIN) for every server named
  bgrelease resolve NAME               the IPv4 address of a container (docker DNS)
  bgrelease reload                     a plain master CLI `reload`, as `systemctl reload` would
                                       do: HAProxy re-reads the map FILE (no runtime value is
                                       carried over). Waits until the new worker serves the
                                       admin socket.
  bgrelease reload-when VALUE --after-responses N --out FILE
                                       (background) wait until the live map says VALUE and the
                                       backend VALUE answered N more 2xx responses (the cutover's
                                       smoke requests), then reload; the outcome goes to FILE
  bgrelease load --out FILE --stop-file F [--max-seconds S] [--max-requests N]
                                       (background) requests through the frontend until F
                                       exists (or a bound is hit); counts go to FILE
  bgrelease load-stop --out FILE --stop-file F
                                       stop the load generator and print its counts
"""

import argparse
import csv
import http.client
import json
import os
import re
import socket
import sys
import time

ADMIN = "/run/haproxy/admin.sock"
MASTER = "/run/haproxy-master.sock"
MAP = "/etc/haproxy/maps/bluegreen.map"
KEY = "active"
HOST = "release.example.test"


def send(path, line, timeout=5.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(line.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        sock.close()
    return b"".join(chunks).decode("utf-8", "replace")


def runtime_map():
    entries = {}
    for line in send(ADMIN, "show map %s" % MAP).splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries.setdefault(parts[1], parts[2])
    return entries


def disk_map():
    entries = {}
    with open(MAP) as handle:
        for line in handle:
            parts = line.split(None, 1)
            if parts and not parts[0].startswith("#") and len(parts) == 2:
                entries.setdefault(parts[0], parts[1].strip())
    return entries


def servers():
    text = send(ADMIN, "show stat").lstrip("# ")
    found = {}
    for row in csv.DictReader(text.splitlines()):
        if row.get("svname") not in (None, "FRONTEND", "BACKEND"):
            found["%s/%s" % (row["pxname"], row["svname"])] = row["status"]
    return found


def workers():
    pids = []
    section = None
    for line in send(MASTER, "show proc").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            section = title if not title.startswith("<pid>") else section
            continue
        fields = line.split()
        if section == "workers" and fields and fields[0].isdigit():
            pids.append(int(fields[0]))
    return pids


def worker_pid():
    match = re.search(r"(?m)^Pid: (\d+)$", send(ADMIN, "show info"))
    return int(match.group(1)) if match else None


def state():
    live = runtime_map()
    disk = disk_map()
    with open(MAP) as handle:
        map_file = handle.read()
    return {"runtime": live.get(KEY), "disk": disk.get(KEY), "runtime_map": live, "map_file": map_file,
            "servers": servers(), "workers": workers(), "lock": os.path.exists(MAP + ".lock")}


def get_once(timeout=5.0):
    conn = http.client.HTTPConnection("127.0.0.1", 80, timeout=timeout)
    try:
        conn.request("GET", "/release", headers={"Host": HOST})
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace").strip()
    finally:
        conn.close()


def get(count):
    bodies, statuses = [], []
    for dummy in range(count):
        try:
            status, body = get_once()
        except OSError as exc:
            status, body = None, "ERROR: %r" % exc
        statuses.append(status)
        bodies.append(body)
    return {"bodies": bodies, "statuses": statuses}


def wait_status(status, names, timeout):
    deadline = time.monotonic() + timeout
    while True:
        current = servers()
        wrong = dict((name, current.get(name)) for name in names if current.get(name) != status)
        if not wrong:
            return {"status": status, "servers": names}
        if time.monotonic() >= deadline:
            raise SystemExit("not %s after %ss: %s" % (status, timeout, wrong))
        time.sleep(0.2)


# Replies of the Runtime API commands cli-batch sends that mean success
# (2.6 and 3.0: `set server addr` to the address it already has answers "no need to change
# the addr" or "nothing changed".)
_OK_REPLIES = re.compile(r"^(|IP changed from .*|no need to change the addr.*|nothing changed|"
                         r".*changed from .* to .*)$", re.S)


def cli_batch(commands):
    replies = []
    for command in commands:
        reply = send(ADMIN, command).strip()
        if not _OK_REPLIES.match(reply):
            raise SystemExit("HAProxy answered %r to %r" % (reply, command))
        replies.append({"command": command, "reply": reply})
    return {"replies": replies}


def reload(timeout=30.0):
    before = workers()
    started = time.monotonic()
    try:
        reply = send(MASTER, "reload", timeout=timeout)
    except socket.timeout:
        reply = ""
    if "Success=0" in reply:
        raise SystemExit("HAProxy refused the reload: %s" % reply)
    deadline = time.monotonic() + timeout
    while True:
        try:
            after = workers()
            new = [pid for pid in after if pid not in before]
            if new and worker_pid() == new[0]:
                return {"reloaded": True, "before": before, "after": after,
                        "seconds": round(time.monotonic() - started, 2)}
        except OSError:
            pass
        if time.monotonic() >= deadline:
            raise SystemExit("no new worker serving the admin socket %ss after reload (before: %s)"
                             % (timeout, before))
        time.sleep(0.1)


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.rename(tmp, path)


def responses_2xx(backend):
    text = send(ADMIN, "show stat").lstrip("# ")
    for row in csv.DictReader(text.splitlines()):
        if row.get("pxname") == backend and row.get("svname") == "BACKEND":
            return int(row.get("hrsp_2xx") or 0)
    return 0


def reload_when(value, after_responses, out, timeout=120.0):
    deadline = time.monotonic() + timeout
    result = {"reloaded": False, "waited_for": value, "after_responses": after_responses}
    base = None
    while time.monotonic() < deadline:
        try:
            if base is None and runtime_map().get(KEY) == value:
                base = responses_2xx(value)
                result["switch_seen_at"] = time.time()
            if base is not None and responses_2xx(value) >= base + after_responses:
                break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        result["error"] = ("the live map never said %s within %ss" % (value, timeout) if base is None else
                           "%s never answered %d requests within %ss" % (value, after_responses, timeout))
        write(out, result)
        return result
    result["reload_at"] = time.time()
    try:
        result.update(reload())
    except SystemExit as exc:
        result["error"] = str(exc)
    result["runtime_after"] = runtime_map().get(KEY)
    write(out, result)
    return result


def load(out, stop_file, max_seconds, max_requests):
    answers, errors = {}, []
    error_count = 0
    total = 0
    started = time.monotonic()
    first, last = {}, {}
    write(out, {"done": False, "total": 0, "answers": answers, "error_count": 0})
    while (not os.path.exists(stop_file) and time.monotonic() - started < max_seconds
           and total < max_requests):
        total += 1
        try:
            status, body = get_once()
            key = "%d %s" % (status, body)
            answers[key] = answers.get(key, 0) + 1
            first.setdefault(key, round(time.monotonic() - started, 2))
            last[key] = round(time.monotonic() - started, 2)
        except OSError as exc:
            error_count += 1
            if len(errors) < 20:
                errors.append("%.2fs %r" % (time.monotonic() - started, exc))
        if total % 200 == 0:
            write(out, {"done": False, "total": total, "answers": answers, "error_count": error_count})
        time.sleep(0.04)
    write(out, {"done": True, "stopped_by": "stop file" if os.path.exists(stop_file) else "bound",
                "total": total, "answers": answers, "error_count": error_count, "errors": errors,
                "first_seen": first, "last_seen": last, "seconds": round(time.monotonic() - started, 2)})


def load_stop(out, stop_file, timeout=30.0):
    with open(stop_file, "w"):
        pass
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(out) as handle:
                data = json.load(handle)
            if data.get("done"):
                return data
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            raise SystemExit("the load generator did not finish within %ss (no %s)" % (timeout, out))
        time.sleep(0.1)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("state")
    p = sub.add_parser("get")
    p.add_argument("--count", type=int, default=6)
    p = sub.add_parser("check")
    p.add_argument("--count", type=int, default=6)
    p = sub.add_parser("cli")
    p.add_argument("command", nargs="+")
    p = sub.add_parser("cli-batch")
    p.add_argument("commands", nargs="+")
    p = sub.add_parser("wait-status")
    p.add_argument("status")
    p.add_argument("servers", nargs="+", metavar="BACKEND/SERVER")
    p.add_argument("--timeout", type=float, default=30.0)
    p = sub.add_parser("resolve")
    p.add_argument("name")
    sub.add_parser("reload")
    p = sub.add_parser("reload-when")
    p.add_argument("value")
    p.add_argument("--after-responses", type=int, default=12)
    p.add_argument("--out", required=True)
    p = sub.add_parser("load")
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--max-seconds", type=float, default=180.0)
    p.add_argument("--max-requests", type=int, default=50000)
    p = sub.add_parser("load-stop")
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file", required=True)
    args = parser.parse_args()

    if args.action == "state":
        out = state()
    elif args.action == "get":
        out = get(args.count)
    elif args.action == "check":
        out = {"state": state(), "traffic": get(args.count)}
    elif args.action == "cli":
        out = {"reply": send(ADMIN, " ".join(args.command))}
    elif args.action == "cli-batch":
        out = cli_batch(args.commands)
    elif args.action == "wait-status":
        out = wait_status(args.status, args.servers, args.timeout)
    elif args.action == "resolve":
        out = {"name": args.name, "address": socket.gethostbyname(args.name)}
    elif args.action == "reload":
        out = reload()
    elif args.action == "reload-when":
        out = reload_when(args.value, args.after_responses, args.out)
    elif args.action == "load":
        load(args.out, args.stop_file, args.max_seconds, args.max_requests)
        return 0
    else:
        out = load_stop(args.out, args.stop_file)
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
