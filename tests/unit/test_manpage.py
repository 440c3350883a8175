"""cli/manpage.py: rpctl(8) names every command and option, rpctl.toml(5) every key."""

from __future__ import annotations

import re

from rpctl.cli.main import build_parser
from rpctl.cli.manpage import roff_text, rpctl_page, rpctl_toml_page, write_pages
from rpctl.cli.parser_tree import read_parser
from rpctl.controller.ops.config_keys import GROUP_KEYS, REQUIRED


def _page() -> str:
    return rpctl_page(build_parser(), "9.8.7", "2026-12-06")


def test_every_command_has_a_section_with_its_help_and_examples():
    page = _page()
    _, commands = read_parser(build_parser())
    sections = re.findall(r'^\.SS "(.*)"$', page, re.M)
    assert sections == [roff_text(c.name) for c in commands]
    for cmd in commands:
        body = page.split(f'.SS "{roff_text(cmd.name)}"', 1)[1].split("\n.SS ", 1)[0]
        assert roff_text(cmd.help[1:]) in body, cmd.name
        for example in cmd.examples:
            assert roff_text(example) in body, (cmd.name, example)


def test_every_option_of_every_command_is_described():
    page = _page()
    top, commands = read_parser(build_parser())
    for cmd in (top, *commands):
        section = page if not cmd.name else page.split(f'.SS "{roff_text(cmd.name)}"', 1)[1].split("\n.SS ", 1)[0]
        for opt in cmd.options:
            for flag in opt.flags:
                assert f"\\fB{roff_text(flag)}\\fR" in section, (cmd.name, flag)
            if opt.help:
                assert roff_text(opt.help) in section, (cmd.name, opt.dest)


def test_the_page_says_its_version_and_date_and_the_exit_codes():
    page = _page()
    assert page.splitlines()[1] == '.TH RPCTL 8 "2026-12-06" "rpctl 9.8.7" "System Administration"'
    codes = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    assert re.findall(r"^\.B (\d+)$", codes, re.M) == [str(n) for n in range(9)]


def test_every_key_of_the_file_is_described():
    page = rpctl_toml_page("9.8.7", "2026-12-06")
    keys = re.findall(r"^\.B (\S+)", page.split(".SH KEYS", 1)[1].split(".SH ", 1)[0], re.M)
    assert keys == [roff_text(k) for k in GROUP_KEYS]
    for key, spec in GROUP_KEYS.items():
        assert spec.doc, key
        item = page.split(f".B {roff_text(key)}", 1)[1].split("\n.TP", 1)[0]
        assert ("(required)" in item) == (key in REQUIRED), key


def test_roff_text_escapes_what_roff_would_read_as_its_own():
    assert roff_text("a-b \\n") == "a\\-b \\en"
    assert roff_text(".starts with a dot\n'and a quote") == "\\&.starts with a dot\n\\&'and a quote"


def test_write_pages_writes_both(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    paths = write_pages(tmp_path / "man", version="1.2.3")
    assert [p.name for p in paths] == ["rpctl.8", "rpctl.toml.5"]
    assert '"1970-01-01" "rpctl 1.2.3"' in paths[0].read_text()
    assert paths[1].read_text().startswith('.\\" Made by rpctl.cli.manpage')
