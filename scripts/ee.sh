#!/usr/bin/env bash
# `make ee`: the example execution environment (execution-environment/) as far as this machine
# can take it without a container registry: `ansible-builder create` writes the build context,
# then its galaxy step (ansible-galaxy collection install -r requirements.yml, run where the
# Containerfile runs it) and ansible-builder's own dependency introspection run on the host.
# `docker build` (or `ansible-builder build`) with a registry does the rest.
#
#   scripts/ee.sh                  # builds the collection tarball and stages the definition
#                                  # with it in .tmp/ee/definition/; the context in .tmp/ee/context/
#   scripts/ee.sh --definition DIR # DIR's execution-environment.yml as it is (the tarball copied
#                                  # in by hand, as the definition's header says)
#   docker build -t bluegreen-haproxy-ee .tmp/ee/context   # then, where a registry is reachable
#
# `ansible-builder create` only warns when a build file is missing and still says "Complete!":
# the context is refused here unless it holds the collection tarball.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/.venv/bin"
work=${EE_WORK:-$repo/.tmp/ee}  # EE_WORK: another directory (the tests use their own)
definition=""
if [ "${1:-}" = --definition ]; then
  [ -n "${2:-}" ] || { echo "usage: $0 [--definition DIR]" >&2; exit 2; }
  definition=$(cd "$2" && pwd)
fi
rm -rf "$work"
mkdir -p "$work/dist"
if [ -z "$definition" ]; then
  "$bin/ansible-galaxy" collection build --force --output-path "$work/dist" "$repo" >/dev/null
  definition="$work/definition"
  cp -r "$repo/execution-environment" "$definition"
  cp "$work"/dist/bluegreen-haproxy-*.tar.gz "$definition/bluegreen-haproxy.tar.gz"
fi
if ! "$bin/ansible-builder" create --file "$definition/execution-environment.yml" \
    --context "$work/context" --output-filename Containerfile >"$work/create.log" 2>&1; then
  cat "$work/create.log" >&2
  exit 1
fi
tarball="$work/context/_build/collections/bluegreen-haproxy.tar.gz"
if [ ! -s "$tarball" ] || grep -q -E 'No matches|does not exist' "$work/create.log"; then
  echo "ee: FAILED: the build context has no collection (ansible-builder said:" \
    "$(grep -v '^Complete!' "$work/create.log" | tr '\n' ' '| sed 's/ $//'))." >&2
  echo "ee: copy the collection tarball to $definition/bluegreen-haproxy.tar.gz" \
    "(make build writes it to .tmp/dist/), or run scripts/ee.sh without --definition" >&2
  exit 1
fi
echo "ee: build context in $work/context, with the collection"
# The galaxy stage: COPY _build /build, WORKDIR /build, install from requirements.yml.
(cd "$work/context/_build" && ANSIBLE_COLLECTIONS_PATH="$work/collections" "$bin/ansible-galaxy" collection install --offline \
  -r requirements.yml --collections-path "$work/collections" >/dev/null)
# The builder stage: what the installed collection asks the EE for (meta/execution-environment.yml).
"$bin/python" "$work/context/_build/scripts/introspect.py" introspect \
  "$work/collections" \
  --write-pip "$work/requirements.txt" --write-bindep "$work/bindep.txt" >"$work/introspect.txt"
echo "ee: the collection installs from the EE's requirements.yml; it asks for:"
cat "$work/introspect.txt"
if [ -s "$work/requirements.txt" ] || [ -s "$work/bindep.txt" ]; then
  echo "ee: the collection must need nothing beyond ansible-core (meta/execution-environment.yml)" >&2
  exit 1
fi
