#!/usr/bin/env bash
# `make matrix`: every ansible-core version meta/runtime.yml claims besides the main one
# (requirements/test.txt) gets its own venv under .venv-matrix/<version>/, created in parallel
# and reused while requirements/matrix.txt and the version are unchanged. In each: the unit
# tests, then an AWX project from a plain clone runs status, cutover, rollback and persist
# against a real HAProxy on loopback (tests/integration/test_packaging.py).
# Usage: scripts/version-matrix.sh [--prepare] 2.17.14 2.18.19
#   --prepare: only the venvs (`make test` makes them early, in the background)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
prepare_only=false
if [ "${1:-}" = --prepare ]; then prepare_only=true; shift; fi
[ "$#" -gt 0 ] || { echo "usage: $0 ANSIBLE_CORE_VERSION..." >&2; exit 2; }
python=${PYTHON:-python3}

prepare() {
  local version=$1 venv=.venv-matrix/$1 digest wanted
  digest=$(sha256sum requirements/matrix.txt | cut -c1-16)
  wanted="ansible-core==$version $digest"
  if [ -x "$venv/bin/pytest" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$version" -r requirements/matrix.txt \
    >"$venv.log" 2>&1 || { echo "matrix: installing ansible-core $version failed:"; cat "$venv.log"; return 1; }
  echo "$wanted" >"$venv/.installed"
}

mkdir -p .venv-matrix
started=$SECONDS
pids=()
for version in "$@"; do prepare "$version" & pids+=($!); done
for pid in "${pids[@]}"; do wait "$pid"; done
echo "matrix: venvs ready in $((SECONDS - started))s"
if $prepare_only; then exit 0; fi

failed=()
for version in "$@"; do
  started=$SECONDS
  echo "matrix: ansible-core $version"
  if ".venv-matrix/$version/bin/pytest" -q -p no:cacheprovider tests/unit \
      tests/integration/test_packaging.py::test_awx_project_from_a_plain_clone_runs_the_playbooks; then
    echo "matrix: ansible-core $version passed in $((SECONDS - started))s"
  else
    failed+=("$version")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "matrix: failed on ansible-core ${failed[*]}" >&2
  exit 1
fi
