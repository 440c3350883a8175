"""Checks on the set-up files: scripts/, .ci/run, the Vagrantfile, the README and pyproject.toml.

No privileges needed: nothing here installs or runs the scripts, it only
parses them (bash -n, ruby -c) and reads them.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANTFILE = REPO / "Vagrantfile"
CI_RUN = REPO / ".ci" / "run"
README = REPO / "README.md"
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))

DEMO_CMD = "./scripts/demo.sh"
TEST_CMD = "./scripts/test.sh"

# Vagrant boxes whose Debian release ships a kernel with listener migration
# (>= 5.15), with that release's kernel version.
KNOWN_BOXES = {
    "debian/bookworm64": (6, 1),  # Debian 12
    "debian/trixie64": (6, 12),  # Debian 13
}


def _ruby_code(text: str) -> str:
    """Ruby source with full-line comments removed."""
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def _shell_commands(text: str) -> list[str]:
    """The non-blank, non-comment lines of a shell script (shebang included as a comment)."""
    out = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append(stripped)
    return out


# (a) ------------------------------------------------------------------------
def test_vagrantfile_is_valid_ruby():
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.fail("ruby is not installed: ./scripts/test.sh installs ruby (run the tests through it)")
    proc = subprocess.run(
        [ruby, "-c", str(VAGRANTFILE)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "Syntax OK" in proc.stdout, proc.stdout + proc.stderr


# (b) ------------------------------------------------------------------------
def test_vagrant_box_ships_a_kernel_with_listener_migration():
    code = _ruby_code(VAGRANTFILE.read_text())
    boxes = re.findall(r"""\.vm\.box\s*=\s*["']([^"']+)["']""", code)
    assert len(boxes) == 1, f"expected one config.vm.box, found {boxes}"
    box = boxes[0]
    assert box in KNOWN_BOXES, f"box {box!r} is not one known to ship a kernel >= 5.15: {sorted(KNOWN_BOXES)}"
    assert KNOWN_BOXES[box] >= (5, 15)


def test_vagrant_provisioner_runs_the_test_script_as_root():
    code = _ruby_code(VAGRANTFILE.read_text())
    # From `config.vm.provision "shell"` to the next provision/provider/end at
    # the block's indentation: the provisioner's arguments.
    m = re.search(r"""\.vm\.provision\s*\(?\s*["']shell["'](.*?)(?=\n\s*(?:config\.|end\b)|\Z)""", code, re.S)
    assert m, "no shell provisioner in the Vagrantfile"
    args = m.group(1)
    assert "scripts/test.sh" in args, f"the shell provisioner does not run scripts/test.sh: {args!r}"
    assert re.search(r"privileged:\s*true", args), "the shell provisioner must run as root (privileged: true)"
    assert re.search(r"""\.vm\.synced_folder\s+["']\.["']\s*,\s*["']/vagrant["']""", code), (
        "the repository must be synced to /vagrant"
    )


# (c) ------------------------------------------------------------------------
def test_ci_run_executes_the_readme_test_command_and_nothing_else():
    text = CI_RUN.read_text()
    assert text.startswith("#!/usr/bin/env bash\n"), "first line must be #!/usr/bin/env bash"
    commands = _shell_commands(text)
    assert "set -euo pipefail" in commands
    runs = [c for c in commands if TEST_CMD in c]
    assert runs, f".ci/run does not run {TEST_CMD}"
    assert len(runs) == 1, f".ci/run runs {TEST_CMD} more than once: {runs}"
    words = shlex.split(runs[0])
    if words[0] == "exec":
        words = words[1:]
    assert words == [TEST_CMD], f"expected exactly `exec {TEST_CMD}`, got {runs[0]!r}"
    assert commands[-1] == runs[0], "the test command must be the last thing .ci/run does"
    # Everything else only prepares the shell: nothing else may run tests.
    for c in commands:
        if c == runs[0]:
            continue
        assert re.match(r"(set\s|cd\s|cd$)", c), f".ci/run does more than cd and run {TEST_CMD}: {c!r}"
        assert not re.search(r"pytest|unittest|tox|nox|make|test\.sh", c), c


# (d) ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "script", SCRIPTS + [CI_RUN], ids=lambda p: str(p.relative_to(REPO))
)
def test_script_parses_and_is_executable(script: Path):
    assert SCRIPTS, "no scripts in scripts/"
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert os.access(script, os.X_OK), f"{script.relative_to(REPO)} is not executable (chmod +x)"


def test_the_readme_commands_exist():
    for cmd in (DEMO_CMD, TEST_CMD):
        assert (REPO / cmd).is_file(), cmd


# (e) ------------------------------------------------------------------------
def test_readme_gives_the_two_commands():
    assert README.is_file(), "README.md is missing"
    text = README.read_text()
    for cmd in (DEMO_CMD, TEST_CMD):
        assert cmd in text, f"README.md does not give {cmd}"


def test_pyproject_lists_every_package_of_the_tree():
    """A package folder left out of pyproject's list would be missing from the wheel (the
    editable install of the tests would not show it)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python < 3.11
        import tomli as tomllib
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {folder: name for name, folder in setuptools["package-dir"].items()}
    found = set()
    for folder, name in folders.items():
        for init in sorted((REPO / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(REPO / folder).parts
            found.add(".".join([name, *parts]))
    assert found == set(setuptools["packages"]), (sorted(found - set(setuptools["packages"])),
                                                  sorted(set(setuptools["packages"]) - found))
