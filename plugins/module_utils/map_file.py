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
import re
import tempfile


class MapFileError(Exception):
    pass


class MapFileEncodingError(MapFileError):
    """An entry line holds bytes that are not UTF-8: its key and value cannot be read for sure."""


# Undecodable bytes of comment lines are carried as surrogates (PEP 383), so a file whose
# comments are latin-1 is read, edited and written back byte for byte.
ENCODING = "utf-8"
ENCODING_ERRORS = "surrogateescape"

# HAProxy's map reader (pattern.c) splits a line on spaces and tabs only, and ends it at LF;
# Python's str.split()/strip()/splitlines() would also cut at U+2028, U+0085, FF, VT...
_BLANKS = " \t"
_ENTRY = re.compile(r"([^ \t]+)[ \t]*(.*)\Z", re.DOTALL)


def _lines(text, keepends=False):
    """Lines split on LF only (a CR before it stays on the line, as HAProxy sees it)."""
    parts = text.split("\n")
    if not keepends:
        return parts
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def _split_entry(line):
    """(key, value) for an entry line, None for blank and comment lines."""
    # HAProxy ends a line's key and value at the first CR (a CRLF file's CR, mostly).
    stripped = line.rstrip("\n").split("\r", 1)[0].strip(_BLANKS)
    if not stripped or stripped.startswith("#"):
        return None
    key, value = _ENTRY.match(stripped).groups()
    return key, value.strip(_BLANKS)


def parse_map_text(text):
    """Entries in file order as a list of (key, value)."""
    return [entry for entry in map(_split_entry, _lines(text)) if entry is not None]


def map_text_values(text):
    """First value per key, matching HAProxy's lookup on duplicates."""
    values = {}
    for key, value in parse_map_text(text):
        values.setdefault(key, value)
    return values


# Up to this many keys, their lines are found with one regex search per key (C speed) instead of
# splitting every line of the file: a release's few keys in a 100,000-line map cost a millisecond
# to read or rewrite, not a tenth of a second.
_FEW_KEYS = 20


def _key_lines(text, key):
    """(start, end) of every entry line of `key`, `end` past its line ending: the lines a full
    parse (_split_entry) keys so, found without splitting the others."""
    for match in re.finditer(r"^[ \t]*%s(?=[ \t\r]|$)" % re.escape(key), text, re.MULTILINE):
        start = match.start()
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        # A comment, or a key with blanks in it, is not an entry of that key.
        if (_split_entry(text[start:end]) or (None,))[0] == key:
            yield start, end


def map_text_lookup(text, keys):
    """{key: first value on disk} for the `keys` present in the file (a few: see _FEW_KEYS)."""
    if len(keys) > _FEW_KEYS:
        values = map_text_values(text)
        return {key: values[key] for key in keys if key in values}
    found = {}
    for key in keys:
        for start, end in _key_lines(text, key):
            found[key] = _split_entry(text[start:end])[1]
            break
    return found


def _entry_line(line, value):
    """Rewrite the value of an entry line, keeping its indent, separator and line ending."""
    body = line.rstrip("\r\n")
    newline = line[len(body):]
    indent = body[:len(body) - len(body.lstrip(_BLANKS))]
    key = _ENTRY.match(body[len(indent):]).group(1)
    after_key = body[len(indent) + len(key):]
    separator = after_key[:len(after_key) - len(after_key.lstrip(_BLANKS))] or " "
    return "%s%s%s%s%s" % (indent, key, separator, value, newline)


def line_ending(text):
    """The file's line ending: CRLF when its first line ends so, LF otherwise."""
    first_end = text.find("\n")
    return "\r\n" if first_end > 0 and text[first_end - 1] == "\r" else "\n"


def set_map_text_values(text, values):
    """Set every entry of each key of `values` (as HAProxy's `set map` does); append missing ones.

    One pass over the file whatever the number of keys, so a bulk change of 10,000 keys
    costs one rewrite. Appended lines use the file's own line ending, so CRLF files stay CRLF.
    """
    newline = line_ending(text)
    if len(values) <= _FEW_KEYS:
        lines, found = _set_few_keys(text, values)
    else:
        lines = _lines(text, keepends=True)
        found = set()
        for index, line in enumerate(lines):
            entry = _split_entry(line)
            if entry and entry[0] in values:
                lines[index] = _entry_line(line, values[entry[0]])
                found.add(entry[0])
    missing = [key for key in values if key not in found]
    if missing:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += newline
        lines.extend("%s %s%s" % (key, values[key], newline) for key in missing)
    return "".join(lines)


def _set_few_keys(text, values):
    """([text pieces], found keys): `text` with every entry line of each key rewritten."""
    spans = [(start, end, key) for key in values for start, end in _key_lines(text, key)]
    pieces, position = [], 0
    for start, end, key in sorted(spans):
        pieces.extend((text[position:start], _entry_line(text[start:end], values[key])))
        position = end
    pieces.append(text[position:])
    # Without empty pieces the last one holds the text's end, as the last line does in the
    # slow path: a key appended after it needs a line ending before it.
    return [piece for piece in pieces if piece], set(key for _start, _end, key in spans)


def set_map_text_value(text, key, value):
    """Set every entry of `key` to `value` (HAProxy's `set map` does the same); append if absent."""
    return set_map_text_values(text, {key: value})


def remove_map_text_key(text, key):
    """Drop every entry of `key`, keeping all other lines."""
    return "".join(
        line for line in _lines(text, keepends=True)
        if not (_split_entry(line) and _split_entry(line)[0] == key)
    )


def check_entry_encoding(path, data):
    """Raise MapFileEncodingError naming the first entry line of `data` (bytes) that is not UTF-8.

    Comments and blank lines may hold any bytes (HAProxy skips them); an entry line that is
    not UTF-8 would be compared and reported as something HAProxy does not hold, so the
    file is refused there, naming the line and the byte offset, instead of reading the
    key as absent.
    """
    try:
        data.decode(ENCODING)
        return
    except UnicodeDecodeError:
        pass
    offset = 0
    for number, line in enumerate(data.split(b"\n"), 1):
        stripped = line.lstrip(b" \t")
        if stripped and not stripped.startswith(b"#") and stripped.strip(b"\r"):
            try:
                line.decode(ENCODING)
            except UnicodeDecodeError as exc:
                raise MapFileEncodingError(
                    "map file %s: line %d (byte offset %d) is an entry holding byte 0x%02x, which is not "
                    "UTF-8; its key and value cannot be read for sure, so nothing was read from the file. "
                    "Convert the file to UTF-8 (for example iconv -f latin1 -t utf-8)"
                    % (path, number, offset + exc.start, line[exc.start]))
        offset += len(line) + 1


def decode_map_bytes(path, data):
    """The text of a map file's bytes: UTF-8, comment bytes kept as surrogates; see check_entry_encoding."""
    check_entry_encoding(path, data)
    return data.decode(ENCODING, ENCODING_ERRORS)


def read_map_file(path):
    """The file's text with its line endings untouched (CRLF stays CRLF).

    Read as bytes: comment lines may hold any bytes (written back unchanged), entry lines
    must be UTF-8 (MapFileEncodingError otherwise).
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise MapFileError("map file %s does not exist on this host" % path)
    except OSError as exc:
        raise MapFileError("cannot read map file %s: %s" % (path, exc))
    return decode_map_bytes(path, data)


class _MoveRefused(Exception):
    """ansible-core before 2.19 reports a failed atomic_move through fail_json."""


def _atomic_move(module, source, destination):
    """`module.atomic_move`, with its failure raised as MapFileError whatever the ansible-core.

    atomic_move keeps the replaced file's owner, mode, extended attributes and SELinux
    context, and copes with a cross-device rename. ansible-core 2.19 raises when it fails;
    2.17 and 2.18 call `fail_json`, which would end the module before its caller puts the
    runtime map back. So, for this one call, this module object's fail_json raises instead.
    """
    def refuse(msg=None, **kwargs):
        raise _MoveRefused(msg)

    own = vars(module)
    saved = own.get("fail_json")
    module.fail_json = refuse  # an instance attribute over the class's method; put back below
    try:
        module.atomic_move(source, destination)
    except _MoveRefused as exc:
        raise MapFileError(str(exc))
    except Exception as exc:  # ansible-core 2.19+: Exception, the OSError as its cause
        cause = exc.__cause__
        raise MapFileError("%s%s" % (exc, ": %s" % cause if cause is not None else ""))
    finally:
        if saved is not None:
            module.fail_json = saved
        else:
            del module.fail_json


class PreparedMapFile(object):
    """New content for a map file, already written and fsynced next to it; `commit` renames it in.

    Preparing before the runtime change proves the directory takes a new file and leaves
    only the rename for afterwards, so a failure after traffic moved is as unlikely as it
    can be (the rename itself can still fail, e.g. on an immutable file).

    With `module` (the AnsibleModule) the commit goes through `module.atomic_move`: the
    file's owner, mode, extended attributes and SELinux context are kept and a rename across
    file systems (a symlinked map file) still works. Without it (callers outside a module),
    a plain rename that keeps owner and mode only.
    """

    def __init__(self, path, text, module=None):
        self.module = module
        # A symlinked map file keeps its link: the file it points to is replaced.
        self.path = os.path.realpath(path)
        self.directory = os.path.dirname(os.path.abspath(path))
        self.temp_path = None
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        self.creating = current is None
        try:
            descriptor, self.temp_path = tempfile.mkstemp(prefix=".%s." % os.path.basename(path),
                                                          dir=self.directory)
        except OSError as exc:
            raise MapFileError("cannot create a file in %s to replace map file %s atomically: %s"
                               % (self.directory, path, exc))
        try:
            # newline="" writes the text's own line endings (CRLF files stay CRLF); the
            # surrogates of a comment's non-UTF-8 bytes become those bytes again.
            with os.fdopen(descriptor, "w", newline="", encoding=ENCODING, errors=ENCODING_ERRORS) as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if current is not None:
                os.chmod(self.temp_path, current.st_mode & 0o7777)
                if hasattr(os, "chown"):
                    try:
                        os.chown(self.temp_path, current.st_uid, current.st_gid)
                    except PermissionError:
                        pass
            else:
                os.chmod(self.temp_path, 0o644)
        except BaseException as exc:
            self.discard()
            if isinstance(exc, OSError):
                raise MapFileError("cannot write a new copy of map file %s in %s: %s"
                                   % (path, self.directory, exc))
            raise

    def commit(self):
        """Rename the new content over the file; raise MapFileError (temp file removed) on failure."""
        try:
            if self.module is not None:
                _atomic_move(self.module, self.temp_path, self.path)
                if self.creating:
                    os.chmod(self.path, 0o644)  # atomic_move's umask default; HAProxy's user must read it
            else:
                os.rename(self.temp_path, self.path)
        except (OSError, MapFileError) as exc:
            self.discard()
            raise MapFileError("cannot replace map file %s: %s" % (self.path, exc))
        self.temp_path = None
        # The rename is durable only once the directory entry is on disk.
        directory_descriptor = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_descriptor)
        finally:
            os.close(directory_descriptor)

    def discard(self):
        if self.temp_path is not None:
            try:
                os.unlink(self.temp_path)
            except OSError:
                pass
            self.temp_path = None


def write_map_file_atomic(path, text, module=None):
    """Replace `path` with `text`: temp file in the same directory, fsync, rename.

    Owner and mode of the existing file are kept, so HAProxy (often running as
    its own user) can still read it after the rename; with `module`, through
    `module.atomic_move` (see PreparedMapFile).
    """
    PreparedMapFile(path, text, module=module).commit()
