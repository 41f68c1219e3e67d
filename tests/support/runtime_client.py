"""The tests' own HAProxy Runtime API client: one command, one connection, the raw reply.

One helper for everything on the test side: tests/lab.py (integration tests and the loopback
demo), scripts/demo.py and the Molecule scenarios' testinfra tests, which copy this file onto a
node and run it with the node's python3. It is deliberately independent of the collection's
own client (plugins/module_utils), so the tests check the collection against a second
implementation, and it uses the standard library only (Python 3.6+), so any node can run it.

Protocol (HAProxy's management guide, non-interactive mode): connect, send the command and a
newline, half-close, read until HAProxy closes. A socket that is absent or refuses the
connection (HAProxy is starting or reloading) is retried until `retry_for` seconds have
passed; anything after the connect is never retried, as a command may not be idempotent.

As a library:
    from runtime_client import command, map_entries
    map_entries(command("/run/haproxy/admin.sock", "show map /etc/haproxy/maps/bluegreen.map"))

As a program (prints the reply; with --json, the parsed reply as JSON):
    python3 runtime_client.py [--socket PATH|HOST:PORT] [--timeout S] [--retry-for S]
                              [--json stat|map|proc|info] COMMAND...
"""

from __future__ import annotations

import argparse
import csv
import errno
import json
import re
import socket
import sys
import time

ADMIN_SOCKET = "/run/haproxy/admin.sock"

# Connect errors that mean "not there yet": the socket file does not exist (yet), nobody
# listens on it (a reload between two workers), or the listen queue is full.
_RETRYABLE_ERRNOS = (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN)


def connect(address, timeout=5.0, retry_for=0.0):
    """A connected socket to a UNIX socket path (starts with "/") or a "host:port" address.

    Retries refused and absent sockets every 0.1 s until retry_for seconds have passed, then
    raises the last error.
    """
    deadline = time.monotonic() + retry_for
    while True:
        try:
            if address.startswith("/"):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(timeout)
                try:
                    sock.connect(address)
                except BaseException:
                    sock.close()
                    raise
                return sock
            host, port = address.rsplit(":", 1)
            return socket.create_connection((host, int(port)), timeout=timeout)
        except OSError as exc:
            if exc.errno not in _RETRYABLE_ERRNOS or time.monotonic() >= deadline:
                raise
        time.sleep(0.1)


def command(address, line, timeout=5.0, retry_for=0.0):
    """Send one Runtime API (or master CLI) command and return HAProxy's whole reply as text."""
    with connect(address, timeout=timeout, retry_for=retry_for) as sock:
        sock.sendall(line.encode("utf-8") + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks).decode("utf-8", "replace")
            chunks.append(chunk)


# --- parsers for the replies the tests read -------------------------------------------------
def lines(reply):
    """A reply's lines. HAProxy ends lines with "\n" only; str.splitlines() would also split a
    value at U+2028, U+0085 or "\r" and make the tests read a value HAProxy does not hold."""
    return reply.split("\n")


def stat_rows(reply):
    """`show stat` CSV -> list of dicts by column name (the "# " of the header removed)."""
    text = reply.lstrip("# ")
    rows = [{key: value for key, value in row.items() if key}
            for row in csv.DictReader(lines(text))]
    return [row for row in rows if row.get("pxname")]


def server_states(reply):
    """`show stat` CSV -> {"backend/server": status} for every server row."""
    return {"%s/%s" % (row["pxname"], row["svname"]): row["status"]
            for row in stat_rows(reply) if row["svname"] not in ("FRONTEND", "BACKEND")}


def map_entries(reply):
    """`show map <map>` -> {key: value}; the first entry of a key wins, as in a lookup."""
    entries = {}
    for line in lines(reply):
        parts = line.split(" ", 2)  # "<id> <key> <value>": the value is the rest, as it is
        if len(parts) == 3 and parts[0].startswith("0x"):
            entries.setdefault(parts[1], parts[2])
    return entries


def info(reply):
    """`show info` -> {field: value}."""
    fields = {}
    for line in lines(reply):
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    return fields


def processes(reply):
    """The master CLI's `show proc` -> {"master_pid", "workers" (current ones), "failed_reloads"}.

    2.6 and 3.0 both list the master first ("<pid> master 0 [failed: N] ..."), then a
    "# workers" section, then "# programs"; old workers (still draining) are listed after
    "# old workers" and are not counted.
    """
    master_pid, workers, failed, section = None, [], 0, ""
    for line in lines(reply):
        if line.startswith("#"):
            title = line.strip("# ").lower()
            if not title.startswith("<pid>"):
                section = title
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
    return {"master_pid": master_pid, "workers": workers, "failed_reloads": failed}


_PARSERS = {"stat": stat_rows, "map": map_entries, "proc": processes, "info": info,
            "servers": server_states}


def main(argv=None):
    parser = argparse.ArgumentParser(description="Send one HAProxy Runtime API command.")
    parser.add_argument("--socket", default=ADMIN_SOCKET, help="UNIX socket path or HOST:PORT")
    parser.add_argument("--timeout", type=float, default=5.0, help="socket timeout (seconds)")
    parser.add_argument("--retry-for", type=float, default=0.0,
                        help="retry an absent or refusing socket for this many seconds")
    parser.add_argument("--json", choices=sorted(_PARSERS), help="print the parsed reply as JSON")
    parser.add_argument("command", nargs="+")
    args = parser.parse_args(argv)
    try:
        reply = command(args.socket, " ".join(args.command), args.timeout, args.retry_for)
    except OSError as exc:
        sys.stderr.write("runtime_client: %s: %s\n" % (args.socket, exc))
        return 2
    if args.json:
        json.dump(_PARSERS[args.json](reply), sys.stdout)
    else:
        sys.stdout.write(reply)
    return 0


if __name__ == "__main__":
    sys.exit(main())
