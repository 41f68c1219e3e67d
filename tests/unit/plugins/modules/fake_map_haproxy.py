# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fake HAProxy Runtime API for the map commands, at the level of the bytes sent.

It parses what the real client writes (escapes, `;` chains, `<<` payloads) and answers as
HAProxy 2.6 does (replies captured in tests/unit/fixtures/haproxy-2.6), including the
silent drop of a command larger than tune.bufsize. Faults are injected by the tests:
`lie_after_write` makes every read after a write report other values (a read-back that
disagrees), `fail_commands` makes a verb answer an error, `level` is what `show cli level`
answers.

`FakeClient` is the real client with the fake behind `_exchange` and its interactive
session; `RuntimeServer` serves the fake on a real unix socket (both modes: one command,
or `prompt` and several), where `drop_reply` applies a command and then closes the
connection without answering: a lost reply.
"""

from __future__ import annotations

import os
import socket
import threading
import time

from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    RuntimeAPIClient,
    RuntimeAPISession,
)

BUFSIZE = 16384
UNKNOWN_MAP = "Unknown map identifier. Please use #<id> or <file>.\n\n"


def tokenize(line):
    """HAProxy's CLI word splitting: blanks split, backslash escapes, `;` ends a command."""
    commands, words, word, escaped, in_word = [], [], [], False, False
    for character in line:
        if escaped:
            word.append(character)
            escaped, in_word = False, True
        elif character == "\\":
            escaped, in_word = True, True
        elif character in " \t":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
        elif character == ";":
            if in_word:
                words.append("".join(word))
            commands.append(words)
            words, word, in_word = [], [], False
        else:
            word.append(character)
            in_word = True
    if in_word:
        words.append("".join(word))
    commands.append(words)
    return commands


class FakeMap(object):
    def __init__(self, map_id, entries):
        self.map_id = map_id
        self.entries = list(entries)
        self.versions = {}
        self.next_version = 0


class FakeHAProxy(object):
    def __init__(self, maps):
        self.maps = {name: FakeMap(index + 2, entries) for index, (name, entries) in enumerate(maps.items())}
        self.log = []            # (time, first line) of every exchange
        self.writes = []         # first words of every accepted write command
        self.lie_after_write = None
        self.fail_commands = {}  # "set map" -> error reply
        self.level = "admin"
        self.payload_mangler = None  # (key, value) -> (key, value) stored by `add map <<`

    # -- state helpers for assertions --
    def values(self, name):
        values = {}
        for key, value in self.maps[name].entries:
            values.setdefault(key, value)
        return values

    def client(self, address="/run/haproxy/admin.sock", timeout=5.0):
        return FakeClient(self, address, timeout)

    # -- protocol --
    def exchange(self, text):
        self.log.append((time.time(), text.split("\n", 1)[0]))
        if len(text) > BUFSIZE:
            return ""
        head, _newline, rest = text.partition("\n")
        payload = None
        if head.endswith("<<"):
            payload = rest.split("\n\n", 1)[0].split("\n")
            head = head[:-2].rstrip()
        return "".join(self.command(words, payload) for words in tokenize(head))

    def _map(self, name):
        return self.maps.get(name)

    def command(self, words, payload):
        verb = " ".join(words[:2])
        if verb in self.fail_commands:
            return self.fail_commands[verb]
        if words == ["show", "cli", "level"]:
            return "%s\n\n" % self.level if self.level else "Unknown command, but maybe one of ...\n\n"
        arguments = words[2:]
        version = None
        if arguments and arguments[0].startswith("@"):
            version, arguments = int(arguments[0][1:]), arguments[1:]
        if verb == "show map" and not arguments:
            lines = ["# id (file) description"] + [
                "%d (%s) pattern loaded from file '%s' used by map at file 'haproxy.cfg' line 9. "
                "curr_ver=0 next_ver=%d entry_cnt=%d" % (fake.map_id, name, name, fake.next_version, len(fake.entries))
                for name, fake in self.maps.items()]
            return "\n".join(lines) + "\n\n"
        fake = self._map(arguments[0]) if arguments else None
        if fake is None:
            return UNKNOWN_MAP
        if verb in ("set map", "add map", "del map", "commit map"):
            self.writes.append(verb)
        reads_lie = self.lie_after_write if self.writes else None
        if verb == "show map":
            entries = fake.versions.get(version, []) if version is not None else fake.entries
            if reads_lie and version is None:
                entries = [(key, reads_lie.get(key, value)) for key, value in entries]
            return "".join("0x%x %s %s\n" % (0x55d0 + index, key, value)
                           for index, (key, value) in enumerate(entries)) + "\n"
        if verb == "get map":
            key = arguments[1]
            for entry_key, value in fake.entries:
                if entry_key == key:
                    value = (reads_lie or {}).get(key, value)
                    return ('type=str, case=sensitive, found=yes, idx=tree, key="%s", value="%s", type="str"\n\n'
                            % (key, value))
            return "type=str, case=sensitive, found=no\n\n"
        if verb == "set map":
            key, value = arguments[1], arguments[2]
            if not any(entry_key == key for entry_key, _value in fake.entries):
                return "entry not found.\n\n"
            fake.entries = [(k, value if k == key else v) for k, v in fake.entries]
            return "\n"
        if verb == "add map":
            target = fake.entries if version is None else fake.versions.get(version)
            if target is None or (version is not None and version > fake.next_version):
                return "Version number in the future, please use 'prepare map' before.\n\n"
            if payload is not None:
                for line in payload:
                    key, _blank, value = line.partition(" ")
                    entry = (key, value.lstrip(" \t"))
                    target.append(self.payload_mangler(*entry) if self.payload_mangler else entry)
            else:
                target.append((arguments[1], arguments[2]))
            return "\n"
        if verb == "del map":
            key = arguments[1]
            if not any(entry_key == key for entry_key, _value in fake.entries):
                return "Key not found.\n\n"
            fake.entries = [(k, v) for k, v in fake.entries if k != key]
            return "\n"
        if verb == "prepare map":
            fake.next_version += 1
            fake.versions[fake.next_version] = []
            return "New version created: %d\n\n" % fake.next_version
        if verb == "commit map":
            if version not in fake.versions:
                return "Version number out of range.\n\n"
            fake.entries = fake.versions[version]
            fake.versions = {number: entries for number, entries in fake.versions.items() if number > version}
            return "\n"
        return "Unknown command\n\n"


class FakeSession(RuntimeAPISession):
    """The real session (framing, error checks) with each command answered by the fake."""

    def open(self):
        self.sock = object()

    def close(self):
        self.sock = None

    def _roundtrip(self, line):
        return self.client.fake.exchange(line + "\n")


class FakeClient(RuntimeAPIClient):
    """The real client (framing, escaping, error checks) with the socket replaced by the fake."""

    def __init__(self, fake, address, timeout):
        super(FakeClient, self).__init__(address, timeout)
        self.fake = fake

    def _exchange(self, text, description):
        return self.fake.exchange(text)

    def session(self):
        return FakeSession(self)


class RuntimeServer(threading.Thread):
    """`fake` on a real unix socket at `path`, as HAProxy's stats socket frames it.

    Non-interactive: one line (or a `<<` payload), the reply, close. After `prompt`: each
    reply ends with `> ` and the connection stays open until `quit`. A command whose first
    two words are in `drop_reply` is applied, then the connection is closed unanswered;
    with `refuse_after_drop`, every later connection is refused too (the socket is gone).
    """

    def __init__(self, fake, path):
        super(RuntimeServer, self).__init__(daemon=True)
        self.fake, self.path = fake, path
        self.drop_reply = set()
        self.refuse_after_drop = False
        self.dropped = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(16)
        self.stopped = False

    def run(self):
        while not self.stopped:
            try:
                connection, _address = self.listener.accept()
            except OSError:
                return
            with connection:
                try:
                    self.serve(connection)
                except OSError:
                    pass

    def serve(self, connection):
        connection.settimeout(5)
        reader = connection.makefile("rb")
        interactive = False
        while True:
            line = reader.readline()
            if not line:
                return
            text = line.decode("utf-8")
            if text.rstrip("\n").endswith("<<"):
                while True:
                    more = reader.readline().decode("utf-8")
                    text += more
                    if more in ("\n", ""):
                        break
            command = text.rstrip("\n")
            if command == "prompt":
                interactive = True
                connection.sendall(b"\n> ")
                continue
            if command == "quit":
                return
            reply = self.fake.exchange(text)
            if " ".join(command.split()[:2]) in self.drop_reply:
                self.dropped.append(command)
                if self.refuse_after_drop:
                    self.stop()
                return
            connection.sendall(reply.encode("utf-8") + (b"> " if interactive else b""))
            if not interactive:
                return

    def stop(self):
        self.stopped = True
        try:
            self.listener.close()
        finally:
            if os.path.exists(self.path):
                os.unlink(self.path)
