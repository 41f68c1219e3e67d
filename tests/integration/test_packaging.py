"""The collection as its users get it, against real HAProxy on loopback.

- An AWX project made from a plain `git clone` (no `make`, no `.collections/`): AWX runs
  `ansible-playbook playbooks/<name>.yml` from the project directory with the project's
  ansible.cfg and its own ANSIBLE_COLLECTIONS_PATHS. The playbooks find the collection through
  playbooks/collections/ansible_collections/bluegreen/haproxy, a committed link back to the
  repository root (Ansible always searches `<playbook dir>/collections` first).
- ansible-runner on the same project, laid out as AWX lays out a job's private data directory.
- The built tarball: no development leftovers in it; installed into a temporary path, its
  playbooks run by FQCN.

Every Ansible process here gets no ANSIBLE_* variable from the caller (`make` exports
ANSIBLE_COLLECTIONS_PATH=.collections), and the user's and the system's collection
directories must not hold this collection, so nothing but the route under test can supply it.
(HOME stays as it is: ansible-core's async_status finds its jobs under the passwd home.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile

import ansible_runner
import pytest

from lab import REPO, ansible_bin

LINK = os.path.join("playbooks", "collections", "ansible_collections", "bluegreen", "haproxy")
GREEN = ["-e", "release_target=backend_green"]


def awx_collections_paths(root):
    """What AWX's job environment sets: its requirements folder, then the usual defaults."""
    return os.pathsep.join([os.path.join(str(root), "requirements_collections"), "~/.ansible/collections",
                            "/usr/share/ansible/collections", "/usr/share/automation-controller/collections"])


def user_env(**extra):
    """The caller's environment without any ANSIBLE_* variable."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ANSIBLE_")}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="false",
               PATH=os.path.dirname(ansible_bin("ansible-playbook")) + os.pathsep + env.get("PATH", ""))
    env.update(extra)
    return env


def run(command, cwd, env, timeout=600):
    completed = subprocess.run(command, cwd=str(cwd), env=env, capture_output=True, text=True,
                               timeout=timeout, check=False)
    return completed.returncode, completed.stdout + completed.stderr


def git_files(*options):
    listed = subprocess.run(["git", "ls-files", "-z"] + list(options), cwd=REPO, check=True,
                            capture_output=True).stdout.decode()
    return [path for path in listed.split("\0") if path]


@pytest.fixture(scope="module")
def awx_job(tmp_path_factory):
    """A job's private data directory as AWX builds it: the project is a plain clone in project/.

    The clone is then brought to the working tree (changed and new files, as git would commit
    them), so the test exercises the code under test; from a clean clone this changes nothing.
    """
    for directory in ("~/.ansible/collections", "/usr/share/ansible/collections"):
        installed = os.path.join(os.path.expanduser(directory), "ansible_collections", "bluegreen", "haproxy")
        assert not os.path.lexists(installed), (
            "%s would stand in for the route under test; remove it (ansible-lint without "
            "offline: true installs the collection there)" % installed)
    root = tmp_path_factory.mktemp("awx-job")
    project = root / "project"
    subprocess.run(["git", "clone", "-q", REPO, str(project)], check=True)
    # The link must come from git itself: AWX and every user get nothing else.
    assert os.readlink(project / LINK) == os.path.join("..", "..", "..", ".."), "the AWX link is not committed"
    for path in git_files("--cached", "--others", "--exclude-standard"):
        source = os.path.join(REPO, path)
        if os.path.lexists(source):
            target = project / path
            target.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(target):
                os.unlink(target)
            shutil.copy2(source, target, follow_symlinks=False)
    for path in git_files("--deleted"):
        if os.path.lexists(project / path):
            os.unlink(project / path)
    (root / "requirements_collections").mkdir()
    return root


def test_awx_project_from_a_plain_clone_runs_the_playbooks(awx_job, fleet_factory):
    fleet = fleet_factory(nodes=1)
    project = awx_job / "project"
    # AWX's variable (plural; ignored by ansible-core 2.19, honoured before): the project's
    # ansible.cfg points at .collections/, which a clone does not have.
    env = user_env(ANSIBLE_COLLECTIONS_PATHS=awx_collections_paths(awx_job))
    playbook = [ansible_bin("ansible-playbook"), "-i", fleet.inventory]
    assert not os.path.exists(project / ".collections")

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


def test_awx_project_with_a_foreign_collections_path(awx_job, fleet_factory):
    """Newer AWX sets ANSIBLE_COLLECTIONS_PATH, which overrides the project's ansible.cfg."""
    fleet = fleet_factory(nodes=1)
    foreign = awx_collections_paths(awx_job)
    env = user_env(ANSIBLE_COLLECTIONS_PATH=foreign, ANSIBLE_COLLECTIONS_PATHS=foreign)

    rc, output = run([ansible_bin("ansible-playbook"), "-i", fleet.inventory, "playbooks/status.yml"],
                     awx_job / "project", env)

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
        envvars={"ANSIBLE_COLLECTIONS_PATHS": awx_collections_paths(awx_job)})

    assert result.status == "successful", result.stdout.read()
    assert fleet.map_values() == ["backend_green"]
    assert fleet.disk_values() == ["backend_green"]


# What a development checkout accumulates and the tarball must never carry.
LEFTOVERS = [".pytest_cache/v/cache/lastfailed", "tests/.pytest_cache/README.md", ".venv/bin/python",
             ".venv-matrix/2.17/bin/python", ".tmp/sanity-venv/x", "tests/output/junit.xml",
             "plugins/modules/__pycache__/haproxy_map.cpython-311.pyc", ".ansible/roles/x", ".cache/x",
             "bluegreen-haproxy-0.0.1.tar.gz"]
LEFTOVER_DIRS = {".pytest_cache", ".venv", ".venv-matrix", ".tmp", "__pycache__", ".collections", ".ansible",
                 ".cache", ".git"}


def is_leftover(name):
    return (any(part in LEFTOVER_DIRS for part in name.split("/"))
            or name.startswith(("tests/output", "playbooks/collections"))
            or name.endswith((".pyc", ".tar.gz")))


def test_built_tarball_is_clean_installs_and_runs_by_fqcn(awx_job, fleet_factory, tmp_path):
    build_tree = tmp_path / "checkout"
    shutil.copytree(awx_job / "project", build_tree, symlinks=True)
    for leftover in LEFTOVERS:
        (build_tree / leftover).parent.mkdir(parents=True, exist_ok=True)
        (build_tree / leftover).write_text("leftover\n")
    os.makedirs(build_tree / ".collections" / "ansible_collections" / "bluegreen")
    os.symlink(os.path.join("..", "..", ".."), build_tree / ".collections" / "ansible_collections" / "bluegreen" / "haproxy")
    env = user_env()
    dist = tmp_path / "dist"

    rc, output = run([ansible_bin("ansible-galaxy"), "collection", "build", "--output-path", str(dist)], build_tree, env)

    assert rc == 0, output
    (tarball,) = dist.glob("bluegreen-haproxy-*.tar.gz")
    with tarfile.open(tarball) as archive:
        members = archive.getnames()
        assert not [member for member in archive.getmembers() if member.issym() or member.islnk()]
    shipped_leftovers = [name for name in members if is_leftover(name)]
    assert shipped_leftovers == []
    for required in ("MANIFEST.json", "FILES.json", "COPYING", "README.md", "meta/runtime.yml",
                     "changelogs/changelog.yaml", "CHANGELOG.md", "meta/execution-environment.yml",
                     "playbooks/cutover.yml", "roles/release/meta/argument_specs.yml",
                     "plugins/modules/haproxy_map.py"):
        assert required in members, required

    installed = tmp_path / "installed"
    rc, output = run([ansible_bin("ansible-galaxy"), "collection", "install", "--offline", "-p", str(installed),
                      str(tarball)], tmp_path, env)
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
