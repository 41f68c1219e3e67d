"""The collection as its users get it, against real HAProxy on loopback.

- An AWX project made from a plain `git clone` (no `make`, no `.collections/`). AWX's project
  sync runs `ansible-galaxy collection install -r collections/requirements.yml` in the project
  directory, which installs the collection from the checkout itself (`type: dir`, `name: .`)
  into the sync's requirements_collections; each job gets a copy of that folder first on its
  collections path and runs `ansible-playbook playbooks/<name>.yml` from the project directory.
  Both generations of AWX are replayed: the current one (singular ANSIBLE_COLLECTIONS_PATH)
  and 24.6.1 and older (plural ANSIBLE_COLLECTIONS_PATHS, which ansible-core 2.19 ignores).
- ansible-runner on the same project, laid out as AWX lays out a job's private data directory.
- The built tarball: no development files in it; installed into a temporary path, its
  playbooks run by FQCN.

Every Ansible process here gets no ANSIBLE_* variable from the caller (`make` exports
ANSIBLE_COLLECTIONS_PATH=.collections), and the user's and the system's collection
directories must not hold this collection, so nothing but the route under test can supply it.
(HOME stays as it is: ansible-core's async_status finds its jobs under the passwd home.)
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import tarfile

import ansible_runner
import pytest

from lab import REPO, ansible_bin

GREEN = ["-e", "release_target=backend_green"]
# AWX's defaults for a job's collections path (awx/main/tasks/jobs.py).
AWX_DEFAULT_PATHS = ["~/.ansible/collections", "/usr/share/ansible/collections"]


def awx_collections_paths(root):
    """A job's collections path as AWX builds it: its requirements folder, the project's
    ansible.cfg collections_path as written there, then AWX's defaults."""
    config = configparser.ConfigParser()
    config.read(os.path.join(str(root), "project", "ansible.cfg"))
    paths = list(AWX_DEFAULT_PATHS)
    configured = config.get("defaults", "collections_path", fallback=None)
    if configured:
        paths = [configured] + paths
    return os.pathsep.join([os.path.join(str(root), "requirements_collections")] + paths)


def user_env(**extra):
    """The caller's environment without any ANSIBLE_* variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANSIBLE_")}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="false",
               PATH=os.path.dirname(ansible_bin("ansible-playbook")) + os.pathsep + env.get("PATH", ""))
    env.update(extra)
    return env


def job_env(root):
    """What an AWX job's ansible-playbook gets: both spellings AWX sets, same value."""
    paths = awx_collections_paths(root)
    return user_env(ANSIBLE_COLLECTIONS_PATH=paths, ANSIBLE_COLLECTIONS_PATHS=paths)


def run(command, cwd, env, timeout=600):
    completed = subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True,
                               timeout=timeout, check=False)
    return completed.returncode, completed.stdout + completed.stderr


def git_files(cwd):
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=str(cwd), check=True, capture_output=True).stdout.decode()
    return [path for path in listed.split("\0") if path]


def installed_haproxy(collections_dir):
    return os.path.join(str(collections_dir), "ansible_collections", "bluegreen", "haproxy")


def plain_clone(root):
    """root/project: a clone of the working tree as git would commit it (scripts/checkout.sh:
    changed, new and deleted files; nothing .gitignore ignores), so the test exercises the code
    under test; from a clean clone that is the clone of HEAD."""
    project = root / "project"
    subprocess.run([os.path.join(REPO, "scripts", "checkout.sh"), "--dest", str(project)], check=True,
                   stdout=subprocess.DEVNULL)
    return project


def awx_project_sync(root, variable):
    """AWX's project sync (awx/playbooks/project_update.yml): `ansible-galaxy collection install
    -r collections/requirements.yml` in the project directory, aimed at a fresh stage folder
    through `variable`; the job then gets a copy of that folder (symlinks kept) as
    root/requirements_collections. Returns the sync's output."""
    stage = root / "cache" / "stage"
    (stage / "requirements_collections").mkdir(parents=True)
    (stage / "tmp").mkdir()
    env = user_env(**{variable: str(stage / "requirements_collections"),
                      "ANSIBLE_ROLES_PATH": str(stage / "requirements_roles"),
                      "ANSIBLE_LOCAL_TEMP": str(stage / "tmp")})
    rc, output = run([ansible_bin("ansible-galaxy"), "collection", "install", "-r",
                      os.path.join(str(root / "project"), "collections", "requirements.yml")], root / "project", env)
    assert rc == 0, output
    shutil.copytree(stage / "requirements_collections", root / "requirements_collections", symlinks=True)
    return output


def no_installed_copy_elsewhere():
    for directory in ("~/.ansible/collections", "/usr/share/ansible/collections"):
        installed = installed_haproxy(os.path.expanduser(directory))
        assert not os.path.lexists(installed), (
            "%s would stand in for the route under test; remove it (ansible-lint run with an "
            "ANSIBLE_COLLECTIONS_PATH of its own installs the collection there)" % installed)


@pytest.fixture(scope="module")
def awx_job(tmp_path_factory):
    """A job's private data directory as the current AWX builds it: the project, a plain clone,
    in project/, and the collections its sync installed in requirements_collections/."""
    no_installed_copy_elsewhere()
    root = tmp_path_factory.mktemp("awx-job")
    project = plain_clone(root)
    # The clone carries no link or copy of the collection: only the sync can supply it.
    assert not os.path.lexists(project / "playbooks" / "collections")
    assert not os.path.lexists(project / ".collections")
    awx_project_sync(root, "ANSIBLE_COLLECTIONS_PATH")
    installed = installed_haproxy(root / "requirements_collections")
    with open(os.path.join(installed, "MANIFEST.json"), encoding="utf-8") as manifest:
        assert json.load(manifest)["collection_info"]["name"] == "haproxy"
    # What the sync installed is what the checkout holds (build_ignore applied, no link back).
    assert not os.path.islink(installed)
    with open(os.path.join(installed, "plugins", "modules", "haproxy_map.py"), encoding="utf-8") as copy, \
            open(os.path.join(REPO, "plugins", "modules", "haproxy_map.py"), encoding="utf-8") as source:
        assert copy.read() == source.read()
    return root


def test_awx_project_from_a_plain_clone_runs_the_playbooks(awx_job, fleet_factory):
    fleet = fleet_factory(nodes=1)
    project = awx_job / "project"
    env = job_env(awx_job)
    playbook = [ansible_bin("ansible-playbook"), "-i", fleet.inventory]

    rc, output = run(playbook + ["playbooks/status.yml"], project, env)
    assert rc == 0, output

    rc, output = run(playbook + ["playbooks/cutover.yml"] + GREEN, project, env)
    assert rc == 0, output
    assert fleet.map_values() == ["backend_green"]
    assert fleet.disk_values() == ["backend_green"]

    rc, output = run(playbook + ["playbooks/rollback.yml"], project, env)
    assert rc == 0, output
    assert fleet.map_values() == ["backend_blue"]
    assert fleet.answers() == ["version=blue"]

    rc, output = run(playbook + ["playbooks/persist.yml"], project, env)
    assert rc == 0, output
    assert fleet.disk_values() == ["backend_blue"]

    # provision.yml needs root and apt on a real node (Molecule runs it); here: it resolves.
    rc, output = run(playbook + ["--syntax-check", "playbooks/provision.yml"], project, env)
    assert rc == 0, output


def test_awx_24_project_sync_with_the_plural_variable(tmp_path, fleet_factory):
    """AWX 24.6.1 and older aim the sync with ANSIBLE_COLLECTIONS_PATHS, which ansible-core 2.19
    ignores: ansible-galaxy then installs into the first path of the project's ansible.cfg
    (./.collections, in the project); the job searches the same path, so the playbooks run."""
    fleet = fleet_factory(nodes=1)
    no_installed_copy_elsewhere()
    project = plain_clone(tmp_path)

    awx_project_sync(tmp_path, "ANSIBLE_COLLECTIONS_PATHS")

    assert (os.path.isfile(os.path.join(installed_haproxy(tmp_path / "requirements_collections"), "MANIFEST.json"))
            or os.path.isfile(os.path.join(installed_haproxy(project / ".collections"), "MANIFEST.json")))
    no_installed_copy_elsewhere()
    rc, output = run([ansible_bin("ansible-playbook"), "-i", fleet.inventory, "playbooks/status.yml"],
                     project, job_env(tmp_path))
    assert rc == 0, output
    assert fleet.map_values() == ["backend_blue"]


def test_ansible_runner_on_the_awx_project(awx_job, fleet_factory, monkeypatch):
    fleet = fleet_factory(nodes=1)
    # ansible-runner starts ansible-playbook with os.environ plus envvars: clear what make exports.
    for name in list(os.environ):
        if name.startswith("ANSIBLE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PATH", os.path.dirname(ansible_bin("ansible-playbook")) + os.pathsep + os.environ["PATH"])

    # private_data_dir/project is the project directory (and ansible-playbook's cwd), as in AWX.
    result = ansible_runner.run(
        private_data_dir=str(awx_job), playbook="playbooks/cutover.yml", inventory=fleet.inventory,
        extravars={"release_target": "backend_green"}, quiet=True,
        envvars={"ANSIBLE_COLLECTIONS_PATH": awx_collections_paths(awx_job),
                 "ANSIBLE_COLLECTIONS_PATHS": awx_collections_paths(awx_job)})

    assert result.status == "successful", result.stdout.read()
    assert fleet.map_values() == ["backend_green"]
    assert fleet.disk_values() == ["backend_green"]


# What a development checkout accumulates and the tarball must never carry.
LEFTOVERS = [".pytest_cache/v/cache/lastfailed", "tests/.pytest_cache/README.md", ".venv/bin/python",
             ".venv-matrix/2.17/bin/python", ".tmp/sanity-venv/x", "tests/output/junit.xml",
             "plugins/modules/__pycache__/haproxy_map.cpython-311.pyc", ".ansible/roles/x", ".cache/x",
             "bluegreen-haproxy-0.0.1.tar.gz", "changelogs/.plugin-cache.yaml"]
LEFTOVER_DIRS = {".pytest_cache", ".venv", ".venv-matrix", ".tmp", "__pycache__", ".collections", ".ansible",
                 ".cache", ".git"}
# The development tooling in git, which the tarball must not carry either (galaxy.yml build_ignore):
# make and its scripts, pinned tool versions, the checkout's own settings, CI, the AWX project's
# requirements, the example EE's build context, and the tests that need this repository's lab.
DEVELOPMENT_FILES = {"Makefile", "ansible.cfg", ".ansible-lint", ".gitignore", ".dockerignore",
                     "tests/lab.py", "tests/conftest.py", "changelogs/.plugin-cache.yaml"}
# examples/: the AWX examples configure a controller through awx.awx (the docs site sends users there).
DEVELOPMENT_DIRS = (".ci/", "scripts/", "requirements/", "collections/", "execution-environment/", "molecule/",
                    "examples/", "tests/app/", "tests/integration/", "tests/support/")


def is_leftover(name):
    return (any(part in LEFTOVER_DIRS for part in name.split("/"))
            or name.startswith(("tests/output", "playbooks/collections"))
            or name.endswith((".pyc", ".tar.gz", ".plugin-cache.yaml")))


def is_development(name):
    return name in DEVELOPMENT_FILES or name.startswith(DEVELOPMENT_DIRS)


@pytest.fixture(scope="module")
def built_tarball(awx_job, tmp_path_factory):
    """The tarball `ansible-galaxy collection build` makes from the project, after a developer's
    leftovers were added to it. Returns its path and its members (files only)."""
    build_tree = tmp_path_factory.mktemp("build") / "checkout"
    shutil.copytree(awx_job / "project", build_tree, symlinks=True)
    for leftover in LEFTOVERS:
        (build_tree / leftover).parent.mkdir(parents=True, exist_ok=True)
        (build_tree / leftover).write_text("leftover\n")
    os.makedirs(build_tree / ".collections" / "ansible_collections" / "bluegreen")
    os.symlink(os.path.join("..", "..", ".."), build_tree / ".collections" / "ansible_collections" / "bluegreen" / "haproxy")
    dist = build_tree.parent / "dist"

    rc, output = run([ansible_bin("ansible-galaxy"), "collection", "build", "--output-path", str(dist)],
                     build_tree, user_env())

    assert rc == 0, output
    (tarball,) = dist.glob("bluegreen-haproxy-*.tar.gz")
    with tarfile.open(tarball) as archive:
        assert not [member.name for member in archive.getmembers() if member.issym() or member.islnk()]
        files = [member.name for member in archive.getmembers() if member.isfile()]
    return tarball, files


def test_built_tarball_ships_the_collection_and_no_development_file(awx_job, built_tarball):
    _tarball, files = built_tarball

    assert [name for name in files if is_leftover(name)] == []
    assert [name for name in files if is_development(name)] == []
    # Everything else in git ships: the content, the docs, the changelog, the unit tests.
    in_git = git_files(cwd=awx_job / "project")
    missing = sorted(name for name in in_git if not is_development(name) and name not in files)
    assert missing == ["galaxy.yml"]  # MANIFEST.json carries it
    for required in ("MANIFEST.json", "FILES.json", "COPYING", "README.md", "meta/runtime.yml",
                     "changelogs/changelog.yaml", "CHANGELOG.md", "meta/execution-environment.yml",
                     "playbooks/cutover.yml", "roles/release/meta/argument_specs.yml",
                     "plugins/modules/haproxy_map.py", "tests/unit/plugins/modules/module_runner.py"):
        assert required in files, required


def test_built_tarball_installs_and_runs_by_fqcn(built_tarball, fleet_factory, tmp_path):
    tarball, _files = built_tarball
    installed = tmp_path / "installed"
    rc, output = run([ansible_bin("ansible-galaxy"), "collection", "install", "--offline", "-p", str(installed),
                      str(tarball)], tmp_path, user_env())
    assert rc == 0, output

    # From a directory with no ansible.cfg and no playbooks: only the installed copy can answer.
    fleet = fleet_factory(nodes=1)
    env = user_env(ANSIBLE_COLLECTIONS_PATH=str(installed))
    playbook = [ansible_bin("ansible-playbook"), "-i", fleet.inventory]
    rc, output = run(playbook + ["bluegreen.haproxy.status"], tmp_path, env)
    assert rc == 0, output
    rc, output = run(playbook + ["bluegreen.haproxy.cutover"] + GREEN, tmp_path, env)
    assert rc == 0, output
    assert fleet.map_values() == ["backend_green"]
    assert fleet.disk_values() == ["backend_green"]
