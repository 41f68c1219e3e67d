"""Test helper for verify.yml (installed on the HAProxy node as /usr/local/bin/bgtest).

One task per check instead of many: each subcommand prints one JSON object.
It talks to the admin (stats) socket the role configured, the way an operator
or the cutover would, independently of the role's own control script.

  bgtest cli [--format raw|stat|map] COMMAND...   one Runtime API command
      raw  -> {"reply": "<text>"}
      stat -> {"rows": [{"pxname": ..., "svname": ..., "status": ...}, ...]}
      map  -> {"entries": {"key": "value", ...}}
  bgtest get URL [--host H] [--count N]           N requests, new connection each
      -> {"bodies": ["version=blue", ...], "statuses": [200, ...]}
  bgtest proc                                     the master CLI's `show proc`
      -> {"running", "master_cli", "master_pid", "workers": [...], "failed_reloads"}
  bgtest snapshot [--map PATH]                    what "nothing changed" compares
      -> {"proc": <bgtest proc>, "config": ..., "map_file": ...,
          "runtime": {...}}
"""

import argparse
import re
import csv
import http.client
import json
import socket
import ssl
import sys
import urllib.parse

ADMIN_SOCKET = "/run/haproxy/admin.sock"
MASTER_SOCKET = "/run/haproxy-master.sock"
CONFIG = "/etc/haproxy/haproxy.cfg"
MAP = "/etc/haproxy/maps/bluegreen.map"


def send(line, path=ADMIN_SOCKET, timeout=5.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    try:
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


def parse_stat(reply):
    text = reply.lstrip("# ")
    rows = [dict((k, v) for k, v in row.items() if k) for row in csv.DictReader(text.splitlines())]
    return [r for r in rows if r.get("pxname")]


def parse_map(reply):
    entries = {}
    for line in reply.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries.setdefault(parts[1], parts[2])
    return entries


def get(url, host=None, count=1, timeout=5.0):
    parts = urllib.parse.urlsplit(url)
    bodies, statuses = [], []
    for dummy in range(count):
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(parts.hostname, parts.port or 443, timeout=timeout,
                                               context=ssl._create_unverified_context())
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
        try:
            headers = {"Host": host} if host else {}
            conn.request("GET", parts.path or "/", headers=headers)
            response = conn.getresponse()
            statuses.append(response.status)
            bodies.append(response.read().decode("utf-8", "replace").strip())
        except OSError as exc:
            statuses.append(None)
            bodies.append("ERROR: %s" % exc)
        finally:
            conn.close()
    return {"bodies": bodies, "statuses": statuses}


def processes():
    """HAProxy's processes as the master CLI lists them (parsed here, independently of the collection)."""
    try:
        reply = send("show proc", MASTER_SOCKET)
    except OSError:
        return {"running": False, "master_cli": False, "master_pid": None, "workers": [], "failed_reloads": None}
    master_pid, workers, failed, section = None, [], 0, ""
    for line in reply.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").lower()
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit():
            continue
        if fields[1] == "master":
            master_pid = int(fields[0])
            counter = re.search(r"\[failed: (\d+)\]", line)
            failed = int(counter.group(1)) if counter else 0
        elif fields[1] == "worker" and section == "workers":
            workers.append(int(fields[0]))
    return {"running": master_pid is not None, "master_cli": master_pid is not None, "master_pid": master_pid,
            "workers": workers, "failed_reloads": failed}


def read(path):
    with open(path) as handle:
        return handle.read()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="action", required=True)
    p_cli = sub.add_parser("cli")
    p_cli.add_argument("--format", default="raw", choices=["raw", "stat", "map"])
    p_cli.add_argument("command", nargs="+")
    p_get = sub.add_parser("get")
    p_get.add_argument("url")
    p_get.add_argument("--host")
    p_get.add_argument("--count", type=int, default=1)
    sub.add_parser("proc")
    p_snap = sub.add_parser("snapshot")
    p_snap.add_argument("--map", default=MAP)
    args = parser.parse_args()

    if args.action == "cli":
        reply = send(" ".join(args.command))
        if args.format == "stat":
            out = {"rows": parse_stat(reply)}
        elif args.format == "map":
            out = {"entries": parse_map(reply)}
        else:
            out = {"reply": reply}
    elif args.action == "get":
        out = get(args.url, args.host, args.count)
    elif args.action == "proc":
        out = processes()
    else:
        out = {
            "proc": processes(),
            "config": read(CONFIG),
            "map_file": read(args.map),
            "runtime": parse_map(send("show map %s" % args.map)),
        }
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
