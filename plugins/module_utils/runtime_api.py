# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""HAProxy Runtime API client: connect, frame one command, read the reply.

The stats socket is non-interactive: it reads one line, runs it, replies and
closes. Everything a caller puts on that line is parsed by HAProxy's CLI
tokenizer, where `;` starts another command and a newline starts another
line, so every argument goes through :func:`escape_argument` and the command
words themselves are fixed strings chosen by our code, never by the user.
"""

from __future__ import annotations

import errno
import os
import re
import socket
import stat
import time

DEFAULT_SOCKET = "/run/haproxy/admin.sock"
DEFAULT_TIMEOUT = 5.0
# HAProxy's default tune.bufsize: a longer command is dropped, or the connection reset.
MAX_COMMAND_BYTES = 16384

# Characters the CLI tokenizer treats specially. `<` is escaped so a value
# ending in `<<` cannot switch the connection into payload mode.
_ESCAPED_CHARACTERS = frozenset("\\; \t<#")
_FORBIDDEN_CHARACTERS = {"\r": "CR", "\n": "LF", "\0": "NUL"}

# Replies HAProxy gives, as a whole first line, when a command failed.
# Commands with nothing to print answer an empty line, so writers use
# expect_empty instead of this list.
_ERROR_PREFIXES = (
    "Unknown command",
    "Unknown map identifier",
    "Permission denied",
    "No such proxy",
    "No such backend",
    "No such server",
    "Malformed identifier",
    "Missing ",
    "Require ",
    "Can't find the target PID",
)


def runtime_api_argument_spec():
    """Options every Runtime API module takes, documented in the runtime_api doc fragment."""
    return dict(
        socket=dict(type="str", default=DEFAULT_SOCKET),
        timeout=dict(type="float", default=DEFAULT_TIMEOUT),
    )


class RuntimeAPIError(Exception):
    """Base class: anything that kept a Runtime API command from succeeding."""


class UnsafeArgumentError(RuntimeAPIError, ValueError):
    """An argument holds a character that cannot be sent safely (CR, LF, NUL)."""


class SocketAddressError(RuntimeAPIError, ValueError):
    """The socket option cannot be understood as a unix path or a TCP address."""


class SocketNotFoundError(RuntimeAPIError):
    pass


class NotASocketError(RuntimeAPIError):
    pass


class SocketPermissionError(RuntimeAPIError):
    pass


class ConnectionRefusedAPIError(RuntimeAPIError):
    pass


class RuntimeAPITimeoutError(RuntimeAPIError):
    pass


class ReplyLostError(RuntimeAPIError):
    """A command was sent, but its reply did not arrive (timeout, reset, early close).

    HAProxy may have run it: a caller that sent a change reads the value back before
    saying anything about what is live.
    """

    def __init__(self, message, command):
        super(ReplyLostError, self).__init__(message)
        self.command = command


class SocketLevelError(RuntimeAPIError):
    """The socket's level (`show cli level`) is below what the operation needs."""


class CommandError(RuntimeAPIError):
    """HAProxy answered the command with an error message."""

    def __init__(self, command, reply):
        self.command = command
        self.reply = reply
        super(CommandError, self).__init__(
            "HAProxy refused '%s': %s" % (shorten(command), shorten_reply(first_line(reply)) or "(empty reply)")
        )


def shorten(text, limit=80):
    """At most `limit` characters of `text` for a message, saying how long the whole was.

    Messages quote offending values so users can find them; a rejected 100 KB value must
    not turn into a 100 KB message (it would flood the log and the job output).
    """
    text = str(text)
    if len(text) <= limit:
        return text
    return "%s... (%d characters)" % (text[:limit], len(text))


def shorten_reply(line):
    """HAProxy's own message kept whole, but any value it echoes cut to a short prefix."""
    return shorten(re.sub(r"\S{81,}", lambda match: shorten(match.group()), line), 200)


def reply_lines(text):
    """The lines of a reply or a map file's text, split on LF only.

    HAProxy ends lines with LF and nothing else; `str.splitlines()` also splits on U+2028,
    U+0085, FF, VT and more, which a map value may hold, so a value read back would be cut.
    """
    return text.split("\n")


def first_line(text):
    for line in reply_lines(text):
        if line.strip(" \t\r"):
            return line.strip(" \t\r")
    return ""


def escape_argument(value):
    """Escape one argument so the CLI tokenizer reads it back as exactly `value`.

    CR, LF and NUL cannot be escaped (a backslash-newline stores a raw LF in a
    map and breaks `show map`), so they are refused.
    """
    text = str(value)
    for character, name in _FORBIDDEN_CHARACTERS.items():
        if character in text:
            raise UnsafeArgumentError(
                "%r contains %s, which the HAProxy Runtime API cannot carry safely" % (shorten(text), name)
            )
    if text == "":
        raise UnsafeArgumentError("an empty argument cannot be sent to the HAProxy Runtime API")
    return "".join("\\" + c if c in _ESCAPED_CHARACTERS else c for c in text)


def unescape_argument(text):
    """Inverse of :func:`escape_argument`, as HAProxy's tokenizer does it (used by tests)."""
    out = []
    escaped = False
    for character in text:
        if escaped:
            out.append(character)
            escaped = False
        elif character == "\\":
            escaped = True
        else:
            out.append(character)
    return "".join(out)


def format_command(verb, *arguments):
    """One command line: `verb` is our fixed command words, each argument escaped."""
    return " ".join([verb] + [escape_argument(argument) for argument in arguments])


def parse_socket_address(address):
    """Return (family, target) for a unix path or a TCP address.

    Accepted forms follow HAProxy's own `bind` syntax: `/path`, `unix@/path`,
    `ipv4@host:port`, `ipv6@[host]:port`, `host:port`.
    """
    if not address:
        raise SocketAddressError("socket is empty: give a unix socket path or HOST:PORT")
    if address.startswith("unix@"):
        return socket.AF_UNIX, address[len("unix@"):]
    if address.startswith("/") or address.startswith("."):
        return socket.AF_UNIX, address
    family = None
    rest = address
    if address.startswith("ipv4@"):
        family, rest = socket.AF_INET, address[len("ipv4@"):]
    elif address.startswith("ipv6@"):
        family, rest = socket.AF_INET6, address[len("ipv6@"):]
    if rest.startswith("["):
        host, separator, port_text = rest[1:].partition("]:")
        family = family or socket.AF_INET6
    else:
        host, separator, port_text = rest.rpartition(":")
    if not separator or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise SocketAddressError(
            "socket %r is neither a unix socket path nor HOST:PORT "
            "(ipv4@HOST:PORT, ipv6@[HOST]:PORT)" % address
        )
    return family or socket.AF_UNSPEC, (host, int(port_text))


def check_command_hint(address, command):
    """A shell line a person can run to see for themselves what HAProxy holds."""
    family, target = parse_socket_address(address)
    if family == socket.AF_UNIX:
        where = "unix-connect:%s" % target
    else:
        where = "tcp:%s:%d" % target
    return "echo '%s' | socat stdio %s" % (command, where)


# `show cli level` answers one of these (HAProxy 2.0+; the same on 2.6 and 3.0).
CLI_LEVELS = ("user", "operator", "admin")


def _too_long_hint(text):
    """Why HAProxy reset or ignored a command, when it was longer than its buffer.

    HAProxy either resets the connection or, on a busy machine, leaves it unanswered until
    our timeout: both mean the same thing, and the message should say so.
    """
    if len(text) <= MAX_COMMAND_BYTES:
        return ""
    return ("; the command was %d bytes, longer than HAProxy's tune.bufsize (%d bytes by default)"
            % (len(text), MAX_COMMAND_BYTES))


def checked_reply(line, reply, expect_empty=False):
    """`reply` to the command `line`, or CommandError when it is an error.

    expect_empty=True is for commands that print nothing on success (set/add/del/clear map,
    set server): any other reply is an error. Otherwise a first line HAProxy uses for errors is.
    """
    if expect_empty:
        if reply.strip():
            raise CommandError(line, reply)
    elif first_line(reply).startswith(_ERROR_PREFIXES):
        raise CommandError(line, reply)
    return reply


class RuntimeAPIClient(object):
    """Sends commands to one HAProxy Runtime API socket, one connection per command."""

    def __init__(self, address=DEFAULT_SOCKET, timeout=DEFAULT_TIMEOUT):
        self.address = address
        self.timeout = float(timeout)
        self.family, self.target = parse_socket_address(address)

    # -- connection -------------------------------------------------------

    def _connect(self):
        if self.family == socket.AF_UNIX:
            return self._connect_unix()
        return self._connect_tcp()

    def _connect_unix(self):
        path = self.target
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            raise SocketNotFoundError(
                "HAProxy Runtime API socket %s does not exist: is HAProxy running, and is "
                "'stats socket %s level admin' in its global section?" % (path, path)
            )
        except PermissionError:
            raise SocketPermissionError(
                "permission denied reaching HAProxy Runtime API socket %s (a parent directory "
                "is not searchable for this user; become root or join HAProxy's group)" % path
            )
        if not stat.S_ISSOCK(mode):
            raise NotASocketError("%s exists but is not a unix socket" % path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(path)
        except BaseException as exc:
            sock.close()
            raise self._connect_error(exc)
        return sock

    def _connect_tcp(self):
        host, port = self.target
        try:
            sock = socket.create_connection((host, port), timeout=self.timeout)
        except BaseException as exc:
            raise self._connect_error(exc)
        sock.settimeout(self.timeout)
        return sock

    def _connect_error(self, exc):
        where = "HAProxy Runtime API socket %s" % self.address
        if isinstance(exc, PermissionError):
            return SocketPermissionError(
                "permission denied connecting to %s (check the socket's mode and owner; "
                "become root or join HAProxy's group)" % where
            )
        if isinstance(exc, ConnectionRefusedError):
            return ConnectionRefusedAPIError(
                "connection refused by %s: HAProxy is not listening there" % where
            )
        if isinstance(exc, socket.timeout):
            return RuntimeAPITimeoutError("timed out after %ss connecting to %s" % (self.timeout, where))
        if isinstance(exc, socket.gaierror):
            return SocketAddressError("cannot resolve the host of %s: %s" % (where, exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOTSOCK:
            return NotASocketError("%s is not a socket" % self.address)
        if isinstance(exc, OSError):
            return RuntimeAPIError("cannot connect to %s: %s" % (where, exc))
        raise exc

    # -- commands ---------------------------------------------------------

    def session(self):
        """One interactive connection for several commands in a row (see RuntimeAPISession)."""
        return RuntimeAPISession(self)

    def cli_level(self):
        """The socket's level ("user", "operator" or "admin"), None when HAProxy cannot say.

        `show cli level` answers the level of this connection. An HAProxy without the
        command (before 2.0) answers "Unknown command": None, and callers do not refuse.
        """
        level = first_line(self.raw("show cli level"))
        return level if level in CLI_LEVELS else None

    def require_level(self, needed, purpose):
        """Raise SocketLevelError when the socket's level is known and below `needed`.

        HAProxy 2.6 lets `level user` sockets change maps, but 3.4 refuses it and the
        stable branches warn; servers (`set server`) need admin everywhere. Returns the level.
        """
        level = self.cli_level()
        if level is not None and CLI_LEVELS.index(level) < CLI_LEVELS.index(needed):
            raise SocketLevelError(
                "HAProxy Runtime API socket %s is at level %s, but %s needs level %s: make its line "
                "in HAProxy's global section 'stats socket %s ... level %s' and reload HAProxy; "
                "nothing was changed" % (self.address, level, purpose, needed, self.address, needed))
        return level

    def raw(self, line):
        """Send one already-framed command line and return the whole reply text."""
        if any(character in line for character in "\r\n\0"):
            raise UnsafeArgumentError("a command line cannot contain CR, LF or NUL")
        return self._exchange(line + "\n", line)

    def _exchange(self, text, description):
        sock = self._connect()
        try:
            sock.sendall(text.encode("utf-8"))
            # Half-close: the master CLI of 2.6 keeps the connection open until
            # it sees the end of our input; the stats socket does not mind.
            try:
                sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            chunks = []
            # One deadline for the whole reply: a peer that trickles a byte now and then
            # must not keep us waiting longer than `timeout`.
            deadline = time.monotonic() + self.timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                sock.settimeout(remaining)
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except socket.timeout:
            raise RuntimeAPITimeoutError(
                "HAProxy Runtime API socket %s did not answer '%s' within %ss%s"
                % (self.address, shorten(description), self.timeout, _too_long_hint(text))
            )
        except OSError as exc:
            raise RuntimeAPIError("error talking to %s: %s%s" % (self.address, exc, _too_long_hint(text)))
        finally:
            sock.close()
        return b"".join(chunks).decode("utf-8", "replace")

    def run_payload(self, verb, arguments, lines):
        """Run `verb arguments <<` with `lines` as its payload; any non-empty reply is an error.

        The payload ends at the first empty line, so every line must be non-empty and free
        of CR, LF and NUL. Payload lines are NOT unescaped by HAProxy: callers pass them raw.
        HAProxy 2.6 silently drops a whole command larger than tune.bufsize (16384 bytes by
        default) with an empty reply, so callers keep each payload well below that and
        check the result.
        """
        for line in lines:
            if not line or any(character in line for character in "\r\n\0"):
                raise UnsafeArgumentError("a payload line cannot be empty or contain CR, LF or NUL: %r"
                                          % shorten(line))
        head = format_command(verb, *arguments) + " <<"
        reply = self._exchange("%s\n%s\n\n" % (head, "\n".join(lines)), head)
        if reply.strip():
            raise CommandError(head, reply)
        return reply

    def run(self, verb, *arguments, **kwargs):
        """Run one command; raise CommandError on an error reply.

        expect_empty=True is for commands that print nothing on success
        (set/add/del/clear map, set server): any other reply is an error.
        """
        line = format_command(verb, *arguments)
        return checked_reply(line, self.raw(line), kwargs.pop("expect_empty", False))


class RuntimeAPISession(object):
    """Several commands on one connection, each answered before the next one is sent.

    HAProxy's interactive mode (`prompt`): every reply ends with the prompt `> `, and the
    connection stays open until `quit`. A read and the write it decides run on one
    connection this way, right after each other (compare-and-set at the instant), without
    putting both in one line, where the write could not depend on what the read found.
    Use as a context manager; `run` and `raw` take one command (no `;` chains, no payload).
    Each reply has its own deadline of the client's `timeout`.
    """

    PROMPT = b"\n> "

    def __init__(self, client):
        self.client = client
        self.address = client.address
        self.timeout = client.timeout
        self.sock = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def open(self):
        self.sock = self.client._connect()
        try:
            self._roundtrip("prompt")
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.settimeout(min(self.timeout, 1.0))
            self.sock.sendall(b"quit\n")
        except OSError:
            pass
        finally:
            self.sock.close()
            self.sock = None

    def _roundtrip(self, line):
        """Send one command line, return its reply without the prompt (as the non-interactive socket gives it).

        Once the line is handed to the socket, a missing reply raises ReplyLostError: HAProxy
        may have run the command.
        """
        data = (line + "\n").encode("utf-8")
        chunks, received = [], b""
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
            deadline = time.monotonic() + self.timeout
            while not received.endswith(self.PROMPT):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise socket.timeout()
                self.sock.settimeout(remaining)
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ReplyLostError(
                        "HAProxy Runtime API socket %s closed the connection before answering '%s'%s"
                        % (self.address, shorten(line), _too_long_hint(data)), line)
                chunks.append(chunk)
                # Only the tail can hold the prompt; joining it all each time would be quadratic.
                received = (received[-2:] if received else b"") + chunk
        except socket.timeout:
            raise ReplyLostError(
                "HAProxy Runtime API socket %s did not answer '%s' within %ss%s"
                % (self.address, shorten(line), self.timeout, _too_long_hint(data)), line)
        except OSError as exc:
            raise ReplyLostError("error talking to %s while sending '%s': %s" % (self.address, shorten(line), exc),
                                 line)
        reply = b"".join(chunks).decode("utf-8", "replace")
        return reply[:-2] if reply.endswith("> ") else reply

    def raw(self, line):
        """Send one already-framed command and return its reply text."""
        if any(character in line for character in "\r\n\0"):
            raise UnsafeArgumentError("a command line cannot contain CR, LF or NUL")
        if self.sock is None:
            raise RuntimeAPIError("the session with %s is closed" % self.address)
        return self._roundtrip(line)

    def run(self, verb, *arguments, **kwargs):
        """As RuntimeAPIClient.run, on this connection."""
        line = format_command(verb, *arguments)
        return checked_reply(line, self.raw(line), kwargs.pop("expect_empty", False))
