"""Argument escaping and socket address parsing of the Runtime API client."""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    CommandError,
    ConnectionRefusedAPIError,
    NotASocketError,
    ReplyLostError,
    RuntimeAPIClient,
    RuntimeAPITimeoutError,
    SocketAddressError,
    SocketLevelError,
    SocketNotFoundError,
    SocketPermissionError,
    UnsafeArgumentError,
    check_command_hint,
    escape_argument,
    first_line,
    format_command,
    reply_lines,
    shorten,
    unescape_argument,
)
from ansible_collections.bluegreen.haproxy.tests.unit.plugins.modules.fake_map_haproxy import FakeHAProxy, RuntimeServer

REPO = os.path.normpath(os.path.join(os.path.dirname(__file__), *[os.pardir] * 4))
FIXTURES = os.path.join(REPO, "tests", "unit", "fixtures", "haproxy-2.6")
MAP = "/etc/haproxy/maps/bluegreen.map"


def haproxy_tokenize(line):
    """HAProxy's CLI word splitting (src/cli.c): blanks split, backslash escapes, `;` ends a command."""
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


@pytest.mark.parametrize("text,escaped", [
    ("backend_green", "backend_green"),
    ("a;b", "a\\;b"),
    ("a b", "a\\ b"),
    ("a\\b", "a\\\\b"),
    ("a\tb", "a\\\tb"),
    ("#x", "\\#x"),
    ("a<<", "a\\<\\<"),
    ("a b;c\\d\t#e<<", "a\\ b\\;c\\\\d\\\t\\#e\\<\\<"),
])
def test_escape_argument_known_values(text, escaped):
    assert escape_argument(text) == escaped
    assert unescape_argument(escaped) == text


def test_escaped_arguments_always_tokenize_to_one_command_with_the_original_words():
    alphabet = "ab;\\ \t#<>\"'$x0"
    generator = random.Random(20261127)
    for attempt in range(2000):
        words = ["".join(generator.choice(alphabet) for position in range(generator.randint(1, 12)))
                 for word_index in range(3)]
        line = format_command("set map", *words)
        assert haproxy_tokenize(line) == [["set", "map"] + words], (attempt, line)
        assert not line.rstrip("\\").endswith("<<")


@pytest.mark.parametrize("text,name", [("a\nb", "LF"), ("a\rb", "CR"), ("a\0b", "NUL")])
def test_escape_refuses_characters_that_cannot_be_carried(text, name):
    with pytest.raises(UnsafeArgumentError, match=name):
        escape_argument(text)


def test_escape_refuses_empty_argument():
    with pytest.raises(UnsafeArgumentError):
        escape_argument("")


@pytest.mark.parametrize("address,family,target", [
    ("/run/haproxy/admin.sock", socket.AF_UNIX, "/run/haproxy/admin.sock"),
    ("unix@/run/haproxy/admin.sock", socket.AF_UNIX, "/run/haproxy/admin.sock"),
    ("ipv4@127.0.0.1:9999", socket.AF_INET, ("127.0.0.1", 9999)),
    ("127.0.0.1:9999", socket.AF_UNSPEC, ("127.0.0.1", 9999)),
    ("haproxy.example.com:9999", socket.AF_UNSPEC, ("haproxy.example.com", 9999)),
    ("ipv6@[::1]:9999", socket.AF_INET6, ("::1", 9999)),
    ("[::1]:9999", socket.AF_INET6, ("::1", 9999)),
])
def test_socket_addresses(address, family, target):
    client = RuntimeAPIClient(address)
    assert (client.family, client.target) == (family, target)


@pytest.mark.parametrize("address", ["", "localhost", "host:notaport", "host:0", "host:70000", "ipv4@:80"])
def test_bad_socket_addresses_are_refused(address):
    with pytest.raises(SocketAddressError):
        RuntimeAPIClient(address)


def test_missing_and_non_socket_paths(tmp_path):
    with pytest.raises(SocketNotFoundError, match="does not exist"):
        RuntimeAPIClient(str(tmp_path / "nothing.sock")).raw("show info")
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(NotASocketError, match="not a unix socket"):
        RuntimeAPIClient(str(regular)).raw("show info")


def test_refused_tcp_connection_names_the_socket():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ConnectionRefusedAPIError, match="127.0.0.1:%d" % port):
        RuntimeAPIClient("127.0.0.1:%d" % port).raw("show info")


def test_silent_peer_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = RuntimeAPIClient("127.0.0.1:%d" % listener.getsockname()[1], timeout=0.3)
        with pytest.raises(RuntimeAPITimeoutError, match="did not answer"):
            client.raw("show info")


def test_silence_after_a_too_long_command_names_the_buffer_limit():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = RuntimeAPIClient("127.0.0.1:%d" % listener.getsockname()[1], timeout=0.3)
        with pytest.raises(RuntimeAPITimeoutError) as caught:
            client.raw("set map m k " + "v" * 100000)
    message = str(caught.value)
    assert "tune.bufsize" in message and "100013 bytes" in message and len(message) < 300


def test_command_error_carries_command_and_first_line():
    error = CommandError("set map m k v", "entry not found.\n\n")
    assert "entry not found." in str(error)
    assert error.command == "set map m k v"


@pytest.mark.parametrize("text,expected", [
    ("short", "short"),
    ("x" * 80, "x" * 80),
    ("x" * 100000, "x" * 80 + "... (100000 characters)"),
])
def test_shorten_quotes_a_prefix_and_the_length(text, expected):
    assert shorten(text) == expected


def test_messages_quote_only_a_prefix_of_huge_values():
    huge = "v" * 100000
    error = CommandError("set map m k " + huge, "Missing value for key '%s'.\n\n" % huge)
    assert len(str(error)) < 400 and "(100012 characters)" in str(error)
    with pytest.raises(UnsafeArgumentError) as caught:
        escape_argument(huge + "\n")
    assert len(str(caught.value)) < 200


class RecordingClient(RuntimeAPIClient):
    def __init__(self, reply):
        super(RecordingClient, self).__init__("/run/haproxy/admin.sock")
        self.sent, self.reply = [], reply

    def _exchange(self, text, description):
        self.sent.append(text)
        return self.reply


def test_run_payload_frames_one_command_ending_with_an_empty_line():
    client = RecordingClient("\n")
    client.run_payload("add map", ["@3", "/maps/a b.map"], ["k1 v 1", "k2 v;2"])
    assert client.sent == ["add map @3 /maps/a\\ b.map <<\nk1 v 1\nk2 v;2\n\n"]


@pytest.mark.parametrize("lines", [["ok", ""], ["a\nb"], ["a\rb"]])
def test_run_payload_refuses_lines_that_would_end_or_split_it(lines):
    with pytest.raises(UnsafeArgumentError):
        RecordingClient("\n").run_payload("add map", ["@1", "m"], lines)


def test_run_payload_error_reply_raises():
    with pytest.raises(CommandError, match="Missing value"):
        RecordingClient("Missing value for key 'k'.\n\n").run_payload("add map", ["@1", "m"], ["k v"])


# -- replies split on LF only (issue 13, finding 8) -----------------------


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1e"])
def test_reply_lines_split_on_lf_only(separator):
    reply = "value=a%sb\nnext\n\n" % separator
    assert reply_lines(reply) == ["value=a%sb" % separator, "next", "", ""]
    assert first_line(reply) == "value=a%sb" % separator


# -- one deadline per reply, whatever the peer trickles -------------------


class TricklingPeer(threading.Thread):
    """Accepts connections and answers one byte every 50 ms, for `seconds` (or until the client goes).

    After `prompt` it first answers the prompt properly, so a session opens, then trickles.
    """

    def __init__(self, seconds=30.0):
        super(TricklingPeer, self).__init__(daemon=True)
        self.seconds = seconds
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.address = "127.0.0.1:%d" % self.listener.getsockname()[1]

    def run(self):
        while True:
            try:
                connection, _peer = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.trickle, args=(connection,), daemon=True).start()

    def trickle(self, connection):
        with connection:
            reader = connection.makefile("rb")
            try:
                if reader.readline() == b"prompt\n":
                    connection.sendall(b"\n> ")
                    reader.readline()
                end = time.monotonic() + self.seconds
                while time.monotonic() < end:
                    connection.sendall(b"x")
                    time.sleep(0.05)
            except OSError:
                return

    def stop(self):
        self.listener.close()


@pytest.fixture
def trickling_peer():
    peer = TricklingPeer()
    peer.start()
    yield peer
    peer.stop()


def test_a_peer_that_trickles_bytes_times_out_at_the_timeout_not_per_recv(trickling_peer):
    client = RuntimeAPIClient(trickling_peer.address, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RuntimeAPITimeoutError, match="did not answer 'show info' within 0.5s"):
        client.raw("show info")
    # Per recv, each byte would restart the clock and the call would last the peer's 30 s.
    assert time.monotonic() - started < 15


def test_a_session_reply_that_trickles_times_out_at_the_timeout(trickling_peer):
    client = RuntimeAPIClient(trickling_peer.address, timeout=0.5)
    started = time.monotonic()
    with client.session() as session:
        with pytest.raises(ReplyLostError, match="did not answer 'show info' within 0.5s"):
            session.raw("show info")
    assert time.monotonic() - started < 15


# -- sessions: interactive mode on one connection -------------------------


@pytest.fixture
def served(tmp_path):
    fake = FakeHAProxy({MAP: [("active", "backend_blue")]})
    server = RuntimeServer(fake, str(tmp_path / "admin.sock"))
    server.start()
    yield fake, server
    server.stop()


def test_session_runs_several_commands_on_one_connection(served):
    fake, server = served
    client = RuntimeAPIClient(server.path)
    with client.session() as session:
        before = session.run("get map", MAP, "active")
        assert session.run("set map", MAP, "active", "backend_green", expect_empty=True) == "\n"
        after = session.run("get map", MAP, "active")
        with pytest.raises(CommandError, match="entry not found"):
            session.run("set map", MAP, "nope", "x", expect_empty=True)
    assert 'value="backend_blue"' in before and before.endswith("\n\n") and not before.endswith("> ")
    assert 'value="backend_green"' in after
    assert fake.values(MAP)["active"] == "backend_green"
    assert session.sock is None, "closed (quit) on leaving the block"


def test_session_reply_lost_after_the_command_ran(served):
    fake, server = served
    server.drop_reply = {"set map"}
    with RuntimeAPIClient(server.path).session() as session:
        with pytest.raises(ReplyLostError, match="closed the connection before answering") as caught:
            session.run("set map", MAP, "active", "backend_green", expect_empty=True)
    assert caught.value.command == "set map %s active backend_green" % MAP
    assert fake.values(MAP)["active"] == "backend_green", "HAProxy ran it: only the reply was lost"


def test_session_against_real_framing_of_a_closed_socket(tmp_path):
    with pytest.raises(SocketNotFoundError):
        RuntimeAPIClient(str(tmp_path / "none.sock")).session().open()


# -- the socket's level -----------------------------------------------------


def captured(name, version="haproxy-2.6"):
    with open(os.path.join(os.path.dirname(FIXTURES), version, name), encoding="utf-8", newline="") as handle:
        return handle.read()


@pytest.mark.parametrize("version", ["haproxy-2.6", "haproxy-3.0"])
@pytest.mark.parametrize("fixture,level", [
    ("show_cli_level_admin.txt", "admin"),
    ("show_cli_level_operator.txt", "operator"),
    ("show_cli_level_user.txt", "user"),
    ("unknown_command.txt", None),
])
def test_cli_level_from_captured_replies(fixture, level, version):
    client = RecordingClient(captured(fixture, version))
    assert client.cli_level() == level
    assert client.sent == ["show cli level\n"]


@pytest.mark.parametrize("fixture,refused", [
    ("show_cli_level_admin.txt", False),
    ("show_cli_level_operator.txt", True),
    ("show_cli_level_user.txt", True),
    ("unknown_command.txt", False),
])
def test_require_level_admin(fixture, refused):
    client = RecordingClient(captured(fixture))
    if not refused:
        client.require_level("admin", "changing a map")
        return
    with pytest.raises(SocketLevelError) as caught:
        client.require_level("admin", "changing a map")
    message = str(caught.value)
    assert "changing a map needs level admin" in message
    assert "'stats socket /run/haproxy/admin.sock ... level admin'" in message and "nothing was changed" in message


@pytest.mark.parametrize("address,hint", [
    ("/run/haproxy/admin.sock", "echo 'get map /m k' | socat stdio unix-connect:/run/haproxy/admin.sock"),
    ("ipv4@127.0.0.1:9999", "echo 'get map /m k' | socat stdio tcp:127.0.0.1:9999"),
])
def test_check_command_hint(address, hint):
    assert check_command_hint(address, "get map /m k") == hint


# -- connect errors on real sockets -------------------------------------------


def test_unresolvable_host_is_an_address_error():
    with pytest.raises(SocketAddressError, match="cannot resolve the host of HAProxy Runtime API socket"):
        RuntimeAPIClient("no-such-host.invalid:9999", timeout=2).raw("show info")


def test_unix_socket_nobody_listens_on_is_refused(tmp_path):
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens: what a crashed HAProxy leaves
    with pytest.raises(ConnectionRefusedAPIError, match="connection refused by HAProxy Runtime API socket %s" % path):
        RuntimeAPIClient(path).raw("show info")


CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import RuntimeAPIClient, RuntimeAPIError
try:
    RuntimeAPIClient(sys.argv[2], 2).raw("show info")
except RuntimeAPIError as exc:
    print("%s: %s" % (type(exc).__name__, exc))
"""


def connect_as_unprivileged(path):
    """The client's error for `path`, as a user who is not the socket's owner (root cannot be denied).

    As root, the client runs in a child process as nobody, with an interpreter nobody may run
    (the test's own may live in root's home); the client needs the standard library only.
    """
    if os.geteuid() != 0:
        command = [sys.executable, "-c", CHILD, os.path.join(REPO, ".collections"), path]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout
    interpreter = next((candidate for candidate in ("/usr/bin/python3", "/usr/local/bin/python3")
                        if os.access(candidate, os.X_OK) and os.stat(candidate).st_mode & 0o001), None)
    if interpreter is None:
        pytest.skip("running as root without a python3 that an unprivileged user may run")

    def drop():
        os.setgid(65534)
        os.setuid(65534)
    command = [interpreter, "-c", CHILD, os.path.join(REPO, ".collections"), path]
    return subprocess.run(command, capture_output=True, text=True, check=True, preexec_fn=drop, cwd="/").stdout


@pytest.fixture
def open_directory():
    """A directory every user can search (pytest's tmp_path is private to its owner)."""
    directory = tempfile.mkdtemp(prefix="bluegreen-socket-")
    os.chmod(directory, 0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def listening(path, mode):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    os.chmod(path, mode)
    return listener


ROOT = os.geteuid() == 0


def test_socket_the_user_may_not_connect_to_is_a_permission_error(open_directory):
    path = os.path.join(open_directory, "admin.sock")
    # Root runs the client as nobody, so the owner's 0600 denies it; anyone else is denied by 0000.
    with listening(path, 0o600 if ROOT else 0o000):
        output = connect_as_unprivileged(path)
    assert output.startswith("%s: permission denied connecting to HAProxy Runtime API socket %s"
                             % (SocketPermissionError.__name__, path)), output
    assert "mode and owner" in output


def test_socket_in_a_directory_the_user_may_not_search_is_a_permission_error(open_directory):
    private = os.path.join(open_directory, "private")
    os.mkdir(private, 0o700)
    path = os.path.join(private, "admin.sock")
    with listening(path, 0o666):
        if not ROOT:
            os.chmod(private, 0o000)
        try:
            output = connect_as_unprivileged(path)
        finally:
            os.chmod(private, 0o700)
    assert output.startswith("%s: permission denied reaching HAProxy Runtime API socket %s"
                             % (SocketPermissionError.__name__, path)), output
    assert "parent directory is not searchable" in output
