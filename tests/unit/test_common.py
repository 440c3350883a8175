"""cli/common.py: NAME=VALUE parsing shared by `weights` and `pin --map`, drain progress, the config file's default."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rpctl.cli.common import drain_progress, parse_assignments
from rpctl.controller.contract.errors import InvalidInput

from tests.support import hostile


@pytest.mark.parametrize(
    "items, expected",
    [
        ([], {}),
        (["worker-1=3"], {"worker-1": 3}),
        (["worker-1=3", "worker-2=0", "w3=10000"], {"worker-1": 3, "worker-2": 0, "w3": 10000}),
        (["a=-1"], {"a": -1}),  # parses: the range is check_weight's job
        (["a= 7 "], {"a": 7}),
    ],
)
def test_parse_assignments_valid(items, expected):
    assert parse_assignments(items) == expected


@pytest.mark.parametrize(
    "items", [["a"], ["=3"], ["a=x"], ["a=1.5"], ["a="], ["a=1e3"], ["a=0x10"], ["a=1", "b=2", "a=3"]]
)
def test_parse_assignments_refuses(items):
    with pytest.raises(InvalidInput):
        parse_assignments(items)


@pytest.mark.parametrize("value", ["--3", "---7", "\u00b2", "1\u00b2"])
def test_parse_assignments_refuses_odd_digits(value):
    with pytest.raises(InvalidInput):
        parse_assignments([f"a={value}"])


def test_drain_progress_names_what_is_left():
    assert drain_progress(3, 2) == "3 queued, 2 in handshake on the port"
    assert drain_progress(0, None) == "0 queued"
    assert drain_progress(0, None, 1) == "0 queued, 1 live flow"
    assert drain_progress(5, None, 12) == "5 queued, 12 live flows"


def test_the_parser_names_the_default_file_without_loading_the_config_module():
    """Every command imports common: -c/--config's default costs no tomllib, no key parser."""
    import json
    import subprocess
    import sys

    code = ("import json, sys, rpctl.cli.main, rpctl.cli.common as c\n"
            "ops = sorted(m for m in sys.modules if m.startswith(('tomllib', 'rpctl.controller.ops')))\n"
            "print(json.dumps([c.DEFAULT_PATH, ops]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    path, loaded = json.loads(out)
    assert path == "/etc/rpctl/rpctl.toml"
    heavy = {"tomllib", "rpctl.controller.ops.config", "rpctl.controller.ops.config_keys",
             "rpctl.controller.ops.config_spec"}
    assert "rpctl.controller.ops.config_defaults" in loaded and not heavy & set(loaded), loaded


# Hostile arguments: NAME=WEIGHT as anyone may type them -----------------------------------------


@given(st.lists(hostile.text | st.tuples(hostile.text, st.integers() | st.just("9" * 5000)).map(
    lambda t: f"{t[0]}={t[1]}"), max_size=4))
@example(["a=" + "9" * 5000])  # past the digits int() converts
@example(["we\nb=1x"])  # a name with a newline
def test_any_assignments_are_weights_or_refused_in_one_line(items):
    try:
        out = parse_assignments(items)
    except InvalidInput as e:
        assert "\n" not in str(e)
        return
    assert all(isinstance(w, int) for w in out.values())
