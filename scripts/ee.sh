#!/usr/bin/env bash
# `make ee`: the example execution environment (execution-environment/) as far as this machine
# can take it without a container registry: `ansible-builder create` writes the build context,
# then its galaxy step (ansible-galaxy collection install -r requirements.yml, run where the
# Containerfile runs it) and ansible-builder's own dependency introspection run on the host.
# `ansible-builder build` with podman or docker and a registry does the rest.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
bin="$repo/.venv/bin"
work="$repo/.tmp/ee"
rm -rf "$work"
mkdir -p "$work/dist"
"$bin/ansible-galaxy" collection build --force --output-path "$work/dist" "$repo" >/dev/null
cp "$work"/dist/bluegreen-haproxy-*.tar.gz "$repo/execution-environment/bluegreen-haproxy.tar.gz"
"$bin/ansible-builder" create --file "$repo/execution-environment/execution-environment.yml" \
  --context "$work/context" --output-filename Containerfile
# The galaxy stage: COPY _build /build, WORKDIR /build, install from requirements.yml.
(cd "$work/context/_build" && ANSIBLE_COLLECTIONS_PATH="$work/collections" "$bin/ansible-galaxy" collection install --offline \
  -r requirements.yml --collections-path "$work/collections" >/dev/null)
# The builder stage: what the installed collection asks the EE for (meta/execution-environment.yml).
"$bin/python" "$work/context/_build/scripts/introspect.py" introspect \
  "$work/collections" \
  --write-pip "$work/requirements.txt" --write-bindep "$work/bindep.txt" >"$work/introspect.txt"
echo "ee: $work/context: collection installs from the EE's requirements.yml; it asks for:"
cat "$work/introspect.txt"
if [ -s "$work/requirements.txt" ] || [ -s "$work/bindep.txt" ]; then
  echo "ee: the collection must need nothing beyond ansible-core (meta/execution-environment.yml)" >&2
  exit 1
fi
