"""Supported = tested: what the collection claims is what CI runs, and the set-up files behave.

- The ansible-core range: meta/runtime.yml `requires_ansible`, the roles' `min_ansible_version`,
  the execution environment's pin and the README all state the range whose every minor version
  CI tests (requirements/test.txt's in `make test`, the Makefile's MATRIX in `make matrix`).
- The managed-node Python range: every module and module_util compiles on each Python of it; a
  cutover and rollback run with `ansible_python_interpreter` set to 3.9, 3.10 and 3.13 here (3.11
  and 3.12 run them elsewhere, see below).
- The execution environment: refused without the collection tarball (`scripts/ee.sh`, and the
  Containerfile's own first galaxy step); its base image is a fixed release.
- scripts/system-packages.sh leaves a machine's own /usr/sbin/policy-rc.d as it found it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess

import pytest
import yaml
from ansible.module_utils.compat.version import LooseVersion

from lab import REPO, ansible_bin, ansible_env

# The one statement of each range; every surface below must say the same.
REQUIRES_ANSIBLE = ">=2.17.0,<2.22.0"
TESTED_MINORS = ["2.17", "2.18", "2.19", "2.20", "2.21"]
# Managed nodes: ansible-core 2.20 and newer run modules on Python 3.9 or newer (2.17 on 3.7,
# 2.18 and 2.19 on 3.8); Debian 12's python3 is 3.11, Debian 13's 3.13 (Molecule runs both).
NODE_PYTHONS = ["3.9", "3.10", "3.11", "3.12", "3.13"]
README_ANSIBLE_LINE = "ansible-core 2.17, 2.18, 2.19, 2.20 and 2.21, each tested"
README_PYTHON_LINE = "managed nodes: Python 3.9 to 3.13, each tested"
GREEN = ["-e", "release_target=backend_green"]


def read(path):
    with open(os.path.join(REPO, path)) as handle:
        return handle.read()


def minor(version):
    return ".".join(version.split(".")[:2])


# ------------------------------------------------------------------ the ansible-core range

def test_every_claimed_ansible_core_minor_is_tested():
    runtime = yaml.safe_load(read("meta/runtime.yml"))
    assert runtime["requires_ansible"] == REQUIRES_ANSIBLE

    main = re.search(r"^ansible-core==(\S+)$", read("requirements/test.txt"), re.M).group(1)
    matrix = re.search(r"^MATRIX \?= (.+)$", read("Makefile"), re.M).group(1).split()
    tested = sorted({minor(version.split("@")[0]) for version in [main] + matrix}, key=LooseVersion)
    assert tested == TESTED_MINORS

    # The closed range's minors are exactly the tested ones: 2.17.0 up to, not including, 2.22.0.
    lower, upper = re.fullmatch(r">=(\d+\.\d+)\.0,<(\d+\.\d+)\.0", REQUIRES_ANSIBLE).groups()
    first, last = int(lower.split(".")[1]), int(upper.split(".")[1])
    assert ["2.%d" % number for number in range(first, last)] == TESTED_MINORS


def test_roles_ee_and_readme_state_the_same_range():
    for meta in sorted(glob.glob(os.path.join(REPO, "roles", "*", "meta", "main.yml"))):
        with open(meta) as handle:
            info = yaml.safe_load(handle)["galaxy_info"]
        assert info["min_ansible_version"] == TESTED_MINORS[0], meta

    definition = yaml.safe_load(read("execution-environment/execution-environment.yml"))
    assert definition["dependencies"]["ansible_core"]["package_pip"] == "ansible-core>=2.17,<2.22"
    # ansible-core 2.20 and newer need Python 3.12 on the controller: the EE's interpreter too.
    assert definition["dependencies"]["python_interpreter"]["python_path"] == "/usr/bin/python3.12"

    readme = " ".join(read("README.md").split())
    assert README_ANSIBLE_LINE in readme
    assert README_PYTHON_LINE in readme
    for stale in ("2.17, 2.18 and 2.19, each tested", "2.17, 2.18 or 2.19", "2.17 to 2.19"):
        assert stale not in readme


def test_roles_claim_only_the_platforms_molecule_tests():
    # Molecule's nodes are bluegreen/{haproxy,systemd}-node:<suite>, one run per suite.
    for path in glob.glob(os.path.join(REPO, "molecule", "*", "molecule.yml")):
        with open(path) as handle:
            images = [platform["image"] for platform in yaml.safe_load(handle)["platforms"]]
        nodes = [image for image in images if "-node:" in image]
        assert nodes and all(image.endswith(":${HAPROXY_IMAGE_TAG:-bookworm}") for image in nodes), (path, images)
    suites = re.search(r'IMAGE_TAGS:-([a-z ]+)\}', read("scripts/molecule.sh")).group(1).split()
    assert suites == ["bookworm", "trixie"]
    for meta in sorted(glob.glob(os.path.join(REPO, "roles", "*", "meta", "main.yml"))):
        with open(meta) as handle:
            platforms = yaml.safe_load(handle)["galaxy_info"]["platforms"]
        assert platforms == [{"name": "Debian", "versions": suites}], meta


# ------------------------------------------------------------------ managed-node Pythons

def node_python(version):
    """An interpreter of `version` for the managed node: Debian's python3 when it is that version
    (what a Debian 12 node runs), else pyenv's."""
    system = "/usr/bin/python3"
    pyenv = os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (version, version))
    candidates = [system] + sorted(glob.glob(pyenv))
    for candidate in candidates:
        if os.path.exists(candidate):
            found = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                   capture_output=True, text=True, check=False).stdout.strip()
            if found == version:
                return candidate
    message = "no Python %s here to run the modules with (pyenv install %s)" % (version, version)
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.mark.parametrize("version", NODE_PYTHONS)
def test_every_module_file_compiles_on_the_node_python(version, tmp_path):
    python = node_python(version)
    files = sorted(glob.glob(os.path.join(REPO, "plugins", "modules", "*.py"))
                   + glob.glob(os.path.join(REPO, "plugins", "module_utils", "**", "*.py"), recursive=True))
    script = ("import sys\nfor path in sys.argv[1:]:\n"
              "    compile(open(path, encoding='utf-8').read(), path, 'exec', dont_inherit=True)\n")
    completed = subprocess.run([python, "-c", script] + files, capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


# The rest of the range runs a cutover elsewhere: 3.11 in every integration test (the inventory's
# interpreter is the controller's, requirements/test.txt's venv) and on Debian 12 nodes in
# Molecule, 3.12 in `make matrix` (ansible-core 2.20 and 2.21 venvs), 3.13 on Debian 13 nodes in
# Molecule and here.
@pytest.mark.parametrize("version", ["3.9", "3.10", "3.13"])
def test_cutover_and_rollback_with_the_node_python(version, fleet_factory, tmp_path):
    python = node_python(version)
    fleet = fleet_factory(nodes=1)
    # The interpreter Ansible is told to use: a wrapper that counts the module runs, then runs
    # that Python, so the test knows the modules ran on it and not on the controller's.
    runs = tmp_path / "module-runs.log"
    wrapper = tmp_path / "node-python"
    wrapper.write_text('#!/bin/sh\necho run >> "%s"\nexec "%s" "$@"\n' % (runs, python))
    wrapper.chmod(0o755)
    command = [ansible_bin("ansible-playbook"), "-i", fleet.inventory,
               "-e", "ansible_python_interpreter=%s" % wrapper]

    def playbook(name, *extra):
        completed = subprocess.run(command + list(extra) + [os.path.join("playbooks", name)], cwd=REPO,
                                   env=ansible_env(), capture_output=True, text=True, timeout=600, check=False)
        assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-2000:]

    playbook("cutover.yml", *GREEN)
    assert fleet.map_values() == ["backend_green"]
    assert fleet.disk_values() == ["backend_green"]
    playbook("rollback.yml")
    assert fleet.map_values() == ["backend_blue"]
    assert fleet.answers() == ["version=blue"]
    # A fleet of one node: each run is one module run (release_step, step single).
    assert runs.read_text().count("run") == 2, "the modules did not run through %s" % wrapper


# ------------------------------------------------------------------ the execution environment

def run_ee(tmp_path, *args):
    env = dict(os.environ, EE_WORK=str(tmp_path / "ee"))
    completed = subprocess.run([os.path.join(REPO, "scripts", "ee.sh")] + list(args), cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=300, check=False)
    return completed.returncode, completed.stdout + completed.stderr


def test_ee_without_the_collection_tarball_is_refused(tmp_path):
    definition = tmp_path / "definition"
    shutil.copytree(os.path.join(REPO, "execution-environment"), definition,
                    ignore=shutil.ignore_patterns("*.tar.gz"))

    rc, output = run_ee(tmp_path, "--definition", str(definition))

    assert rc != 0, output
    assert "ee: FAILED: the build context has no collection" in output
    assert "No matches for 'bluegreen-haproxy.tar.gz'" in output  # ansible-builder's warning, named
    assert "copy the collection tarball to %s/bluegreen-haproxy.tar.gz" % definition in output
    assert "Complete!" not in output


def test_ee_with_the_collection_writes_a_context_that_holds_it(tmp_path):
    definition_dir = os.path.join(REPO, "execution-environment")
    before = sorted(os.listdir(definition_dir))

    rc, output = run_ee(tmp_path)

    assert rc == 0, output
    context = tmp_path / "ee" / "context"
    assert (context / "_build" / "collections" / "bluegreen-haproxy.tar.gz").stat().st_size > 0
    installed = tmp_path / "ee" / "collections" / "ansible_collections" / "bluegreen" / "haproxy"
    assert (installed / "MANIFEST.json").exists()
    # The definition in the repository is left as it is (no tarball copied into it).
    assert sorted(os.listdir(definition_dir)) == before


def guard_step(containerfile):
    """The galaxy stage's check (prepend_galaxy), as a shell command on the context's _build/."""
    lines = containerfile.read_text().splitlines()
    galaxy = lines.index("FROM base AS galaxy")
    copy = next(i for i in range(galaxy, len(lines)) if lines[i].startswith("COPY _build/ /tmp/ee-context/"))
    check = lines[copy + 1]
    assert check.startswith("RUN test -f /tmp/ee-context/collections/bluegreen-haproxy.tar.gz")
    # Before anything installs from the context.
    assert copy < lines.index("RUN /output/scripts/check_galaxy") < lines.index("COPY _build /build")
    return check[len("RUN "):]


def test_the_image_build_stops_at_its_first_galaxy_step_without_the_collection(tmp_path):
    """`ansible-builder create` only warns: the Containerfile's own check fails the build."""
    definition = tmp_path / "definition"
    shutil.copytree(os.path.join(REPO, "execution-environment"), definition,
                    ignore=shutil.ignore_patterns("*.tar.gz"))
    builder = os.path.join(os.path.dirname(ansible_bin("ansible-galaxy")), "ansible-builder")
    for name, tarball in (("without", False), ("with", True)):
        if tarball:
            (definition / "bluegreen-haproxy.tar.gz").write_bytes(b"a tarball")
        context = tmp_path / name
        subprocess.run([builder, "create", "-f", str(definition / "execution-environment.yml"), "--context",
                        str(context), "--output-filename", "Containerfile"], check=True, capture_output=True)
        # The step as the build runs it, with the context's _build/ where the COPY puts it.
        step = guard_step(context / "Containerfile").replace("/tmp/ee-context", str(context / "_build"))
        completed = subprocess.run(["/bin/sh", "-c", step], capture_output=True, text=True, check=False)
        if tarball:
            assert completed.returncode == 0, completed.stderr
        else:
            assert completed.returncode != 0
            assert "the build context has no collections/bluegreen-haproxy.tar.gz" in completed.stderr
            assert "execution-environment/bluegreen-haproxy.tar.gz" in completed.stderr


def test_ee_base_image_is_a_fixed_release():
    definition = yaml.safe_load(read("execution-environment/execution-environment.yml"))
    image = definition["images"]["base_image"]["name"]
    name, tag = image.rsplit(":", 1)
    assert name == "docker.io/redhat/ubi9" and re.fullmatch(r"9\.\d+", tag), image


# ------------------------------------------------------------------ the set-up script

def run_system_packages(tmp_path, policy, apt_rc=0):
    """scripts/system-packages.sh as root with a package it must install, through a stand-in
    apt-get that records what policy-rc.d held while it ran."""
    if os.geteuid() != 0:
        pytest.skip("the script installs only as root")
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    seen = tmp_path / "seen-during-install"
    apt = fake_bin / "apt-get"
    apt.write_text('#!/bin/sh\n[ "$1" = install ] || exit 0\n'
                   'if [ -e "%s" ]; then cat "%s" > "%s"; else echo absent > "%s"; fi\nexit %d\n'
                   % (policy, policy, seen, seen, apt_rc))
    apt.chmod(0o755)
    env = dict(os.environ, POLICY_RC_D=str(policy), PATH="%s:%s" % (fake_bin, os.environ["PATH"]))
    completed = subprocess.run([os.path.join(REPO, "scripts", "system-packages.sh"), "bluegreen-absent-tool"],
                               env=env, capture_output=True, text=True, timeout=60, check=False)
    return completed, seen.read_text() if seen.exists() else None


POLICY_OURS = "#!/bin/sh\nexit 101\n"


def test_system_packages_puts_back_the_machines_own_policy_rc_d(tmp_path):
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\n# the machine's own\nexit 0\n")
    policy.chmod(0o750)
    before = policy.stat()

    completed, seen = run_system_packages(tmp_path, policy)

    assert completed.returncode == 0, completed.stderr
    assert seen == POLICY_OURS  # the install ran under the script's policy
    assert policy.read_text() == "#!/bin/sh\n# the machine's own\nexit 0\n"
    after = policy.stat()
    assert (stat.S_IMODE(after.st_mode), after.st_uid, after.st_ino) == (0o750, before.st_uid, before.st_ino)
    assert sorted(os.listdir(tmp_path)) == ["bin", "policy-rc.d", "seen-during-install"]


def test_system_packages_puts_back_the_machines_own_policy_rc_d_when_apt_fails(tmp_path):
    policy = tmp_path / "policy-rc.d"
    policy.write_text("mine\n")

    completed, seen = run_system_packages(tmp_path, policy, apt_rc=100)

    assert completed.returncode == 100
    assert seen == POLICY_OURS
    assert policy.read_text() == "mine\n"
    assert sorted(os.listdir(tmp_path)) == ["bin", "policy-rc.d", "seen-during-install"]


def test_system_packages_removes_only_the_policy_rc_d_it_wrote(tmp_path):
    policy = tmp_path / "policy-rc.d"

    completed, seen = run_system_packages(tmp_path, policy)

    assert completed.returncode == 0, completed.stderr
    assert seen == POLICY_OURS
    assert not policy.exists()
