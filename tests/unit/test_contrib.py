"""contrib/: the Prometheus rules (promtool checks and unit-tests them) and the Grafana
dashboard (every expression names a metric rpctl exports or a shipped recording rule).

promtool comes with Debian's prometheus package (`./scripts/provision.sh --with-tests`).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from rpctl.cli.metrics_families import families

from tests.support.prometheus import RULES, dashboard_expressions

REPO = Path(__file__).resolve().parents[2]
RULE_TESTS = REPO / "contrib" / "prometheus" / "rpctl-rules.test.yml"

ALERTS = {"RpctlExporterDown", "RpctlNoActiveMember", "RpctlMemberGone", "RpctlUnmanagedListener",
          "RpctlShareOffTarget", "RpctlFlowTableEvictions", "RpctlMemberThrottled"}
SUFFIX = {"counter": "_total", "info": "_info"}  # what a family's samples add to its name


def promtool(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("promtool")
    if exe is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (./scripts/provision.sh --with-tests)",
                    pytrace=False)
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=120, cwd=RULES.parent, check=False)


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def exported_names() -> set[str]:
    """The sample names `rpctl metrics` serves, from its families (not a copied list)."""
    return {f.name + SUFFIX.get(f.type, "") for f in families([])}


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def test_promtool_checks_the_rules():
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass():
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_the_issue_names_is_there_and_unit_tested_firing_and_not():
    assert ALERTS <= {r["alert"] for r in rules() if "alert" in r}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [case for t in tests for case in t.get("alert_rule_test", [])]
    for alert in ALERTS:
        mine = [case for case in cases if case["alertname"] == alert]
        assert any(case["exp_alerts"] for case in mine), f"{alert}: no case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{alert}: no case where it does not fire"


def test_rules_name_only_exported_metrics_and_recorded_rules():
    known = exported_names() | recorded_names() | {"up"}
    for rule in rules():
        assert names_in(rule["expr"]) <= known, (rule, names_in(rule["expr"]) - known)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)")


def names_in(expr: str) -> set[str]:
    """The metric names an expression reads: rpctl's, recording rules' (with a colon) and `up`.
    A regex selector on __name__ stands for each name it spells out in full alternatives."""
    out = set()
    for m in re.finditer(r'__name__=~"([\w]+)\(([\w|]+)\)([\w]*)"', expr):
        out |= {m.group(1) + alt + m.group(3) for alt in m.group(2).split("|")}
    for name in _NAME.findall(_STRING.sub('""', expr)):
        if name.startswith("rpctl") or ":" in name or name == "up":
            out.add(name)
    return out


def test_the_dashboard_parses_and_reads_only_exported_metrics_and_recorded_rules():
    known = exported_names() | recorded_names() | {"up"}
    exprs = dashboard_expressions()
    assert len(exprs) >= 10
    for expr in exprs:
        named = names_in(expr)
        assert named, f"names no metric: {expr}"
        assert named <= known, f"{expr}: {named - known} is neither exported nor recorded"
    # Built on the recording rules: each of them is shown.
    shown = set().union(*(names_in(e) for e in exprs))
    assert recorded_names() <= shown, recorded_names() - shown


def test_names_in_finds_what_an_expression_reads():
    assert names_in('sum by (group) (rate(rpctl_member_selected_total{group=~"rpctl_x"}[1m])) / rpctl:a:b') == {
        "rpctl_member_selected_total", "rpctl:a:b"}
    assert names_in('rate({__name__=~"rpctl_member_(selected|pinned)_total"}[1m])') == {
        "rpctl_member_selected_total", "rpctl_member_pinned_total"}
    assert names_in("rpctl_member_nonexistent > 0") == {"rpctl_member_nonexistent"}
