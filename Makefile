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

.PHONY: venv collection demo test test-unit test-integration lint sanity molecule images clean

$(BIN)/.installed: requirements/test.txt requirements/molecule.txt requirements/lint.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements/molecule.txt -r requirements/lint.txt
	touch $@

venv: $(BIN)/.installed

collection:
	@mkdir -p $(COLLECTIONS)/ansible_collections/bluegreen
	@ln -sfn ../../.. $(COLLECTIONS)/ansible_collections/bluegreen/haproxy

test-unit: venv collection
	$(BIN)/pytest -q tests/unit

test-integration: venv collection
	$(BIN)/pytest -q tests/integration

# ansible-lint (production profile, .ansible-lint) and the documentation linter of the
# Ansible docsite, on every module, plugin and role entry point.
lint: venv collection
	$(BIN)/ansible-lint
	$(BIN)/antsibull-docs lint-collection-docs --plugin-docs .

sanity: venv
	scripts/sanity.sh

molecule: venv collection images
	scripts/molecule.sh

images:
	scripts/build-images.sh

test: test-unit test-integration sanity molecule

demo: venv collection
	$(BIN)/python scripts/demo.py

clean:
	rm -rf $(VENV) $(COLLECTIONS) .tmp
