"""Holds debian/ (the Debian package) to the tree: one version, the dependencies the code
imports, the unit and the example config it ships (a rule-and-file test: it reads debian/,
pyproject.toml and what the code imports)."""

from __future__ import annotations

import ast
import io
import re
import sys
from pathlib import Path

from rpctl.cli.main import run
from rpctl.controller.ops import config

from tests.support.cli import captured

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())

# What the code imports beyond the standard library, and the Debian package that has it.
DEBIAN_PACKAGES = {
    "bcc": "python3-bpfcc",
    "rich": "python3-rich",
    "pyroute2": "python3-pyroute2",
    "prometheus_client": "python3-prometheus-client",
    "tomli": None,  # Python < 3.11 only: Debian 12's python3 (3.11) has tomllib
}
# The versions Debian 12 (bookworm) has: the code may need nothing newer.
BOOKWORM = {"python3-rich": "13.3.1", "python3-pyroute2": "0.7.2", "python3-prometheus-client": "0.16.0"}


def _changelog_version() -> str:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    m = re.match(r"rpctl \(([^)]+)\) \S+; urgency=\w+$", first)
    assert m, f"debian/changelog: first line {first!r} is not `rpctl (VERSION) DIST; urgency=...`"
    return m.group(1)


def _depends() -> dict[str, str]:
    """The rpctl package's Depends: package -> version constraint ("" for none)."""
    control = (DEBIAN / "control").read_text()
    binary = control.split("\nPackage: rpctl\n", 1)[1]
    field = re.search(r"^Depends:(.*?)(?=^\S)", binary, re.M | re.S).group(1)
    out = {}
    for item in (i.strip() for i in field.split(",")):
        m = re.fullmatch(r"([\w.+-]+)(?:\s*\((.*)\))?", item)
        if m:
            out[m.group(1)] = (m.group(2) or "").strip()
    return out


def _third_party_imports() -> set[str]:
    """Top-level modules the library and the command line import, anywhere in their code, beyond the stdlib."""
    found = set()
    for folder in ("controller", "cli", "bpf"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"rpctl"}


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", text))


def test_the_package_version_is_pyprojects():
    assert _changelog_version() == PYPROJECT["project"]["version"], (
        "debian/changelog's first entry and pyproject.toml's version differ: add a changelog entry "
        "(dch -v VERSION) when the version changes")


def test_rpctl_version_says_the_package_version():
    env = captured()
    env.stdout = io.StringIO()
    assert run(["--version"], env) == 0
    assert env.stdout.getvalue().strip() == f"rpctl {PYPROJECT['project']['version']}"


def test_every_library_the_code_imports_is_a_debian_dependency():
    imports = _third_party_imports()
    unknown = imports - set(DEBIAN_PACKAGES)
    assert not unknown, (f"the code imports {sorted(unknown)}: which Debian package has it? "
                         "(DEBIAN_PACKAGES here, Depends in debian/control)")
    depends = _depends()
    for module in imports:
        package = DEBIAN_PACKAGES[module]
        assert package is None or package in depends, f"{module}: {package} is not in debian/control's Depends"
    assert "bpftool" in depends and depends["python3"] == ">= 3.11"


def test_pyprojects_lowest_versions_are_debian_12s():
    """pyproject's lowest versions are what the package depends on, and Debian 12 has them."""
    depends = _depends()
    for spec in PYPROJECT["project"]["dependencies"]:
        m = re.match(r"([\w-]+)>=([\d.]+)", spec)
        assert m, f"pyproject dependency {spec!r} has no lowest version"
        name = m.group(1).replace("_", "-")
        package = f"python3-{name}"
        if name == "tomli":
            continue
        assert depends[package] == f">= {m.group(2)}", (package, depends[package], spec)
        assert _version_tuple(m.group(2)) <= _version_tuple(BOOKWORM[package]), (
            f"{spec}: Debian 12 has {package} {BOOKWORM[package]}; make the code work with it")


def test_the_service_is_the_contrib_unit_running_usr_bin_rpctl():
    unit = DEBIAN / "rpctl.service"
    assert unit.is_symlink() and unit.resolve() == (REPO / "contrib" / "systemd" / "rpctl.service").resolve()
    exec_start = re.search(r"^ExecStart=(.*)$", unit.read_text(), re.M).group(1)
    assert exec_start.split()[:2] == ["/usr/bin/rpctl", "serve"] and config.DEFAULT_PATH in exec_start.split()


def test_the_shipped_config_names_no_group_and_its_examples_are_valid():
    text = (REPO / "contrib" / "rpctl.toml").read_text()
    assert all(not line.strip() or line.lstrip().startswith("#") for line in text.splitlines())
    assert config.loads(text).groups == ()
    # Its commented examples, uncommented, are a valid file of two groups.
    toml = re.compile(r"# (\[\[group\]\]|\w+ = .*)$")
    examples = "\n".join(m.group(1) for m in map(toml.match, text.splitlines()) if m)
    names = [g.name for g in config.loads(examples).groups]
    assert names == ["web", "api"]


def test_the_install_files_name_what_the_build_makes():
    assert "contrib/rpctl.toml etc/rpctl" in (DEBIAN / "rpctl.install").read_text().splitlines()
    assert (DEBIAN / "rpctl.manpages").read_text().split() == ["debian/generated/rpctl.8",
                                                              "debian/generated/rpctl.toml.5"]
    rules = (DEBIAN / "rules").read_text()
    assert "rpctl.cli.manpage --out $(GENERATED)" in rules and "rpctl.cli.completion > $(GENERATED)/rpctl" in rules
