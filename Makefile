# Entry points. `make demo` runs the main job, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Ansible finds the collection through this tree: .collections/ansible_collections/bluegreen/haproxy -> repo root.
COLLECTIONS := $(CURDIR)/.collections
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH := false
export PATH := $(CURDIR)/$(BIN):$(PATH)
# ansible-core versions proven besides requirements/test.txt's (meta/runtime.yml requires_ansible).
MATRIX ?= 2.17.14 2.18.19 2.20.10 2.21.5
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
DIST := .tmp/dist

.PHONY: venv collection demo test test-unit test-integration lint changelog-lint changelog \
	build ee release-check importer-check matrix sanity molecule images system-demo system-test clean \
	test-venvs docs

$(BIN)/.installed: requirements/test.txt requirements/molecule.txt requirements/lint.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/molecule.txt -r requirements/lint.txt
	touch $@

venv: $(BIN)/.installed

collection:
	@mkdir -p $(COLLECTIONS)/ansible_collections/bluegreen
	@ln -sfn ../../.. $(COLLECTIONS)/ansible_collections/bluegreen/haproxy

# ansible-test units as a contributor runs it: every unit test, in a plain clone under
# ansible_collections/bluegreen/haproxy with no ANSIBLE_* variable (scripts/checkout.sh).
# (`pytest tests/unit` from the repo root runs the same tests faster while developing.)
test-unit: venv
	scripts/checkout.sh units -- ansible-test units --color no \
		--python $$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Three workers, one test file each at a time: the tests spend most of their time waiting for
# HAProxy's health checks, watch windows and reloads, not on the CPU, and every test has its own
# HAProxy, apps and ports (each worker its own block of ports below the ephemeral range: tests/lab.py).
test-integration: venv collection
	$(BIN)/pytest -q -rs -n 3 --dist loadfile tests/integration

# ansible-lint (production profile, .ansible-lint) as a contributor runs it: in a plain clone
# with no ANSIBLE_* variable (scripts/checkout.sh; it installs the collection and
# collections/requirements.yml into the clone's .ansible/), then the docsite's documentation
# linter on every module, plugin and role entry point, and the changelog fragments.
lint: venv collection changelog-lint
	scripts/checkout.sh lint -- ansible-lint
	$(BIN)/antsibull-docs lint-collection-docs --plugin-docs .

changelog-lint: venv
	$(BIN)/antsibull-changelog lint
	$(BIN)/antsibull-changelog lint-changelog-yaml --no-semantic-versioning changelogs/changelog.yaml

# Writes the release of galaxy.yml's version from changelogs/fragments/ into
# changelogs/changelog.yaml and CHANGELOG.md (run when cutting a release).
changelog: venv collection
	$(BIN)/antsibull-changelog release --version $(VERSION) --update-existing

# The collection tarball, as Galaxy and Automation Hub get it.
build: venv
	@mkdir -p $(DIST)
	$(BIN)/ansible-galaxy collection build --force --output-path $(DIST) .

# The example execution environment: `ansible-builder create` and its galaxy step (scripts/ee.sh).
ee: venv
	scripts/ee.sh

# galaxy-importer with Automation Hub's settings on the built tarball (scripts/release-check.sh).
# It fails while galaxy.yml has no repository (Galaxy and Hub require one); importer-check,
# which `make test` runs, checks everything else.
release-check: build
	scripts/release-check.sh $(DIST)/bluegreen-haproxy-$(VERSION).tar.gz

importer-check: build
	scripts/release-check.sh --waive-repository $(DIST)/bluegreen-haproxy-$(VERSION).tar.gz

# Unit tests and a cutover and rollback from a plain clone on every other claimed ansible-core.
matrix: collection
	scripts/version-matrix.sh $(MATRIX)

sanity: venv
	scripts/sanity.sh

# The docs site (scripts/docs.sh): antsibull-docs writes the pages, Sphinx builds them with
# warnings as errors, in its own venv (.tmp/docs-venv); the HTML is in .tmp/docsite/build/html/.
docs: collection
	scripts/docs.sh

molecule: venv collection images
	scripts/molecule.sh

images:
	scripts/build-images.sh

# Every test: system-test, venv, test-unit beside lint, test-integration, then sanity, ee,
# importer-check, matrix and docs side by side, then molecule. Images and the venvs of sanity,
# importer-check and matrix (test-venvs) build in the background from the start: they wait on
# the network and the disk while the foreground uses the CPU (scripts/test.sh; logs in .tmp/ci/,
# a summary of every stage's time at the end; CI_SERIAL=1 for no overlap, CI_MOLECULE_BESIDE=1
# to run Molecule in the background too, on machines with spare cores). Fails when any stage fails.
test:
	MAKE="$(MAKE)" scripts/test.sh

# The venvs sanity, importer-check, matrix and docs use (pip installs only; each script makes its own
# when missing or stale, so this only moves the wait earlier).
test-venvs:
	scripts/sanity.sh --prepare
	scripts/release-check.sh --prepare
	scripts/docs.sh --prepare
	scripts/version-matrix.sh --prepare $(MATRIX)

# What the demo and the tests need from the system: installed as root, named in one line otherwise.
system-demo:
	@scripts/system-packages.sh haproxy python3-venv

system-test:
	@scripts/system-packages.sh haproxy python3-venv git openssl shellcheck docker.io debootstrap socat curl

# The demo's own venv: ansible-core and the one collection its containers use (community.docker),
# 73 MB; not .venv's lint, docs and Molecule tools (704 MB). scripts/demo-venv.sh.
DEMO_VENV := .venv-demo
$(DEMO_VENV)/.installed: requirements/demo.txt requirements/molecule.txt scripts/demo-venv.sh
	PYTHON=$(PYTHON) scripts/demo-venv.sh $(DEMO_VENV)

demo: system-demo $(DEMO_VENV)/.installed collection
	$(DEMO_VENV)/bin/python scripts/demo.py

clean:
	rm -rf $(VENV) .venv-matrix .venv-demo $(COLLECTIONS) .tmp

# `make bench`: the collection beside the shell runbook, on loopback, <= 10 minutes; writes docs/benchmarks.md.
.PHONY: bench
bench: venv collection
	$(BIN)/python scripts/bench.py
