"""Argument escaping and socket address parsing of the Runtime API client."""

from __future__ import annotations

import random
import socket

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils.runtime_api import (
    CommandError,
    ConnectionRefusedAPIError,
    NotASocketError,
    RuntimeAPIClient,
    RuntimeAPITimeoutError,
    SocketAddressError,
    SocketNotFoundError,
    UnsafeArgumentError,
    escape_argument,
    format_command,
    shorten,
    unescape_argument,
)


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
