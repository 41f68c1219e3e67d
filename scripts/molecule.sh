#!/usr/bin/env bash
# Run every Molecule scenario (molecule/*/molecule.yml) against both Debian releases:
#   bookworm -> HAProxy 2.6 (Debian 12), trixie -> HAProxy 3.0 (Debian 13)
# with `molecule test`, and exit non-zero if any run failed. Called by `make molecule`.
# Scenarios: default (the role), release (the release playbooks on a fleet), systemd (the
# role on a plain Debian with systemd as PID 1, HAProxy from apt); each verifies with
# testinfra (molecule/<scenario>/tests/).
#
#   scripts/molecule.sh                        # every scenario, both images
#   SCENARIOS="default" scripts/molecule.sh    # some scenarios
#   IMAGE_TAGS="trixie" scripts/molecule.sh    # one image
#   MOLECULE_PARALLEL=0 scripts/molecule.sh    # one run at a time, output streamed
#
# Scenarios run one after another. Within a scenario the image runs go in parallel when the
# scenario allows it: every platform name and network name in its molecule.yml contains
# ${HAPROXY_IMAGE_TAG...} (so the two runs' containers and networks cannot collide);
# otherwise they run one after the other. Each run gets its own Molecule ephemeral
# directory and a log under .tmp/molecule/; a failed run prints the end of its log.
#
# Needs the images from scripts/build-images.sh (built here when missing) and the venv
# (`make venv`). Ansible finds this collection through .collections (as `make collection`
# makes it) and community.docker etc. in the venv.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1

log() { printf 'molecule.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

VENV_BIN=$ROOT/.venv/bin
[ -x "$VENV_BIN/molecule" ] || die "no molecule in $VENV_BIN: run 'make venv' first"
export PATH="$VENV_BIN:$PATH"

# Collections: this repository (through .collections) first, then the venv's own
# (community.docker, community.crypto, ansible.posix from the `ansible` package). The Makefile
# turns ANSIBLE_COLLECTIONS_SCAN_SYS_PATH off, so the venv's path is added explicitly.
COLLECTIONS=$ROOT/.collections
if [ ! -e "$COLLECTIONS/ansible_collections/bluegreen/haproxy" ]; then
    mkdir -p "$COLLECTIONS/ansible_collections/bluegreen"
    ln -sfn ../../.. "$COLLECTIONS/ansible_collections/bluegreen/haproxy"
fi
PURELIB=$("$VENV_BIN/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
export ANSIBLE_COLLECTIONS_PATH="${ANSIBLE_COLLECTIONS_PATH:-$COLLECTIONS}:$PURELIB"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
export ANSIBLE_FORCE_COLOR=${ANSIBLE_FORCE_COLOR:-0}
export PY_COLORS=${PY_COLORS:-0}
export NO_COLOR=${NO_COLOR:-1}

read -r -a TAGS <<<"${IMAGE_TAGS:-bookworm trixie}"
PARALLEL=${MOLECULE_PARALLEL:-1}

if [ -n "${SCENARIOS:-}" ]; then
    read -r -a SCENARIO_LIST <<<"$SCENARIOS"
else
    SCENARIO_LIST=()
    for f in molecule/*/molecule.yml; do
        [ -e "$f" ] || continue
        d=${f%/molecule.yml}
        SCENARIO_LIST+=("${d#molecule/}")
    done
fi
[ "${#SCENARIO_LIST[@]}" -gt 0 ] || die "no Molecule scenario found under molecule/"

# Images: build them (cached, a few seconds when warm) only when one is missing.
need_images=0
for image in bluegreen/app:latest "${TAGS[@]/#/bluegreen/haproxy-node:}" "${TAGS[@]/#/bluegreen/systemd-node:}"; do
    docker image inspect "$image" >/dev/null 2>&1 || need_images=1
done
if [ "$need_images" -eq 1 ]; then
    log "some images are missing; running scripts/build-images.sh"
    "$ROOT/scripts/build-images.sh" || die "building the images failed"
fi

parallel_safe() {
    # True when every platform and network name of the scenario depends on the image tag.
    python3 - "$ROOT/molecule/$1/molecule.yml" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
names = re.findall(r'^\s*-?\s*name:\s*["\']?([^"\'\n#]+)', text[text.find("platforms:"):text.find("\nprovisioner:") if "\nprovisioner:" in text else None], re.M)
sys.exit(0 if names and all("HAPROXY_IMAGE_TAG" in n for n in names) else 1)
EOF
}

OUT=$ROOT/.tmp/molecule
mkdir -p "$OUT"
declare -a RESULTS=()
failed=0
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; exit 130' INT TERM

# run_one SCENARIO TAG STREAM: one `molecule test`, timed; writes $OUT/SCENARIO-TAG.{log,rc,time}.
run_one() {
    local scenario=$1 tag=$2 stream=$3 start rc
    local name=$scenario-$tag
    local ephemeral=$OUT/ephemeral/$name
    rm -rf "$ephemeral"
    mkdir -p "$ephemeral"
    start=$(date +%s)
    if [ "$stream" = 1 ]; then
        HAPROXY_IMAGE_TAG=$tag MOLECULE_EPHEMERAL_DIRECTORY=$ephemeral \
            molecule test -s "$scenario" 2>&1 | tee "$OUT/$name.log"
        rc=${PIPESTATUS[0]}
    else
        HAPROXY_IMAGE_TAG=$tag MOLECULE_EPHEMERAL_DIRECTORY=$ephemeral \
            molecule test -s "$scenario" >"$OUT/$name.log" 2>&1
        rc=$?
    fi
    echo "$rc" >"$OUT/$name.rc"
    echo $(($(date +%s) - start)) >"$OUT/$name.time"
    return "$rc"
}

report() {
    local scenario=$1 tag=$2 name=$1-$2 rc secs
    rc=$(cat "$OUT/$name.rc" 2>/dev/null || echo 1)
    secs=$(cat "$OUT/$name.time" 2>/dev/null || echo '?')
    if [ "$rc" = 0 ]; then
        RESULTS+=("PASS  $scenario  $tag  ${secs}s")
    else
        failed=1
        RESULTS+=("FAIL  $scenario  $tag  ${secs}s  (log: ${OUT#"$ROOT"/}/$name.log)")
        if [ "$PARALLEL" = 1 ]; then
            log "---- $name failed (exit $rc); last lines of its log ----"
            tail -n 120 "$OUT/$name.log" >&2
            log "---- end of $name ----"
        fi
    fi
}

total_start=$(date +%s)
# Every scenario whose names depend on the image tag runs at the same time as the others:
# their containers and networks are named per scenario and per tag, and most of their time is
# spent waiting (health checks, watch windows), not on the CPU.
declare -a SERIAL=() STARTED=()
PIDS=()
for scenario in "${SCENARIO_LIST[@]}"; do
    if [ "$PARALLEL" = 1 ] && [ "${#TAGS[@]}" -gt 1 ] && parallel_safe "$scenario"; then
        log "scenario $scenario: ${TAGS[*]} in parallel (logs in ${OUT#"$ROOT"/}/)"
        for tag in "${TAGS[@]}"; do
            run_one "$scenario" "$tag" 0 &
            PIDS+=($!)
            STARTED+=("$scenario $tag")
        done
    else
        SERIAL+=("$scenario")
    fi
done
for p in "${PIDS[@]}"; do wait "$p"; done
PIDS=()
for pair in "${STARTED[@]}"; do
    read -r scenario tag <<<"$pair"
    report "$scenario" "$tag"
done
for scenario in "${SERIAL[@]}"; do
    for tag in "${TAGS[@]}"; do
        log "scenario $scenario: $tag"
        run_one "$scenario" "$tag" "$([ "$PARALLEL" = 1 ] && echo 0 || echo 1)"
        report "$scenario" "$tag"
    done
done

log "results ($(($(date +%s) - total_start))s in all):"
for line in "${RESULTS[@]}"; do printf '  %s\n' "$line" >&2; done
exit "$failed"
