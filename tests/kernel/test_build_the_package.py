"""Build the Debian package: ./scripts/package.sh makes dist/rpctl_<version>_all.deb, lintian
finds no error in it, and what it installs runs on Debian's own python3 and libraries.

The package is unpacked (dpkg-deb -x), not installed: /usr/bin/rpctl then runs with
/usr/bin/python3 and Debian's python3-rich, python3-pyroute2 and python3-prometheus-client
(the build dependencies package.sh installed), not with the checkout's virtualenv.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEB = REPO / "dist" / f"rpctl_{VERSION}_all.deb"


@pytest.fixture(scope="module")
def built():
    """./scripts/package.sh, once for the module: (its output, the .deb)."""
    started = time.monotonic()
    done = subprocess.run([str(REPO / "scripts" / "package.sh")], capture_output=True, text=True, timeout=600,
                          check=False)
    took = time.monotonic() - started
    assert done.returncode == 0, f"package.sh exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr, took


@pytest.fixture(scope="module")
def unpacked(built, tmp_path_factory):
    root = tmp_path_factory.mktemp("deb")
    subprocess.run(["dpkg-deb", "-x", str(DEB), str(root)], check=True)
    return root


def _field(name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(DEB), name], capture_output=True, text=True, check=True).stdout.strip()


def test_package_sh_builds_the_deb_and_lintian_finds_no_error(built):
    out, took = built
    assert DEB.is_file(), out
    assert "package: lintian: no errors" in out, out
    assert not re.search(r"^package: lintian: E: ", out, re.M), out
    assert took < 120, f"package.sh took {took:.0f} s"


def test_the_deb_depends_on_debian_packages_only(built):
    depends = _field("Depends")
    for package in ("python3-bpfcc", "bpftool", "python3-rich", "python3-pyroute2", "python3-prometheus-client"):
        assert package in depends, depends
    assert "linux-headers-amd64" in _field("Recommends")
    assert _field("Version") == VERSION and _field("Architecture") == "all"
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(DEB)], capture_output=True, check=True).stdout
    assert b"/etc/rpctl/rpctl.toml" in conffiles


def test_it_installs_the_command_unit_config_man_pages_and_completion(unpacked):
    for path in ("usr/bin/rpctl", "lib/systemd/system/rpctl.service", "etc/rpctl/rpctl.toml",
                 "usr/share/man/man8/rpctl.8.gz", "usr/share/man/man5/rpctl.toml.5.gz",
                 "usr/share/bash-completion/completions/rpctl", "usr/lib/python3/dist-packages/rpctl/bpf/steer.bpf.c",
                 f"usr/lib/python3/dist-packages/rpctl-{VERSION}.dist-info/METADATA"):
        assert (unpacked / path).exists(), path
    assert (unpacked / "usr/bin/rpctl").read_text().startswith("#!/usr/bin/python3\n")
    assert not list(unpacked.rglob("*venv*")) and not list(unpacked.rglob("pip"))
    unit = (unpacked / "lib/systemd/system/rpctl.service").read_text()
    assert "ExecStart=/usr/bin/rpctl serve -c /etc/rpctl/rpctl.toml" in unit


def test_upgrades_restart_serve_remove_stops_it_purge_removes_config_and_cache(built, tmp_path):
    """What dh_installsystemd wrote, read back: serve is stopped on removal only (an upgrade
    restarts it once the new files are in: steering never stops), and purge removes
    /etc/rpctl and /var/cache/rpctl."""
    subprocess.run(["dpkg-deb", "-e", str(DEB), str(tmp_path)], check=True)
    prerm, postinst, postrm = ((tmp_path / name).read_text() for name in ("prerm", "postinst", "postrm"))
    stops = [line for line in prerm.splitlines() if "deb-systemd-invoke stop" in line or "systemctl stop" in line]
    assert stops and '[ "$1" = remove ]' in prerm.split(stops[0])[0].splitlines()[-1], prerm
    assert "_dh_action=restart" in postinst and "deb-systemd-helper enable 'rpctl.service'" in postinst, postinst
    assert re.search(r'if \[ "\$1" = "purge" \]; then\n\s*rm -rf /etc/rpctl /var/cache/rpctl', postrm), postrm


def _debian_rpctl(unpacked: Path, *args: str, **kw) -> subprocess.Popen:
    """The package's /usr/bin/rpctl, run by Debian's python3 with nothing but the package added."""
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(unpacked / "usr/lib/python3/dist-packages")}
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(["/usr/bin/python3", "-s", str(unpacked / "usr/bin/rpctl"), *args],
                            env=env, text=True, **kw)


def test_the_packaged_rpctl_says_its_version_on_debians_python(unpacked):
    proc = _debian_rpctl(unpacked, "--version")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == f"rpctl {VERSION}", err
    # The libraries it runs with are Debian's.
    done = subprocess.run(["/usr/bin/python3", "-s", "-c",
                           "import rpctl.cli.main, rich, pyroute2, prometheus_client; print(rpctl.cli.main.__file__, "
                           "rich.__file__, pyroute2.__file__, prometheus_client.__file__)"],
                          env={"PYTHONPATH": str(unpacked / "usr/lib/python3/dist-packages")},
                          capture_output=True, text=True, check=True)
    rpctl_file, *libraries = done.stdout.split()
    assert rpctl_file.startswith(str(unpacked)), rpctl_file
    assert all(p.startswith("/usr/lib/python3/dist-packages/") for p in libraries), libraries


def test_serve_with_the_shipped_config_idles_and_says_so(unpacked, netns, tmp_path):
    conf = unpacked / "etc/rpctl/rpctl.toml"
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc = _debian_rpctl(unpacked, "serve", "-c", str(conf), stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 20
        while "serving 0 groups" not in log.read_text():
            assert proc.poll() is None, f"serve exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, f"serve said: {log.read_text()}"
            time.sleep(0.05)
        assert f"{conf} names no group: idle until it does" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0, log.read_text()


def test_the_packaged_completion_completes_commands(unpacked):
    script = unpacked / "usr/share/bash-completion/completions/rpctl"
    done = subprocess.run(["bash", "-c", f"source {script}; COMP_WORDS=(rpctl dr); COMP_CWORD=1; _rpctl; "
                                         "echo ${COMPREPLY[@]}"], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["drain"]
