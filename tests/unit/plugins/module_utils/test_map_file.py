"""Map file edits keep everything but the changed entry, and replace the file atomically."""

from __future__ import annotations

import os
import random
import stat

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils import map_file
from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileEncodingError,
    MapFileError,
    PreparedMapFile,
    line_ending,
    map_text_lookup,
    map_text_values,
    parse_map_text,
    read_map_file,
    remove_map_text_key,
    set_map_text_value,
    set_map_text_values,
    write_map_file_atomic,
)

MAP_TEXT = """\
# switch
  # indented comment
active\tbackend_blue
www.example.com   backend_www_blue

canary backend_green\t\t
active backend_ignored_duplicate
"""


def test_parse_follows_haproxy_rules():
    assert parse_map_text(MAP_TEXT) == [
        ("active", "backend_blue"),
        ("www.example.com", "backend_www_blue"),
        ("canary", "backend_green"),
        ("active", "backend_ignored_duplicate"),
    ]
    assert map_text_values(MAP_TEXT)["active"] == "backend_blue"


def test_set_changes_only_the_key_lines_and_keeps_separators():
    updated = set_map_text_value(MAP_TEXT, "active", "backend_green")
    assert updated == MAP_TEXT.replace("active\tbackend_blue", "active\tbackend_green").replace(
        "active backend_ignored_duplicate", "active backend_green")


def test_set_appends_missing_key_even_without_trailing_newline():
    assert set_map_text_value("# c\nactive backend_blue", "new", "backend_x") == \
        "# c\nactive backend_blue\nnew backend_x\n"
    assert set_map_text_value("", "active", "backend_blue") == "active backend_blue\n"


def test_remove_keeps_comments_and_other_keys():
    assert remove_map_text_key(MAP_TEXT, "active") == \
        "# switch\n  # indented comment\nwww.example.com   backend_www_blue\n\ncanary backend_green\t\t\n"


def test_atomic_write_keeps_mode_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "bluegreen.map"
    path.write_text(MAP_TEXT)
    os.chmod(path, 0o640)
    inode_before = os.stat(path).st_ino

    write_map_file_atomic(str(path), "active backend_green\n")

    assert path.read_text() == "active backend_green\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.stat(path).st_ino != inode_before, "replaced by rename, not rewritten in place"
    assert os.listdir(tmp_path) == ["bluegreen.map"]


def test_read_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(MapFileError, match="does not exist"):
        read_map_file(str(tmp_path / "nope.map"))


CRLF_TEXT = "# switch\r\nactive backend_blue\r\nshop.example.com\tshop_blue\r\n"


def test_crlf_file_stays_crlf_on_set_and_append():
    assert line_ending(CRLF_TEXT) == "\r\n" and line_ending(MAP_TEXT) == "\n" and line_ending("") == "\n"
    updated = set_map_text_values(CRLF_TEXT, {"active": "backend_green", "new": "backend_new"})
    assert updated == "# switch\r\nactive backend_green\r\nshop.example.com\tshop_blue\r\nnew backend_new\r\n"
    assert map_text_values(CRLF_TEXT) == {"active": "backend_blue", "shop.example.com": "shop_blue"}


def test_crlf_survives_read_and_atomic_write(tmp_path):
    path = tmp_path / "crlf.map"
    path.write_bytes(CRLF_TEXT.encode())
    text = read_map_file(str(path))
    assert text == CRLF_TEXT, "reading must not translate CRLF"
    write_map_file_atomic(str(path), set_map_text_value(text, "active", "backend_green"))
    assert path.read_bytes() == CRLF_TEXT.replace("backend_blue", "backend_green").encode()


def test_bulk_set_is_one_pass_over_many_keys():
    text = "".join("svc%05d backend_blue\n" % index for index in range(20000))
    values = {"svc%05d" % index: "backend_green" for index in range(0, 20000, 2)}
    updated = set_map_text_values(text, values)
    parsed = map_text_values(updated)
    assert parsed["svc00000"] == "backend_green" and parsed["svc00001"] == "backend_blue"
    assert len(parsed) == 20000


def every_line_parsed(text, values):
    """set_map_text_values as it is for many keys: every line split (the reference)."""
    few = map_file._FEW_KEYS
    map_file._FEW_KEYS = -1
    try:
        return set_map_text_values(text, values)
    finally:
        map_file._FEW_KEYS = few


def looked_up_in_every_line(text, keys):
    """map_text_lookup's reference: the first value of each key in a full parse."""
    values = map_text_values(text)
    return dict((key, values[key]) for key in keys if key in values)


@pytest.mark.parametrize("text", ["", "a b\n", "a b", "a\n", "a", "  a\tb\r\n#a c\n a  \n", "ab c\na c\n\ta\td\r\n",
                                  "a b\r\nx y", "# a b\n", "a\rjunk v\n", "a.b c\naxb d\n", MAP_TEXT, CRLF_TEXT])
def test_a_few_keys_are_set_as_if_every_line_were_parsed(text):
    """Up to 20 keys are found with a regex search each, to read or to rewrite: the same lines and
    values as a full parse, the same rewrite (indent, separator, line ending kept; a prefix or a
    comment is not the key, a CR ends the value as HAProxy reads it)."""
    for values in ({"a": "Z"}, {"a": "Z", "x": "Y"}, {"a.b": "Q"}, {"active": "backend_green", "new": "N"}):
        assert set_map_text_values(text, values) == every_line_parsed(text, values), (text, values)
        assert map_text_lookup(text, list(values)) == looked_up_in_every_line(text, values), (text, values)


def test_a_few_keys_match_a_full_parse_on_random_texts():
    generator = random.Random(14)
    for _attempt in range(5000):
        text = "".join(generator.choice("ab \t\r\n#.") for _char in range(generator.randint(0, 30)))
        for values in ({"a": "Z"}, {"a": "Z", "b": "Y"}, {"a.b": "Q"}, {"ab": "W"}, {"b": ""}, {"#a": "C"}, {"a b": "S"}):
            assert set_map_text_values(text, values) == every_line_parsed(text, values), (text, values)
            assert map_text_lookup(text, list(values)) == looked_up_in_every_line(text, values), (text, values)


@pytest.mark.parametrize("keys,expected", [
    (["active"], {"active": "backend_blue"}),
    (["www.example.com", "nope"], {"www.example.com": "backend_www_blue"}),
    (["canary"], {"canary": "backend_green"}),
    (["k%d" % index for index in range(30)] + ["active"], {"active": "backend_blue"}),
])
def test_lookup_of_some_keys_matches_the_full_parse(keys, expected):
    assert map_text_lookup(MAP_TEXT, keys) == expected
    assert map_text_lookup(CRLF_TEXT, ["shop.example.com"]) == {"shop.example.com": "shop_blue"}
    assert map_text_lookup("active.x y\n", ["active"]) == {}


def test_prepared_file_is_written_before_and_renamed_on_commit(tmp_path):
    path = tmp_path / "bluegreen.map"
    path.write_text("active backend_blue\n")
    os.chmod(path, 0o640)
    prepared = PreparedMapFile(str(path), "active backend_green\n")
    others = [name for name in os.listdir(tmp_path) if name != "bluegreen.map"]
    assert len(others) == 1 and path.read_text() == "active backend_blue\n"
    prepared.commit()
    assert path.read_text() == "active backend_green\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    assert os.listdir(tmp_path) == ["bluegreen.map"]


def test_prepared_file_discard_and_failed_commit_leave_nothing(tmp_path, monkeypatch):
    path = tmp_path / "bluegreen.map"
    path.write_text("active backend_blue\n")
    PreparedMapFile(str(path), "x y\n").discard()
    assert os.listdir(tmp_path) == ["bluegreen.map"]

    def refuse(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "rename", refuse)
    prepared = PreparedMapFile(str(path), "x y\n")
    with pytest.raises(MapFileError, match="cannot replace map file .*Operation not permitted"):
        prepared.commit()
    assert os.listdir(tmp_path) == ["bluegreen.map"] and path.read_text() == "active backend_blue\n"


def test_prepared_file_keeps_a_symlink(tmp_path):
    real = tmp_path / "real.map"
    real.write_text("active backend_blue\n")
    link = tmp_path / "link.map"
    link.symlink_to(real)
    PreparedMapFile(str(link), "active backend_green\n").commit()
    assert link.is_symlink() and real.read_text() == "active backend_green\n"


def test_unwritable_directory_is_reported_before_anything(tmp_path, monkeypatch):
    path = tmp_path / "bluegreen.map"
    path.write_text("active backend_blue\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.mkstemp", refuse)
    with pytest.raises(MapFileError, match="cannot create a file in"):
        PreparedMapFile(str(path), "x y\n")


# -- bytes that are not UTF-8, Unicode separators (issue 13, findings 8 and 9) -------------------


def test_latin1_comment_is_read_and_written_back_byte_for_byte(tmp_path):
    path = tmp_path / "latin1.map"
    original = b"# caf\xe9 (latin-1 comment)\n  # \xff\xfe indented\nactive backend_blue\r\n"
    path.write_bytes(original)
    text = read_map_file(str(path))
    assert map_text_values(text) == {"active": "backend_blue"}
    assert map_text_lookup(text, ["active"]) == {"active": "backend_blue"}
    write_map_file_atomic(str(path), set_map_text_value(text, "active", "backend_green"))
    assert path.read_bytes() == original.replace(b"backend_blue", b"backend_green")


@pytest.mark.parametrize("data,line,offset,byte", [
    (b"# c\nactive backend_blue\ncaf\xe9 x\n", 3, 27, 0xe9),
    (b"active backend_\xff\n", 1, 15, 0xff),
    (b"# c\r\n\t k\xc3 v\r\n", 2, 8, 0xc3),
])
def test_non_utf8_entry_line_is_refused_naming_line_and_offset(tmp_path, data, line, offset, byte):
    path = tmp_path / "bad.map"
    path.write_bytes(data)
    with pytest.raises(MapFileEncodingError) as caught:
        read_map_file(str(path))
    message = str(caught.value)
    assert "line %d (byte offset %d)" % (line, offset) in message and "0x%02x" % byte in message, message
    assert data[offset] == byte
    assert isinstance(caught.value, MapFileError)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\xa0"])
def test_lines_split_on_lf_and_fields_on_blanks_only(separator):
    """HAProxy's map reader ends a line at LF and a key at a space or tab; Python's splitlines()/split()
    would also cut at these."""
    value = "backend%sgreen" % separator
    text = "# c\nactive %s\nk%sx v\n" % (value, separator)
    assert parse_map_text(text) == [("active", value), ("k%sx" % separator, "v")]
    assert map_text_lookup(text, ["active"]) == {"active": value}
    updated = set_map_text_values(text, {"active": "backend_blue", "new": value})
    assert updated == "# c\nactive backend_blue\nk%sx v\nnew %s\n" % (separator, value)
    assert remove_map_text_key(text, "active") == "# c\nk%sx v\n" % separator


def test_value_with_unicode_separator_survives_the_file(tmp_path):
    path = tmp_path / "odd.map"
    write_map_file_atomic(str(path), "active a\u2028b\x85c\n")
    assert map_text_values(read_map_file(str(path))) == {"active": "a\u2028b\x85c"}


# -- the commit through AnsibleModule.atomic_move (issue 16) ------------------------------------

import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402


@pytest.fixture
def module():
    with patch_module_args({}):
        return AnsibleModule(argument_spec={})


def test_commit_through_atomic_move_keeps_owner_mode_xattrs_and_selinux_context(tmp_path, module):
    path = tmp_path / "bluegreen.map"
    path.write_text("active backend_blue\n")
    os.chmod(path, 0o640)
    os.chown(path, 4321, 4322)  # the tests run as root, like the role
    os.setxattr(path, "user.bluegreen.origin", b"provisioned")
    context_before = module.selinux_context(str(path)) if module.selinux_enabled() else None
    prepared = PreparedMapFile(str(path), "active backend_green\n", module=module)
    assert [name for name in os.listxattr(prepared.temp_path) if name.startswith("user.")] == []  # none of its own
    prepared.commit()
    assert path.read_text() == "active backend_green\n"
    after = os.stat(path)
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_gid) == (0o640, 4321, 4322)
    assert os.getxattr(path, "user.bluegreen.origin") == b"provisioned"
    if context_before is not None:  # an SELinux host (EL9): the context is the one the file had
        assert module.selinux_context(str(path)) == context_before
    assert os.listdir(tmp_path) == ["bluegreen.map"]


def test_commit_through_atomic_move_creates_a_readable_file(tmp_path, module):
    path = tmp_path / "new.map"
    write_map_file_atomic(str(path), "active backend_blue\n", module=module)
    assert path.read_text() == "active backend_blue\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


def test_commit_across_file_systems_through_a_symlink(tmp_path, module):
    # The map file is a link into another file system: the new file is written beside the
    # link, so the final rename crosses devices (EXDEV); atomic_move copies it across.
    if not os.path.isdir("/dev/shm") or os.stat("/dev/shm").st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the test directory")
    other = tempfile.mkdtemp(dir="/dev/shm")
    try:
        real = os.path.join(other, "real.map")
        with open(real, "w") as handle:
            handle.write("active backend_blue\n")
        link = tmp_path / "link.map"
        link.symlink_to(real)
        PreparedMapFile(str(link), "active backend_green\n", module=module).commit()
        assert link.is_symlink()
        with open(real) as handle:
            assert handle.read() == "active backend_green\n"
        assert os.listdir(tmp_path) == ["link.map"] and os.listdir(other) == ["real.map"]
    finally:
        shutil.rmtree(other)


class FailingMoveModule(object):
    """A module whose atomic_move fails the way ansible-core `style` does it."""

    def __init__(self, style):
        self.style = style
        self.exits = []

    def fail_json(self, msg=None, **kwargs):
        self.exits.append(msg)
        raise SystemExit(1)

    def atomic_move(self, source, destination):
        if self.style == "fail_json":  # 2.17, 2.18
            self.fail_json(msg="Could not replace file: %s to %s: [Errno 1] Operation not permitted"
                           % (source, destination))
        try:
            raise PermissionError(1, "Operation not permitted")
        except PermissionError as exc:  # 2.19+
            raise Exception("Failed to replace %r with %r." % (destination, source)) from exc


@pytest.mark.parametrize("style", ["fail_json", "raise"])
def test_a_failed_atomic_move_is_a_map_file_error_not_a_module_exit(tmp_path, style):
    path = tmp_path / "bluegreen.map"
    path.write_text("active backend_blue\n")
    failing = FailingMoveModule(style)
    prepared = PreparedMapFile(str(path), "active backend_green\n", module=failing)
    with pytest.raises(MapFileError, match="cannot replace map file .*Operation not permitted"):
        prepared.commit()
    assert failing.exits == []  # the caller, not atomic_move, decides how the module ends
    assert failing.fail_json.__func__ is FailingMoveModule.fail_json  # the class's method again
    assert os.listdir(tmp_path) == ["bluegreen.map"] and path.read_text() == "active backend_blue\n"


def test_an_immutable_map_file_fails_the_commit_as_a_map_file_error(tmp_path, module):
    # The real atomic_move of this ansible-core (2.17 and 2.18 end in fail_json, 2.19 raises).
    path = tmp_path / "bluegreen.map"
    path.write_text("active backend_blue\n")
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False).returncode != 0:
        pytest.skip("chattr +i is not available here (needs root and a file system with attributes)")
    try:
        prepared = PreparedMapFile(str(path), "active backend_green\n", module=module)
        with pytest.raises(MapFileError, match="cannot replace map file %s: " % path):
            prepared.commit()
        assert path.read_text() == "active backend_blue\n"
        assert [name for name in os.listdir(tmp_path) if name != "bluegreen.map"] == []
    finally:
        subprocess.run([chattr, "-i", str(path)], check=True)
