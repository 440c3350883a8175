"""The names of the test files: a unit test is test_<module>.py after the module it reads, a
kernel test is named by what a user does, and no name is in both suites.

A unit test's <module> is a module of controller/, cli/ or bench/ by its own name
(test_diag.py reads controller/kernel/diag.py) or by its package's and its own
(test_bench_common.py reads bench/common.py, test_demo_worker.py cli/demo/worker.py).
A few unit tests hold a rule or a file instead, and say so in their docstring:
RULE_AND_FILE_TESTS.  A kernel test named after a module would read as that module's
unit test, so none is.
"""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("controller", "cli", "bench")

RULE_AND_FILE_TESTS = {
    "test_import_graph",    # the import rule of the packages
    "test_controller_api",  # rpctl.controller's public API
    "test_counter_names",   # one name per counter, from C to the screen
    "test_contrib",         # contrib/: the Prometheus rules and the Grafana dashboard
    "test_setup_files",     # scripts/, .ci/run, the Vagrantfile, the README
    "test_systemd_unit",    # contrib/systemd/rpctl.service
    "test_debian_package",  # debian/: the version, the dependencies, the unit and config it ships
    "test_test_names",      # this rule
}


def module_names(repo: Path = REPO) -> set[str]:
    """What a unit test may be named after: every module of SOURCES by its name, and by
    its package's name and its own (bench/common.py: "common" and "bench_common")."""
    names = set()
    for source in SOURCES:
        for path in (repo / source).rglob("*.py"):
            if path.stem not in ("__init__", "__main__"):
                names |= {path.stem, f"{path.parent.name}_{path.stem}"}
    return names


def suite_files(suite: str, repo: Path = REPO) -> set[str]:
    """The test files of tests/<suite>, by name without .py."""
    return {path.stem for path in (repo / "tests" / suite).glob("test_*.py")}


def unit_tests_named_after_no_module(unit: set[str], modules: set[str], rule_and_file: set[str]) -> list[str]:
    return sorted(t for t in unit - rule_and_file if t.removeprefix("test_") not in modules)


def kernel_tests_named_after_a_module(kernel: set[str], modules: set[str]) -> list[str]:
    return sorted(t for t in kernel if t.removeprefix("test_") in modules)


def names_in_both(unit: set[str], kernel: set[str]) -> list[str]:
    return sorted(unit & kernel)


def test_every_unit_test_is_named_after_a_module_it_reads():
    bad = unit_tests_named_after_no_module(suite_files("unit"), module_names(), RULE_AND_FILE_TESTS)
    assert not bad, f"tests/unit: no module of {', '.join(SOURCES)} is named {bad} (test_<module>.py)"


def test_every_rule_or_file_test_exists():
    missing = sorted(RULE_AND_FILE_TESTS - suite_files("unit"))
    assert not missing, f"RULE_AND_FILE_TESTS names tests that are gone: {missing}"


def test_no_kernel_test_is_named_after_a_module():
    bad = kernel_tests_named_after_a_module(suite_files("kernel"), module_names())
    assert not bad, f"tests/kernel: {bad} read as unit tests' names; name them by what a user does"


def test_no_name_is_in_both_suites():
    both = names_in_both(suite_files("unit"), suite_files("kernel"))
    assert not both, f"in tests/unit and tests/kernel alike: {both}"


def test_the_checks_would_catch_what_they_look_for(tmp_path):
    """Made-up trees and names, each check failing on them."""
    (tmp_path / "controller" / "kernel").mkdir(parents=True)
    (tmp_path / "controller" / "kernel" / "diag.py").write_text("")
    (tmp_path / "controller" / "kernel" / "__init__.py").write_text("")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "common.py").write_text("")
    (tmp_path / "cli").mkdir()
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    for name in ("test_diag.py", "test_diag_logic.py", "test_bench_common.py", "test_a_rule.py", "helpers.py"):
        (tmp_path / "tests" / "unit" / name).write_text("")
    modules = module_names(tmp_path)
    assert modules == {"diag", "kernel_diag", "common", "bench_common"}
    unit = suite_files("unit", tmp_path)
    assert unit == {"test_diag", "test_diag_logic", "test_bench_common", "test_a_rule"}
    assert unit_tests_named_after_no_module(unit, modules, {"test_a_rule"}) == ["test_diag_logic"]
    assert unit_tests_named_after_no_module(unit, modules, set()) == ["test_a_rule", "test_diag_logic"]
    kernel = {"test_diag", "test_restart_without_loss", "test_common"}
    assert kernel_tests_named_after_a_module(kernel, modules) == ["test_common", "test_diag"]
    assert names_in_both(unit, kernel) == ["test_diag"]
    assert names_in_both(unit, {"test_restart_without_loss"}) == []
