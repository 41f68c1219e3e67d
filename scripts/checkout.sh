#!/usr/bin/env bash
# A plain checkout of this repository, as a contributor or CI gets it, for the ecosystem's own
# tools to run in exactly as their users run them (make lint, make sanity, make test-unit):
#
#   scripts/checkout.sh NAME         # prints .tmp/checkouts/NAME/ansible_collections/bluegreen/haproxy
#   scripts/checkout.sh --dest DIR   # the same checkout in DIR (the tests' AWX projects)
#   scripts/checkout.sh NAME -- COMMAND [ARG...]
#                                    # runs COMMAND in the checkout, with no ANSIBLE_* variable
#                                    # from the caller (`make` exports ANSIBLE_COLLECTIONS_PATH):
#                                    # a plain clone in a plain environment
#
# It is a `git clone` (sharing this repository's objects, so it takes a second) placed where
# ansible-test wants a collection: under ansible_collections/<namespace>/<name>. It holds the
# working tree as `git add -A && git commit` would record it (changed, new and deleted files,
# nothing .gitignore ignores), so uncommitted work is checked too; the snapshot commit is made
# with a temporary index, so this repository's index, stash and refs are left as they are.
# Nothing is copied or filtered around the tools: what they see is what git ships.
# The previous checkout of the same NAME is replaced; --dest wants a DIR that does not exist.
set -euo pipefail
usage="usage: scripts/checkout.sh NAME | --dest DIR [-- COMMAND [ARG...]]"
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ "${1:-}" = --dest ]; then
  dest=${2:?$usage}
  base=$dest
  shift 2
  if [ -e "$dest" ]; then echo "checkout.sh: $dest exists; give a new directory" >&2; exit 2; fi
else
  name=${1:?$usage}
  shift
  namespace=$(sed -n 's/^namespace: *//p' "$repo/galaxy.yml")
  collection=$(sed -n 's/^name: *//p' "$repo/galaxy.yml")
  base="$repo/.tmp/checkouts/$name"
  dest="$base/ansible_collections/$namespace/$collection"
fi

index=$(mktemp)
trap 'rm -f "$index"' EXIT
rm -f "$index"  # git writes a new index file; an empty existing one would be refused
commit=$(
  cd "$repo"
  export GIT_INDEX_FILE="$index"
  git read-tree HEAD
  git add -A
  tree=$(git write-tree)
  if [ "$tree" = "$(git rev-parse 'HEAD^{tree}')" ]; then
    git rev-parse HEAD
  else
    # A fixed identity: CI machines and fresh containers often have none configured.
    GIT_AUTHOR_NAME=checkout.sh GIT_AUTHOR_EMAIL=checkout.sh@localhost \
      GIT_COMMITTER_NAME=checkout.sh GIT_COMMITTER_EMAIL=checkout.sh@localhost \
      git commit-tree "$tree" -p HEAD -m "scripts/checkout.sh: the working tree of $(git rev-parse --short HEAD)"
  fi
)
rm -f "$index"

rm -rf "$base"
mkdir -p "$(dirname "$dest")"
# --shared: the clone reads this repository's objects (the snapshot commit is in no ref, so a
# plain clone would not carry it).
git clone -q --shared --no-checkout "$repo" "$dest"
git -C "$dest" -c advice.detachedHead=false checkout -q "$commit"
if [ "${1:-}" != -- ]; then
  echo "$dest"
  exit 0
fi
shift
cd "$dest"
while IFS= read -r variable; do unset "$variable"; done < <(compgen -e | grep '^ANSIBLE_' || true)
echo "checkout.sh: $* (in $dest)" >&2
exec "$@"
