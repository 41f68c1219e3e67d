#!/usr/bin/env bash
# The docs site (make docs): antsibull-docs writes a page for every module and role and the
# collection's index (with docs/docsite/links.yml and the extra docs of
# docs/docsite/extra-docs.yml), then Sphinx builds the HTML with warnings as errors.
#
#   scripts/docs.sh              # the site in .tmp/docsite/build/html (index: .../index.html)
#   scripts/docs.sh --prepare    # only its venv (.tmp/docs-venv; `make test` does that early)
#
# Offline: the pip installs are the only network access. Sphinx's intersphinx inventories
# (docs.python.org, docs.ansible.com) are not fetched: the site links only to its own pages and
# to plain URLs, so a build here and in CI gives the same result with or without internet.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
venv="$repo/.tmp/docs-venv"
bin="$venv/bin"
if [ ! -x "$bin/sphinx-build" ] || ! cmp -s "$repo/requirements/docs.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  # pip's own output only when it fails (this machine's pip.conf names index paths it lacks).
  "$bin/pip" install -q --disable-pip-version-check -r "$repo/requirements/docs.txt" >"$venv/pip.log" 2>&1 ||
    { cat "$venv/pip.log"; exit 1; }
  cp "$repo/requirements/docs.txt" "$venv/requirements.txt"
fi
if [ "${1:-}" = --prepare ]; then exit 0; fi

# The collection as Ansible finds it: .collections/ansible_collections/bluegreen/haproxy -> repo.
export ANSIBLE_COLLECTIONS_PATH="$repo/.collections" ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
export PATH="$bin:$PATH"
site="$repo/.tmp/docsite"
rm -rf "$site"
# antsibull-docs refuses a destination that others may write to.
mkdir -p "$site"
chmod 700 "$site"
antsibull-docs sphinx-init --use-current --fail-on-error --dest-dir "$site" \
  --project bluegreen.haproxy --copyright "bluegreen.haproxy maintainers" \
  --title "bluegreen.haproxy" --no-add-antsibull-docs-version \
  bluegreen.haproxy >/dev/null

# The collection is not on Galaxy: its pages say how to install it from the built tarball (see
# the README's "Installing") and link the collection name to its own index page, not to a
# Galaxy page that does not exist. Plugin and role pages sit beside that index.
cat >"$site/antsibull-docs.cfg" <<'EOF'
breadcrumbs = true
indexes = true
use_html_blobs = false
add_antsibull_docs_version = false
collection_url = {
  * = "index.html"
}
collection_install = {
  * = "ansible-galaxy collection install {namespace}-{name}-<version>.tar.gz"
}
EOF
# The generated pages link a few pages of Ansible's own docs by label. Instead of fetching
# docs.ansible.com's inventory (and docs.python.org's, which nothing here uses), the build gets a
# local inventory of exactly those labels, pointing at the same pages; a page that starts to use
# another label fails the build (undefined label) until it is added here.
"$bin/python" - "$site/ansible_devel.inv" <<'PYTHON'
import sys
import zlib

labels = {  # label: (page under https://docs.ansible.com/projects/ansible/devel/, title)
    "common_return_values": ("reference_appendices/common_return_values.html", "Return Values"),
    "action_plugins": ("plugins/action.html", "Action plugins"),
    "ansible_configuration_settings": (
        "reference_appendices/config.html#ansible-configuration-settings", "Ansible Configuration Settings"),
}
lines = "".join(f"{label} std:label -1 {uri} {title}\n" for label, (uri, title) in sorted(labels.items()))
header = b"# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n"
header += b"# The remainder of this file is compressed using zlib.\n"
with open(sys.argv[1], "wb") as inventory:
    inventory.write(header + zlib.compress(lines.encode()))
PYTHON
cat >>"$site/conf.py" <<PYTHON

# scripts/docs.sh: offline build, Ansible's labels from a local inventory (see there).
intersphinx_mapping = {
    'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', '$site/ansible_devel.inv'),
}
PYTHON

cd "$site"
mkdir -p rst
chmod og-w rst
antsibull-docs --config-file antsibull-docs.cfg collection --cleanup everything --fail-on-error \
  --use-current --dest-dir rst bluegreen.haproxy
sphinx-build -M html rst build -c . -W --keep-going -q
echo "docs: $site/build/html/collections/bluegreen/haproxy/index.html"
