#!/usr/bin/env bash
# Installs the Debian packages named on the command line that this machine lacks: as root
# through apt-get; otherwise it names, in one line, exactly what is missing and how to add it.
# Used by `make demo` (haproxy python3-venv) and .ci/run (everything `make test` needs).
set -euo pipefail
export PATH="/usr/sbin:/sbin:$PATH"

present() {
  case "$1" in
    haproxy) command -v haproxy >/dev/null ;;
    docker.io) command -v dockerd >/dev/null ;;
    debootstrap) command -v debootstrap >/dev/null ;;
    python3-venv) python3 -c 'import ensurepip, venv' >/dev/null 2>&1 ;;
    git) command -v git >/dev/null ;;
    *) command -v "$1" >/dev/null ;;
  esac
}

missing=()
for package in "$@"; do present "$package" || missing+=("$package"); done
[ "${#missing[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing: ${missing[*]}; install them (Debian: sudo apt-get install ${missing[*]}) or run this as root on Debian" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the haproxy package from starting the distribution's own service. The
# machine's own policy-rc.d, if it has one, is moved aside (same directory: owner, mode and
# content kept) and put back on exit, whatever apt-get did. POLICY_RC_D: another path (tests).
policy=${POLICY_RC_D:-/usr/sbin/policy-rc.d}
had_own=false moved=false own_policy=""
if [ -e "$policy" ] || [ -L "$policy" ]; then had_own=true; fi
restore_policy() {
  if $moved; then
    mv -f "$own_policy" "$policy"
  else
    [ -z "$own_policy" ] || rm -f "$own_policy"
    $had_own || rm -f "$policy"
  fi
}
trap restore_policy EXIT
trap 'exit 130' INT TERM
if $had_own; then
  own_policy=$(mktemp "$policy.own.XXXXXX")
  mv -f "$policy" "$own_policy"
  moved=true
fi
printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy"
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
