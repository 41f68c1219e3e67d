# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The map file on disk: what HAProxy reads back on every reload.

HAProxy reads a map file line by line: leading blanks skipped, `#` starts a
comment line, the key runs to the first blank, the value is the rest of the
line without surrounding blanks. Edits here touch only the lines of the key
being changed, so comments, order and other entries survive, and the file is
replaced atomically so a reload never reads half a file.
"""

from __future__ import annotations

import os
import tempfile


class MapFileError(Exception):
    pass


def _split_entry(line):
    """(key, value) for an entry line, None for blank and comment lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    parts = stripped.split(None, 1)
    return parts[0], parts[1].strip() if len(parts) > 1 else ""


def parse_map_text(text):
    """Entries in file order as a list of (key, value)."""
    return [entry for entry in map(_split_entry, text.splitlines()) if entry is not None]


def map_text_values(text):
    """First value per key, matching HAProxy's lookup on duplicates."""
    values = {}
    for key, value in parse_map_text(text):
        values.setdefault(key, value)
    return values


def _entry_line(line, value):
    """Rewrite the value of an entry line, keeping its indent and separator."""
    body = line.rstrip("\r\n")
    newline = line[len(body):]
    indent = body[:len(body) - len(body.lstrip())]
    key = body.split(None, 1)[0]
    after_key = body[len(indent) + len(key):]
    separator = after_key[:len(after_key) - len(after_key.lstrip())] or " "
    return "%s%s%s%s%s" % (indent, key, separator, value, newline)


def set_map_text_value(text, key, value):
    """Set every entry of `key` to `value` (HAProxy's `set map` does the same); append if absent."""
    lines = text.splitlines(True)
    found = False
    for index, line in enumerate(lines):
        entry = _split_entry(line)
        if entry and entry[0] == key:
            lines[index] = _entry_line(line, value)
            found = True
    if not found:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append("%s %s\n" % (key, value))
    return "".join(lines)


def remove_map_text_key(text, key):
    """Drop every entry of `key`, keeping all other lines."""
    return "".join(
        line for line in text.splitlines(True)
        if not (_split_entry(line) and _split_entry(line)[0] == key)
    )


def read_map_file(path):
    try:
        with open(path, "r") as handle:
            return handle.read()
    except FileNotFoundError:
        raise MapFileError("map file %s does not exist on this host" % path)
    except (OSError, UnicodeDecodeError) as exc:
        raise MapFileError("cannot read map file %s: %s" % (path, exc))


def write_map_file_atomic(path, text):
    """Replace `path` with `text`: temp file in the same directory, fsync, rename.

    Owner and mode of the existing file are kept, so HAProxy (often running as
    its own user) can still read it after the rename.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        current = os.stat(path)
    except FileNotFoundError:
        current = None
    descriptor, temp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), dir=directory)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if current is not None:
            os.chmod(temp_path, current.st_mode & 0o7777)
            if hasattr(os, "chown"):
                try:
                    os.chown(temp_path, current.st_uid, current.st_gid)
                except PermissionError:
                    pass
        else:
            os.chmod(temp_path, 0o644)
        os.rename(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.unlink(temp_path)
        raise
    # The rename is durable only once the directory entry is on disk.
    directory_descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_descriptor)
    finally:
        os.close(directory_descriptor)
