"""QUIC for kernel tests: a certificate, the echo servers' command, and the
client process (tests/support/quic_server.py, quic_client.py) driven from a test."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def certificate(folder: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1/::1; (cert path, key path)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"),
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1")),
        ]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "quic-cert.pem", folder / "quic-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


def server_command(cert: str, key: str, *extra: str) -> list[str]:
    """The argv of one echo server; under `rpctl run` it serves fd 3 with $RPCTL_QUIC_SERVER_ID."""
    return [sys.executable, "-m", "tests.support.quic_server", "--cert", cert, "--key", key, *extra]


def child_env() -> dict:
    """The environment that lets a child started anywhere import tests.support."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{path}" if path else str(REPO)}


class Clients:
    """One quic_client process: n long-lived connections; commands answered in JSON."""

    def __init__(self, connect: str, cafile: str, n: int = 100, interval: float = 0.5, timeout: float = 4.0,
                 lifetime: float = 0.0, ready_timeout: float = 30.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.quic_client", "--connect", connect, "--cafile", cafile,
             "-n", str(n), "--interval", str(interval), "--timeout", str(timeout), "--lifetime", str(lifetime)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(), cwd=REPO,
        )
        self.ready = self._answer(ready_timeout)

    def _answer(self, timeout: float) -> dict:
        """The next JSON line, read with a deadline: a hung client fails the test."""
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while not buf.endswith(b"\n"):
                left = deadline - time.monotonic()
                if left <= 0 or (not sel.select(left) and time.monotonic() >= deadline):
                    raise AssertionError(f"quic clients gave no answer within {timeout:g}s")
                chunk = os.read(fd, 1)
                if not chunk:
                    raise AssertionError(f"quic clients exited {self.proc.wait()}: {self.proc.stderr.read().decode()}")
                buf += chunk
        return json.loads(buf)

    def command(self, line: str, timeout: float = 30.0) -> dict:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def report(self) -> dict:
        return self.command("report")

    def migrate(self) -> int:
        return self.command("migrate")["migrated"]

    def patience(self, timeout: float) -> None:
        """How long a handshake or an echo may take from now on before its connection counts as broken."""
        self.command(f"timeout {timeout}")

    def bound(self, lifetime: float) -> None:
        """Every connection, open ones too, closes after 50-100 % of `lifetime` and another opens."""
        self.command(f"lifetime {lifetime}")

    def stop(self, timeout: float = 30.0) -> dict:
        final = self.command("stop", timeout)
        self.proc.wait(timeout=10)
        return final

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            pipe.close()
