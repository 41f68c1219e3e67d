#!/usr/bin/env bash
# `make test`: every stage of the Makefile's test list, with what waits on the network and the
# disk moved beside what uses the CPU.
#
#   system-test, venv (and collection), test-unit + lint, test-integration,
#   sanity + ee + importer-check + matrix + docs, molecule   in this order; the stages joined
#                                                            by + run side by side;
#   images (debootstrap, apt in containers: network bound)  in the background, from the start;
#   the venvs of sanity, importer-check, matrix, docs (pip)  in the background, from the start.
#
# The test stages themselves are CPU bound on a 2-core machine (every check is an ansible,
# ansible-playbook or docker exec process): Molecule beside the integration tests measured a
# load average of 20-36 and load-induced failures in both, and no shorter run. So they run one
# after the other unless CI_MOLECULE_BESIDE=1 (machines with spare cores): then Molecule starts
# in the background once .venv exists, beside everything after it.
# A background stage's output goes to .tmp/ci/<stage>.log and is printed when it fails; every
# stage's time, result and the CPUs' busy share are listed at the end. The exit status is
# non-zero when any stage failed (a failed system-test or venv stops at once).
#
#   scripts/test.sh                          # what `make test` runs
#   CI_SERIAL=1 scripts/test.sh              # no overlap at all: one stage after the other
#   CI_MOLECULE_BESIDE=1 scripts/test.sh     # Molecule in the background too
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
MAKE=${MAKE:-make}
LOGS=$ROOT/.tmp/ci
rm -rf "$LOGS"
mkdir -p "$LOGS"
SERIAL=${CI_SERIAL:-0}
BESIDE=${CI_MOLECULE_BESIDE:-0}

declare -a SUMMARY=()
declare -A BG_PID=() BG_START=() BG_TICKS=() DEFERRED=()
failed=0
total_start=$(date +%s)

log() { printf '\n==== test.sh: %s (%s, load %s)\n' "$*" "$(date -u +%H:%M:%S)" "$(cut -d' ' -f1-3 /proc/loadavg)"; }

# cpu_ticks: "busy total" jiffies of the whole machine (/proc/stat), to tell in the summary how
# busy the CPUs were during a stage (this run's other stages and anything else on the machine).
cpu_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8, $2 + $3 + $4 + $5 + $6 + $7 + $8 }' /proc/stat; }
busy_since() {  # busy_since "BUSY TOTAL": the CPUs' busy share since then, in percent
    local now
    now=$(cpu_ticks)
    awk -v a="$1" -v b="$now" 'BEGIN { split(a, x, " "); split(b, y, " ");
        t = y[2] - x[2]; printf "%d", (t > 0 ? 100 * (y[1] - x[1]) / t : 0) }'
}

total_ticks=$(cpu_ticks)

record() {  # record NAME RC SECONDS CPU_SINCE [NOTE]; an RC that is not a number is a failure
    local result=PASS
    if ! [[ "$2" =~ ^[0-9]+$ ]] || [ "$2" -ne 0 ]; then result=FAIL; failed=1; fi
    SUMMARY+=("$(printf '%-5s %-16s %5ss  cpu %3s%% busy  %s' "$result" "$1" "$3" "$(busy_since "$4")" "${5:-}")")
}

# stage NAME COMMAND...: in the foreground, output streamed.
stage() {
    local name=$1 start rc ticks
    shift
    log "$name"
    start=$(date +%s)
    ticks=$(cpu_ticks)
    "$@"
    rc=$?
    record "$name" "$rc" $(($(date +%s) - start)) "$ticks"
    return "$rc"
}

# background NAME COMMAND...: started now, output to .tmp/ci/NAME.log; collect with finish.
background() {
    local name=$1
    shift
    if [ "$SERIAL" = 1 ]; then
        DEFERRED[$name]="$*"  # run by finish, in the foreground (simple words only)
        return 0
    fi
    log "$name: started in the background (log: .tmp/ci/$name.log)"
    BG_START[$name]=$(date +%s)
    BG_TICKS[$name]=$(cpu_ticks)
    ( "$@" >"$LOGS/$name.log" 2>&1; rc=$?; echo "$rc" >"$LOGS/$name.rc"; date +%s >"$LOGS/$name.end"; exit "$rc" ) &
    BG_PID[$name]=$!
}

# stage_rc FILE: a background stage's exit status as its rc file holds it; a missing, empty or
# garbled file (the stage was killed before it wrote one, a full disk) is a failure, never a pass.
stage_rc() {
    local rc
    rc=$(cat "$1" 2>/dev/null) || rc=""
    if [[ "$rc" =~ ^[0-9]+$ ]]; then
        echo "$((10#$rc))"
    else
        echo "test.sh: no exit status in ${1#"$ROOT"/} (${rc:-empty or missing}): counted as a failure" >&2
        echo 1
    fi
}

# finish NAME: waits for a background stage, records it, prints its log when it failed.
finish() {
    local name=$1 rc waited
    if [ -n "${DEFERRED[$name]:-}" ]; then
        # shellcheck disable=SC2086  # a command line of simple words, split on purpose
        stage "$name" ${DEFERRED[$name]}
        return
    fi
    log "$name: waiting for it"
    wait "${BG_PID[$name]}"
    waited=$?
    unset "BG_PID[$name]"
    rc=$(stage_rc "$LOGS/$name.rc")
    # The subshell exits with the stage's status too: either one saying "failed" is a failure.
    if [ "$rc" -eq 0 ] && [ "$waited" -ne 0 ]; then rc=$waited; fi
    # Its own time (until it ended, not until it was waited for).
    record "$name" "$rc" $(($(cat "$LOGS/$name.end" 2>/dev/null || date +%s) - BG_START[$name])) \
        "${BG_TICKS[$name]}" "(background; .tmp/ci/$name.log)"
    if [ "$rc" -ne 0 ]; then
        log "$name FAILED (exit $rc); its log:"
        cat "$LOGS/$name.log"
    else
        log "$name passed; the end of its log:"
        tail -n 12 "$LOGS/$name.log"
    fi
    return "$rc"
}

kill_tree() {  # kill_tree PID: a background stage and every process it started
    local child
    for child in $(pgrep -P "$1"); do kill_tree "$child"; done
    kill "$1" 2>/dev/null
}
stop_background() {
    local pid
    for pid in "${BG_PID[@]}"; do kill_tree "$pid"; done
}
trap 'stop_background; exit 130' INT TERM

summary() {
    log "summary ($(($(date +%s) - total_start))s in all, cpu $(busy_since "$total_ticks")% busy)"
    printf '  %s\n' "${SUMMARY[@]}"
    [ "$failed" -eq 0 ] && echo "make test: every stage passed" || echo "make test: FAILED (see above)"
}

stage system-test "$MAKE" -s system-test || { summary; exit 1; }

# Network and disk first, in the background: the venvs of the later checks, and the images
# Molecule needs (with CI_MOLECULE_BESIDE=1, then Molecule itself, once .venv exists).
background test-venvs "$MAKE" -s test-venvs
# shellcheck disable=SC2317  # run through background
molecule_chain() {
    "$MAKE" -s images || return 1
    until [ -e "$LOGS/venv.ready" ] || [ "$SERIAL" = 1 ]; do
        [ -e "$LOGS/venv.failed" ] && { echo "no .venv: molecule not run"; return 1; }
        sleep 2
    done
    "$MAKE" molecule
}
if [ "$BESIDE" = 1 ]; then
    background molecule molecule_chain
else
    background images "$MAKE" -s images
fi

if ! stage venv "$MAKE" venv collection; then
    touch "$LOGS/venv.failed"
    stop_background
    summary
    exit 1
fi
touch "$LOGS/venv.ready"

# side_by_side STAGE...: stages that each keep about one core busy (a single Python process
# most of the time), run together and collected in order; with CI_SERIAL=1, one at a time.
side_by_side() {
    local name rc=0
    for name in "$@"; do background "$name" "$MAKE" "$name"; done
    for name in "$@"; do finish "$name" || rc=1; done
    return "$rc"
}

side_by_side test-unit lint
stage test-integration "$MAKE" test-integration
finish test-venvs
# Measured one after the other at 40-60% busy each (sanity 73 s, importer-check 39 s,
# matrix 78 s, ee 1 s, docs 21-78 s with 15 s of CPU): together they share the two cores instead
# of leaving one idle.
side_by_side sanity ee importer-check matrix docs
if [ "$BESIDE" = 1 ]; then
    finish molecule
elif finish images; then
    stage molecule "$MAKE" molecule
fi

summary
exit "$failed"
