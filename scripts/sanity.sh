#!/usr/bin/env bash
# ansible-test sanity from a temporary ansible_collections/bluegreen/haproxy tree.
# ansible-test insists on that layout and on its cwd being the collection root.
# Usage: scripts/sanity.sh [ansible-test sanity options]; scripts/sanity.sh --prepare only makes
# its venv (.tmp/sanity-venv; `make test` does that early, in the background).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.tmp/sanity-venv"
bin="$venv/bin"
if [ ! -x "$bin/ansible-test" ] || ! cmp -s "$repo/requirements/sanity.txt" "$venv/requirements.txt"; then
  python3 -m venv "$venv"
  "$bin/pip" install -q --disable-pip-version-check -r "$repo/requirements/sanity.txt"
  cp "$repo/requirements/sanity.txt" "$venv/requirements.txt"
fi
if [ "${1:-}" = --prepare ]; then exit 0; fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/bluegreen/haproxy"
mkdir -p "$dest"
# Exactly what git would ship: tracked files plus new ones not ignored.
(
  cd "$repo"
  git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' file; do
    case "$file" in
      # The AWX link back to the collection root is not content (galaxy.yml build_ignore).
      playbooks/collections/*) continue ;;
    esac
    # A tracked file deleted in the working tree is not shipped either.
    if [ -e "$file" ] || [ -L "$file" ]; then cp --parents -P "$file" "$dest"/; fi
  done
)
cd "$dest"
# ansible-test bootstraps pip in its per-test venvs from a cached get-pip script.
pip_version=$("$bin/python" -c 'from ansible_test._internal.python_requirements import PIP_VERSION; print(PIP_VERSION)' 2>/dev/null || echo 24.2)
cache="$HOME/.ansible/test/cache/get_pip_${pip_version//./_}.py"
mkdir -p "$(dirname "$cache")"
cmp -s "$repo/scripts/get_pip_shim.py" "$cache" || cp "$repo/scripts/get_pip_shim.py" "$cache"
export PATH="$bin:$PATH"
# The shell scripts are checked when the machine has the shellcheck binary (.ci/run installs it).
skip=()
if ! command -v shellcheck >/dev/null; then skip+=(--skip-test shellcheck); fi
echo "sanity: ansible-test sanity in $dest"
"$bin/ansible-test" sanity --python "$("$bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" --color no "${skip[@]+"${skip[@]}"}" "$@"
