#!/usr/bin/env bash
# Build the container images the Molecule scenarios use. Idempotent and cached:
# an image is rebuilt only when its inputs (Dockerfile, copied files, build
# args, base image) changed, which the script tells from a label holding a hash
# of those inputs. A warm run only inspects images and takes a few seconds.
#
#   scripts/build-images.sh            # build what is missing or stale
#   FORCE=1 scripts/build-images.sh    # rebuild the project images anyway
#
# Base images: `debian:<suite>-slim` is used as is when present locally, else
# pulled (60 s limit). With a registry that is all: the project images are then a
# plain `docker build` of the Dockerfiles under molecule/images/. Only when the pull
# fails (no registry) is the base built from Debian packages with debootstrap
# (installed then, with apt, if missing) and `docker import`ed under the same name,
# so the Dockerfiles stay conventional. The package mirror is read from this
# machine's apt sources (or $DEBIAN_MIRROR).
#
# Images:
#   debian:bookworm-slim, debian:trixie-slim          (base)
#   bluegreen/haproxy-node:bookworm   HAProxy 2.6     (Debian 12)
#   bluegreen/haproxy-node:trixie     HAProxy 3.0     (Debian 13)
#   bluegreen/app:latest              tests/app/bluegreen_app.py
#   bluegreen/systemd-node:bookworm   systemd as PID 1, no HAProxy (Debian 12)
#   bluegreen/systemd-node:trixie     systemd as PID 1, no HAProxy (Debian 13)
#
#   IMAGES="haproxy-node app" scripts/build-images.sh   # only some of the project images
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITES=(bookworm trixie)
HASH_LABEL=org.bluegreen.inputs-sha256
FORCE=${FORCE:-0}
read -r -a IMAGES <<<"${IMAGES:-haproxy-node app systemd-node}"
wanted() { [[ " ${IMAGES[*]} " == *" $1 "* ]]; }

CLEANUP=()
cleanup() { [ "${#CLEANUP[@]}" -eq 0 ] || rm -rf "${CLEANUP[@]}"; }
trap cleanup EXIT

log() { printf 'build-images: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
die() { log "ERROR: $*"; exit 1; }

"$ROOT/scripts/ensure-docker.sh"

# Docker CLIs >= 23 use BuildKit through the buildx plugin when it is installed
# and fall back to the classic builder otherwise; both handle these Dockerfiles.
# Forcing BuildKit without buildx would fail, so only force the classic builder
# when buildx is missing (keeps the output free of a deprecation prompt).
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi

# ---------------------------------------------------------------------------
# Package mirror: the main Debian archive URI from apt's sources (deb822
# *.sources first, then one-line sources.list). Security archives are skipped.
# ---------------------------------------------------------------------------
apt_uris() {
    # Prints "<uri> <suite>" for every deb source of this machine.
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && enabled != "no")
                    for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
                types = ""; enabled = ""; nu = 0; ns = 0
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            {
                key = tolower($1); sub(/:$/, "", key)
                val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "enabled") enabled = tolower(val)
                else if (key == "uris") nu = split(val, u, /[ \t]+/)
                else if (key == "suites") ns = split(val, s, /[ \t]+/)
            }
            END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [options] uri suite components...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
    done
}

detect_mirrors() {
    local lines
    lines=$(apt_uris)
    if [ -z "${DEBIAN_MIRROR:-}" ]; then
        DEBIAN_MIRROR=$(printf '%s\n' "$lines" |
            awk '$1 !~ /security/ && $2 !~ /(-security|\/updates)$/ { print $1; exit }')
    fi
    if [ -z "${DEBIAN_SECURITY_MIRROR:-}" ]; then
        DEBIAN_SECURITY_MIRROR=$(printf '%s\n' "$lines" |
            awk '$2 ~ /-security$/ { print $1; exit }')
    fi
    DEBIAN_MIRROR=${DEBIAN_MIRROR%/}
    DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR%/}
    [ -n "$DEBIAN_MIRROR" ] ||
        die "no Debian archive found in /etc/apt/sources.list{,.d/}; set DEBIAN_MIRROR"
}

# ---------------------------------------------------------------------------
# Base images
# ---------------------------------------------------------------------------
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

debootstrap_import() {
    local suite=$1 tag=$2 dir rc=0
    [ -n "${DEBIAN_MIRROR:-}" ] || detect_mirrors
    if ! command -v debootstrap >/dev/null 2>&1; then
        command -v apt-get >/dev/null 2>&1 ||
            die "no registry, and no debootstrap to build $tag with: install debootstrap"
        log "installing debootstrap (apt-get), to build $tag without a registry"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >&2
    fi

    local script=/usr/share/debootstrap/scripts/$suite
    if [ ! -e "$script" ]; then
        # Older debootstrap releases do not know newer suites yet; they all
        # share the "sid" script.
        script=/usr/share/debootstrap/scripts/sid
        log "debootstrap has no script for $suite, using $script"
    fi

    dir=$(mktemp -d "/var/tmp/bluegreen-rootfs-$suite.XXXXXX")
    CLEANUP+=("$dir" "$dir.log")
    log "debootstrap --variant=minbase $suite from $DEBIAN_MIRROR (this takes a few minutes)"
    local dlog=$dir.log
    if ! debootstrap --variant=minbase "$suite" "$dir" "$DEBIAN_MIRROR" "$script" >"$dlog" 2>&1; then
        # The keyring of an older host may not hold the keys of a newer
        # release (bookworm's debian-archive-keyring 2023.3+deb12u2 was tested
        # and does verify trixie, so this is not needed there). Only then,
        # and only for the signature check, fall back to --no-check-gpg:
        # the packages are still verified against the (unsigned) Release
        # file's checksums.
        if grep -qiE 'unknown key|NO_PUBKEY|signature|Release signed by' "$dlog"; then
            log "WARNING: the host keyring cannot verify $suite; retrying with --no-check-gpg"
            rm -rf "$dir"; mkdir -p "$dir"
            debootstrap --no-check-gpg --variant=minbase "$suite" "$dir" "$DEBIAN_MIRROR" "$script" >"$dlog" 2>&1 || rc=$?
        else
            rc=1
        fi
    fi
    if [ "$rc" -ne 0 ]; then
        tail -n 30 "$dlog" >&2
        rm -f "$dlog"
        die "debootstrap $suite failed"
    fi
    rm -f "$dlog"

    # Make it look like the official slim image: deb822 sources (archive,
    # updates, security), no apt lists or caches, no docs/man pages from
    # later installs.
    rm -f "$dir/etc/apt/sources.list"
    {
        printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$DEBIAN_MIRROR" "$suite" "$suite"
        if [ -n "${DEBIAN_SECURITY_MIRROR:-}" ]; then
            printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
                "$DEBIAN_SECURITY_MIRROR" "$suite"
        fi
    } >"$dir/etc/apt/sources.list.d/debian.sources"
    cat >"$dir/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
    cat >"$dir/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'APT::Install-Recommends "false";\n' >"$dir/etc/apt/apt.conf.d/docker-no-recommends"
    # The files the dpkg excludes above would have kept out (like the
    # official images' "slimify" step).
    find "$dir/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/usr/share/locale/*
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/archives/*.deb \
        "$dir"/var/cache/apt/*.bin "$dir"/var/log/* "$dir"/tmp/* "$dir"/root/.bash_history
    : >"$dir/etc/hostname"
    : >"$dir/etc/resolv.conf"

    log "docker import -> $tag"
    tar --numeric-owner -C "$dir" -c . |
        docker import \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["bash"]' \
            --message "debootstrap --variant=minbase $suite $DEBIAN_MIRROR" \
            - "$tag" >/dev/null
    rm -rf "$dir"
}

ensure_base() {
    local suite=$1 tag=debian:$1-slim
    if image_exists "$tag"; then
        log "base $tag: present"
        return
    fi
    log "base $tag: missing, trying docker pull"
    if timeout 60 docker pull -q "$tag" >/dev/null 2>&1; then
        log "base $tag: pulled"
        return
    fi
    log "base $tag: pull failed, building it with debootstrap"
    debootstrap_import "$suite" "$tag"
}

# ---------------------------------------------------------------------------
# Project images, rebuilt when the hash of their inputs changes
# ---------------------------------------------------------------------------
# build_image TAG DOCKERFILE CONTEXT BASE_IMAGE "BUILD_ARGS" INPUT_FILES...
build_image() {
    local tag=$1 dockerfile=$2 context=$3 base=$4 args=$5
    shift 5
    local base_id want have f
    base_id=$(docker image inspect -f '{{.Id}}' "$base")
    want=$(
        {
            printf 'base=%s\nargs=%s\n' "$base_id" "$args"
            for f in "$dockerfile" "$@"; do
                printf 'file=%s\n' "${f#"$ROOT"/}"
                cat "$f"
            done
        } | sha256sum | cut -d' ' -f1
    )
    have=$(docker image inspect -f "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$tag" 2>/dev/null || true)
    if [ "$have" = "$want" ] && [ "$FORCE" != 1 ]; then
        log "$tag: up to date (${want:0:12})"
        return
    fi
    if [ -z "$have" ]; then
        log "$tag: building (not present)"
    else
        log "$tag: rebuilding (inputs ${have:0:12} -> ${want:0:12})"
    fi
    local old_id
    old_id=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    local -a build_args=()
    local a
    for a in $args; do build_args+=(--build-arg "$a"); done
    # (The classic builder's deprecation notice is filtered out; errors are not.)
    docker build -q --label "$HASH_LABEL=$want" "${build_args[@]}" \
        -f "$dockerfile" -t "$tag" "$context" 2> >(
            grep -vE '^(DEPRECATED: The legacy builder|  +BuildKit is currently disabled|  +environment-variable\.|$)' >&2
        ) >/dev/null
    log "$tag: built ($(docker image inspect -f '{{.Id}}' "$tag" | cut -c8-19))"
    # Drop the replaced image if nothing else uses it (containers keep it alive).
    if [ -n "$old_id" ] && [ "$old_id" != "$(docker image inspect -f '{{.Id}}' "$tag")" ] &&
        [ "$(docker image inspect -f '{{len .RepoTags}}' "$old_id" 2>/dev/null)" = 0 ]; then
        docker rmi "$old_id" >/dev/null 2>&1 || true
    fi
}

for suite in "${SUITES[@]}"; do
    ensure_base "$suite"
done

# node_images KIND: bluegreen/KIND:<suite> for every suite, from molecule/images/KIND.
node_images() {
    local dir=$ROOT/molecule/images/$1 suite
    local -a inputs
    mapfile -t inputs < <(find "$dir" -type f ! -name Dockerfile | LC_ALL=C sort)
    for suite in "${SUITES[@]}"; do
        build_image "bluegreen/$1:$suite" "$dir/Dockerfile" "$dir" \
            "debian:$suite-slim" "DEBIAN_SUITE=$suite" ${inputs[@]+"${inputs[@]}"}
    done
}

# The HAProxy nodes first: other work (fixture captures) waits on them.
if wanted haproxy-node; then node_images haproxy-node; fi
if wanted app; then
    build_image bluegreen/app:latest "$ROOT/molecule/images/app/Dockerfile" "$ROOT" \
        debian:bookworm-slim "" "$ROOT/tests/app/bluegreen_app.py" "$ROOT/.dockerignore"
fi
if wanted systemd-node; then node_images systemd-node; fi

docker images --format '{{.Repository}}:{{.Tag}}\t{{.ID}}\t{{.Size}}' |
    grep -E '^(debian:(bookworm|trixie)-slim|bluegreen/)' | sort >&2
