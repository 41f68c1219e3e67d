#!/usr/bin/env bash
# `make matrix`: every ansible-core version meta/runtime.yml claims besides the main one
# (requirements/test.txt) gets its own venv under .venv-matrix/<version>/, created in parallel
# and reused while requirements/matrix.txt, the version and its Python are unchanged. In each:
# the unit tests, then an AWX project from a plain clone runs status, cutover, rollback and
# persist against a real HAProxy on loopback (tests/integration/test_packaging.py), and a fleet of
# two nodes at forks 1, whose async switch is collected by reading each job's file
# (release_collect decodes it with that version's own module-result parsing).
#
# Each version's venv uses `python3` when that Python is new enough for it, else the oldest
# installed Python that is (ansible-core 2.20 and newer need 3.12: pyenv's, or a python3.12 on
# PATH): the lowest controller Python a version runs on is the one that breaks first.
# VERSION@PYTHON (2.21.5@3.13) names the Python instead.
#
# Usage: scripts/version-matrix.sh [--prepare] 2.17.14 2.18.19 2.20.10 2.21.5
#   --prepare: only the venvs (`make test` makes them early, in the background)
# MATRIX_JOBS (default 2): how many versions run their tests at once.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
prepare_only=false
if [ "${1:-}" = --prepare ]; then prepare_only=true; shift; fi
[ "$#" -gt 0 ] || { echo "usage: $0 [--prepare] ANSIBLE_CORE_VERSION[@PYTHON]..." >&2; exit 2; }
jobs=${MATRIX_JOBS:-2}

# min_python VERSION: the oldest controller Python that ansible-core VERSION installs on.
min_python() {
  case "$1" in
    2.17.*) echo 3.10 ;;
    2.18.* | 2.19.*) echo 3.11 ;;
    *) echo 3.12 ;;  # 2.20, 2.21 (and, until told otherwise, what comes after)
  esac
}

# python_version PYTHON: "3.12" when PYTHON runs, else nothing.
python_version() {
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

# find_python X.Y: a working python X.Y on PATH or in pyenv (whose shims on PATH only run the
# versions `pyenv global` selects, so its versions directory is searched directly).
find_python() {
  local wanted=$1 candidate root
  root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
  for candidate in "$(command -v "python$wanted" || true)" "$root/versions/$wanted".*/bin/"python$wanted"; do
    if [ -n "$candidate" ] && [ "$(python_version "$candidate")" = "$wanted" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

# interpreter ENTRY: the Python for a matrix entry (VERSION or VERSION@X.Y), or a message
# naming what to install.
interpreter() {
  local version=${1%@*} wanted minimum default minor
  if [[ "$1" == *@* ]]; then
    wanted=${1#*@}
    find_python "$wanted" && return 0
    echo "matrix: no Python $wanted for ansible-core $version (install it: pyenv install $wanted)" >&2
    return 1
  fi
  minimum=$(min_python "$version")
  default=$(python_version python3)
  if [ -n "$default" ] && [ "$(printf '%s\n' "$minimum" "$default" | sort -V | head -n1)" = "$minimum" ]; then
    command -v python3
    return 0
  fi
  for minor in $(seq "${minimum#3.}" 14); do
    find_python "3.$minor" && return 0
  done
  echo "matrix: ansible-core $version needs Python $minimum or newer and none is installed" \
    "(python3 is ${default:-missing}; install one: pyenv install $minimum)" >&2
  return 1
}

prepare() {
  local entry=$1 version=${1%@*} venv=.venv-matrix/${1%@*} python digest wanted
  python=$(interpreter "$entry") || return 1
  digest=$(sha256sum requirements/matrix.txt | cut -c1-16)
  wanted="ansible-core==$version $digest python$(python_version "$python")"
  if [ -x "$venv/bin/pytest" ] && [ "$(cat "$venv/.installed" 2>/dev/null)" = "$wanted" ]; then
    return 0
  fi
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$version" -r requirements/matrix.txt \
    >"$venv.log" 2>&1 || { echo "matrix: installing ansible-core $version on $python failed:"; cat "$venv.log"; return 1; }
  echo "$wanted" >"$venv/.installed"
}

mkdir -p .venv-matrix
started=$SECONDS
pids=()
for entry in "$@"; do prepare "$entry" & pids+=($!); done
prepared=0
for pid in "${pids[@]}"; do wait "$pid" || prepared=1; done
[ "$prepared" -eq 0 ] || { echo "matrix: a venv could not be made (above)" >&2; exit 1; }
echo "matrix: venvs ready in $((SECONDS - started))s"
if $prepare_only; then exit 0; fi

# run_version VERSION: its unit tests, the plain-clone cutover and rollback, the collected fleet, output to
# .venv-matrix/VERSION.test.log; prints one line with the result and the time.
run_version() {
  local version=$1 venv=.venv-matrix/$1 began=$SECONDS python
  python=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
  if "$venv/bin/pytest" -q -p no:cacheprovider tests/unit \
      tests/integration/test_packaging.py::test_awx_project_from_a_plain_clone_runs_the_playbooks \
      "tests/integration/test_release_steps.py::test_a_fleet_runs_three_steps_and_collects_only_an_async_switch[1]" \
      >"$venv.test.log" 2>&1; then
    echo "matrix: ansible-core $version (Python $python) passed in $((SECONDS - began))s: $(tail -n1 "$venv.test.log")"
  else
    echo "matrix: ansible-core $version (Python $python) FAILED in $((SECONDS - began))s; its log:"
    cat "$venv.test.log"
    return 1
  fi
}

started=$SECONDS
failed=()
declare -A running=()  # pid -> version
collect_one() {  # waits for whichever running version ends first (bash 5.1's wait -n -p)
  local done_pid rc=0
  wait -n -p done_pid "${!running[@]}" || rc=$?
  [ "$rc" -eq 0 ] || failed+=("${running[$done_pid]}")
  unset "running[$done_pid]"
}
for entry in "$@"; do
  while [ "${#running[@]}" -ge "$jobs" ]; do collect_one; done
  run_version "${entry%@*}" &
  running[$!]=${entry%@*}
done
while [ "${#running[@]}" -gt 0 ]; do collect_one; done
echo "matrix: $# versions tested in $((SECONDS - started))s ($jobs at a time)"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "matrix: failed on ansible-core ${failed[*]}" >&2
  exit 1
fi
