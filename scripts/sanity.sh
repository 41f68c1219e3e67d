#!/usr/bin/env bash
# ansible-test sanity as a contributor runs it: in a plain clone of this repository under
# ansible_collections/bluegreen/haproxy (scripts/checkout.sh: the working tree as git would
# commit it), from the collection root, with no ANSIBLE_* variable from the caller.
# Usage: scripts/sanity.sh [ansible-test sanity options]; scripts/sanity.sh --prepare only makes
# its venv (.tmp/sanity-venv; `make test` does that early, in the background).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.tmp/sanity-venv"
bin="$venv/bin"
# ansible-test sanity runs its linters from the current Python: a venv with the versions
# ansible-test pins (requirements/sanity.txt).
if [ ! -x "$bin/ansible-test" ] || ! cmp -s "$repo/requirements/sanity.txt" "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$bin/pip" install -q --disable-pip-version-check -r "$repo/requirements/sanity.txt"
  cp "$repo/requirements/sanity.txt" "$venv/requirements.txt"
fi
if [ "${1:-}" = --prepare ]; then exit 0; fi
# ansible-test bootstraps pip in its per-test venvs from a cached get-pip script.
pip_version=$("$bin/python" -c 'from ansible_test._internal.python_requirements import PIP_VERSION; print(PIP_VERSION)' 2>/dev/null || echo 24.2)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
cmp -s "$repo/scripts/get_pip_shim.py" "$cache" || cp "$repo/scripts/get_pip_shim.py" "$cache"
export PATH="$bin:$PATH"
# The shell scripts are checked when the machine has the shellcheck binary (.ci/run installs it).
skip=()
if ! command -v shellcheck >/dev/null; then skip+=(--skip-test shellcheck); fi
python_version=$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
exec "$repo/scripts/checkout.sh" sanity -- \
  ansible-test sanity --python "$python_version" --color no "${skip[@]+"${skip[@]}"}" "$@"
