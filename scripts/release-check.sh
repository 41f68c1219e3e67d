#!/usr/bin/env bash
# `make release-check`: galaxy-importer, the importer Galaxy and Automation Hub run on every
# upload, on the built tarball, with Automation Hub's checks switched on: a tag from Hub's
# list, a changelog, ansible-doc on every plugin, ansible-lint, flake8. ansible-test sanity,
# which the importer would run in a container, is `make sanity`. The importer runs in its
# own venv (.tmp/importer-venv, reused while requirements/release.txt is unchanged): it pins
# its own ansible-core and ansible-lint.
#
# Galaxy and Hub refuse a collection without `repository`, and galaxy.yml has none until the
# collection has a public home (no placeholder is shipped). Until then the tarball is not
# publishable and this check fails, naming that. --waive-repository (what `make test` runs)
# checks everything else: it gives a temporary copy of the tarball a marked stand-in value.
# Usage: scripts/release-check.sh [--waive-repository] TARBALL
#        scripts/release-check.sh --prepare    # only the importer's venv (`make test`, early)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
waive=false
prepare_only=false
if [ "${1:-}" = --prepare ]; then prepare_only=true; shift; fi
if [ "${1:-}" = --waive-repository ]; then waive=true; shift; fi
venv="$repo/.tmp/importer-venv"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$repo/requirements/release.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$repo/requirements/release.txt"
  cp "$repo/requirements/release.txt" "$venv/requirements.txt"
fi
if $prepare_only; then exit 0; fi
tarball=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/galaxy-importer.cfg" <<'CFG'
[galaxy-importer]
CHECK_REQUIRED_TAGS = True
CHECK_CHANGELOG = True
RUN_ANSIBLE_DOC = True
RUN_ANSIBLE_LINT = True
OFFLINE_ANSIBLE_LINT = True
RUN_FLAKE8 = True
RUN_ANSIBLE_TEST = False
LOG_LEVEL_MAIN = INFO
CFG
cd "$work"
repository=$(tar -xzOf "$tarball" MANIFEST.json | python3 -c 'import json, sys; print(json.load(sys.stdin)["collection_info"].get("repository") or "")')
if [ -z "$repository" ]; then
  if ! $waive; then
    echo "release-check: galaxy.yml has no repository; Galaxy and Automation Hub refuse the upload until it names the collection's public repository" >&2
    exit 1
  fi
  echo "release-check: no repository in galaxy.yml (not publishable yet); checking everything else"
  mkdir unpacked
  tar -xzf "$tarball" -C unpacked
  python3 - unpacked/MANIFEST.json <<'PY'
import json, sys
with open(sys.argv[1]) as handle:
    manifest = json.load(handle)
manifest["collection_info"]["repository"] = "https://repository-not-set.invalid/waived-by-release-check"
with open(sys.argv[1], "w") as handle:
    json.dump(manifest, handle, indent=4)
PY
  tarball="$work/$(basename "$tarball")"
  tar -czf "$tarball" -C unpacked .
fi
# A HOME of its own: nothing installed for the user can stand in for the tarball's content.
mkdir home
env -u ANSIBLE_COLLECTIONS_PATH HOME="$work/home" GALAXY_IMPORTER_CONFIG="$work/galaxy-importer.cfg" \
  PATH="$venv/bin:$PATH" "$venv/bin/python" -m galaxy_importer.main "$tarball" | tee "$work/importer.log"
# The importer reports lint findings as warnings and still exits 0: any warning fails the check.
if grep -E "^(WARNING|ERROR)" "$work/importer.log"; then
  echo "release-check: galaxy-importer reported the findings above" >&2
  exit 1
fi
echo "release-check: galaxy-importer passed on $(basename "$tarball")"
