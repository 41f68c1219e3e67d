#!/usr/bin/python3
"""Test helper for verify.yml: one HAProxy Runtime API command, output as JSON.

Independent of the role's control script on purpose: it talks to the admin
(stats) socket the role configured, the way an operator or the cutover would.

  hapi.py [--socket PATH] [--format raw|stat|map|lines] COMMAND...

  raw    {"reply": "<text>"}
  stat   {"rows": [{"pxname": ..., "svname": ..., "status": ..., ...}]}  (show stat CSV)
  map    {"entries": {"key": "value"}}                                (show map <map>)
  lines  {"lines": ["...", ...]}                                      (non-empty lines)
"""

import argparse
import csv
import json
import socket
import sys


def send(path, line, timeout=5.0):
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", default="/run/haproxy/admin.sock")
    parser.add_argument("--format", default="raw", choices=["raw", "stat", "map", "lines"])
    parser.add_argument("command", nargs="+")
    args = parser.parse_args()
    reply = send(args.socket, " ".join(args.command))
    if args.format == "stat":
        text = reply.lstrip("# ")
        rows = [dict((k, v) for k, v in row.items() if k) for row in csv.DictReader(text.splitlines())]
        out = {"rows": [r for r in rows if r.get("pxname")]}
    elif args.format == "map":
        entries = {}
        for line in reply.splitlines():
            parts = line.split(None, 2)
            if len(parts) == 3 and parts[0].startswith("0x"):
                entries.setdefault(parts[1], parts[2])
        out = {"entries": entries}
    elif args.format == "lines":
        out = {"lines": [line for line in reply.splitlines() if line.strip()]}
    else:
        out = {"reply": reply}
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
