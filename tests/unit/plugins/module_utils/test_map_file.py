"""Map file edits keep everything but the changed entry, and replace the file atomically."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.bluegreen.haproxy.plugins.module_utils.map_file import (
    MapFileError,
    map_text_values,
    parse_map_text,
    read_map_file,
    remove_map_text_key,
    set_map_text_value,
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
