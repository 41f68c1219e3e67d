#!/usr/bin/env bash
# Make sure a Docker daemon is usable on this machine.
#
# Idempotent and harmless where Docker already runs: if `docker info` works,
# nothing is installed or started. (debootstrap, for machines without a
# registry, is installed by build-images.sh, and only when `docker pull` fails.) Written for a fresh Debian 12 machine running as root,
# with or without systemd (CI containers and VMs often have no init system).
#
#   scripts/ensure-docker.sh
#
# Environment:
#   DOCKER_STORAGE_DRIVER  force a storage driver (default: overlay2 when an
#                          overlay mount works on the data root, else vfs)
#   DOCKERD_LOG            dockerd log file (default /tmp/dockerd.log)
#   DOCKERD_WAIT           seconds to wait for the daemon (default 60)
set -euo pipefail

DOCKERD_LOG=${DOCKERD_LOG:-/tmp/dockerd.log}
DOCKERD_WAIT=${DOCKERD_WAIT:-60}
DATA_ROOT=/var/lib/docker

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

export PATH="$PATH:/usr/sbin:/sbin"

# 1. Already running? Then there is nothing to do.
if docker info >/dev/null 2>&1; then
    log "docker is already running ($(docker info --format '{{.Driver}}' 2>/dev/null) storage driver)"
    exit 0
fi

# 2. Packages. iptables: dockerd needs it for bridge NAT; tini provides docker-init (--init).
if ! command -v dockerd >/dev/null 2>&1; then
    apt_install docker.io iptables tini
fi

# A daemon we started earlier may still be coming up: wait for it, do not start a second one.
if [ -S /var/run/docker.sock ] && pgrep -x dockerd >/dev/null 2>&1; then
    log "dockerd is running but not answering yet; waiting"
else
    # 3. Pick a storage driver: overlay2 if the kernel can mount an overlay on
    #    the data root's file system (fails e.g. on overlay-on-overlay in
    #    nested containers, or without the overlay module), vfs otherwise.
    overlay_works() {
        local t rc=1
        as_root mkdir -p "$DATA_ROOT"
        t=$(as_root mktemp -d "$DATA_ROOT/.overlay-test.XXXXXX") || return 1
        as_root mkdir -p "$t/lower" "$t/upper" "$t/work" "$t/merged"
        as_root sh -c "echo ok > '$t/lower/f'"
        if as_root mount -t overlay overlay \
                -o "lowerdir=$t/lower,upperdir=$t/upper,workdir=$t/work" "$t/merged" 2>/dev/null; then
            # Write through the overlay (copy-up) too, not just mount it.
            if as_root sh -c "echo changed > '$t/merged/f'" && [ "$(as_root cat "$t/lower/f")" = ok ]; then
                rc=0
            fi
            as_root umount "$t/merged" || true
        fi
        as_root rm -rf "$t"
        return $rc
    }
    driver=${DOCKER_STORAGE_DRIVER:-}
    if [ -z "$driver" ]; then
        if overlay_works; then driver=overlay2; else driver=vfs; fi
    fi
    log "starting dockerd (storage driver $driver, log $DOCKERD_LOG)"

    # Prefer the service manager when there is one that is actually running.
    started=0
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && [ -z "${DOCKER_STORAGE_DRIVER:-}" ] && [ "$driver" = overlay2 ]; then
        if as_root systemctl start docker >/dev/null 2>&1; then started=1; fi
    fi
    if [ "$started" -eq 0 ]; then
        # setsid + nohup: the daemon must outlive this script and its process group.
        as_root sh -c "setsid nohup dockerd --storage-driver='$driver' >>'$DOCKERD_LOG' 2>&1 </dev/null &"
    fi
fi

# 4. Wait for it.
deadline=$((SECONDS + DOCKERD_WAIT))
until docker info >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
        log "docker did not come up within ${DOCKERD_WAIT}s; last lines of $DOCKERD_LOG:"
        tail -n 30 "$DOCKERD_LOG" >&2 2>/dev/null || true
        exit 1
    fi
    sleep 1
done
log "docker is up ($(docker info --format '{{.Driver}}' 2>/dev/null) storage driver)"
