"""`rpctl serve` in-process: a file that does not load is one line and its exit code, before anything starts."""

from __future__ import annotations

import pytest

from tests.support.cli import assert_one_error_line, invoke

pytestmark = pytest.mark.usefixtures("cli_without_system")


def test_a_missing_file_is_not_found(tmp_path):
    status, out, err = invoke(["serve", "-c", str(tmp_path / "none.toml")])
    assert status == 3 and out == ""
    assert "none.toml" in assert_one_error_line(err)


def test_a_bad_file_names_its_line_and_exits_4(tmp_path):
    path = tmp_path / "rpctl.toml"
    path.write_text('[[group]]\nname = "web"\nlisten = "tcp:127.0.0.1:80"\nadopt = { comm = "nginx" }\nbogus = 1\n')
    status, out, err = invoke(["serve", "-c", str(path)])
    assert status == 4 and out == ""
    line = assert_one_error_line(err)
    assert f"{path}:5" in line and "bogus" in line, line


def test_a_bad_metrics_address_is_refused(tmp_path, monkeypatch):
    from rpctl.controller.ops import serve

    monkeypatch.setattr(serve.Serve, "run", lambda self: pytest.fail("serve ran"))
    status, _, err = invoke(["serve", "-c", str(tmp_path / "x.toml"), "--metrics", "localhost:9"])
    assert status == 4
    assert "serve: --metrics 'localhost:9'" in assert_one_error_line(err)
