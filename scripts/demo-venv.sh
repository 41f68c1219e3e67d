#!/usr/bin/env bash
# The venv `make demo` runs in (default .venv-demo), with what the demo needs and no more:
#   - requirements/demo.txt (ansible-core);
#   - community.docker, the one collection the containers route uses (its `docker` connection
#     plugin reaches the HAProxy containers through the docker CLI), taken from the wheel of the
#     `ansible` package that requirements/molecule.txt pins, so the demo and Molecule use the
#     same community.docker. Only that collection is unpacked (4 MB), not the package's 470 MB.
# It lands in the venv's site-packages/ansible_collections, where scripts/demo.py points Ansible.
#
#   scripts/demo-venv.sh [VENV]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${1:-.venv-demo}
PYTHON=${PYTHON:-python3}

ansible_pin=$(grep -E '^ansible==' requirements/molecule.txt) || {
    echo "demo-venv: no 'ansible==' pin in requirements/molecule.txt: it names the community.docker the demo uses" >&2
    exit 1
}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check -r requirements/demo.txt

wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
"$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --only-binary=:all: -d "$wheels" "$ansible_pin"
"$VENV/bin/python" - "$wheels" <<'PY'
import glob
import os
import shutil
import sys
import sysconfig
import zipfile

PREFIX = "ansible_collections/community/docker/"
wheel = glob.glob(os.path.join(sys.argv[1], "ansible-*.whl"))[0]
target = sysconfig.get_paths()["purelib"]
shutil.rmtree(os.path.join(target, PREFIX), ignore_errors=True)
with zipfile.ZipFile(wheel) as archive:
    members = [name for name in archive.namelist() if name.startswith(PREFIX)]
    if not members:
        sys.exit("demo-venv: %s has no %s" % (os.path.basename(wheel), PREFIX))
    archive.extractall(target, members)
print("demo-venv: community.docker from %s (%d files) in %s"
      % (os.path.basename(wheel), len(members), os.path.relpath(os.path.join(target, PREFIX))))
PY
touch "$VENV/.installed"
