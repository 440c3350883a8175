"""Follow the README: every command its ```sh blocks show (the tour, the UDP examples, the
run example) and its groups file run as written, in a network namespace of their own,
and each exits 0.

What a block is run with (demo workers at the pids it names, nginx) and which of its
commands a test machine cannot run (no NIC with RSS, no Prometheus, no systemd) is
said in an HTML comment above the block (tests/support/readme_examples.py); the test
skips only those, and says how many commands it ran.
"""

from __future__ import annotations

import pytest

from tests.support.readme_examples import README, read_examples, run_in_namespaces

pytestmark = pytest.mark.kernel

EXAMPLES = read_examples(README.read_text())


def _name(ex) -> str:
    return f"line{ex.line}-{ex.world}"


def test_every_shell_block_is_an_example_and_each_marker_names_its_commands():
    """read_examples() refuses markers that name commands their block lacks; the tour, the
    run example, the UDP examples and the groups file are among what runs."""
    run = [ex for ex in EXAMPLES if ex.skip is None]
    commands = [c for ex in run for c in ex.commands()]
    assert any(c.startswith("rpctl register worker-1") for c in commands)
    assert any(c.startswith("rpctl run --group web") for c in commands)
    assert any(c.startswith("rpctl register dns-1") for c in commands)
    assert any(ex.file == "/etc/rpctl/rpctl.toml" and ex.then for ex in run)


@pytest.mark.parametrize("ex", [ex for ex in EXAMPLES if ex.skip is None], ids=_name)
def test_the_readme_example_runs_as_written(ex, netns, capsys):
    outcomes = run_in_namespaces(ex)
    failed = [o for o in outcomes if o.skipped is None and o.status != 0]
    ran = [o for o in outcomes if o.skipped is None]
    skipped = [o for o in outcomes if o.skipped is not None]
    with capsys.disabled():
        print(f"\nREADME.md:{ex.line} ({ex.world}): ran {len(ran)} of {len(outcomes)} commands"
              + "".join(f"\n  not run: {o.command.strip()} -- {o.skipped}" for o in skipped))
    assert not failed, "\n\n".join(
        f"README.md:{ex.line}: `{o.command.strip()}` exited {o.status}\n{o.stderr.strip()[-1500:]}" for o in failed
    )
    assert ran, f"README.md:{ex.line}: no command of the block ran"


def test_the_skipped_blocks_say_why(capsys):
    skipped = [ex for ex in EXAMPLES if ex.skip is not None]
    with capsys.disabled():
        print(f"\nREADME.md: {len(EXAMPLES) - len(skipped)} example blocks run, {len(skipped)} not run:"
              + "".join(f"\n  line {ex.line}: {ex.skip}" for ex in skipped))
    assert all(ex.skip.strip() for ex in skipped)
