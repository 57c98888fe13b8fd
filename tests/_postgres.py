"""A throwaway PostgreSQL server for tests (Debian ``postgresql``): skipped with a reason when there is none."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

PG_PASSWORD = "s3cret-pg-pw"


def closed_port() -> int:
    """A free port on 127.0.0.1 (nothing listens on it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (free port, temp folder), password login."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb; Debian: apt-get install postgresql)")
    prefix: list[str] = []
    owner = None
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server as")
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start the server as 'postgres'")
        prefix = ["runuser", "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="cellkit-pg-"))
    (base / "pw").write_text(PG_PASSWORD + "\n")
    if owner is not None:
        for p in (base, base / "pw"):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    data, log, port = base / "data", base / "server.log", closed_port()

    def run(*args: str, timeout: int = 90) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=base)

    init = run(
        str(bindir / "initdb"), "-D", str(data), "-U", "cellkit", f"--pwfile={base / 'pw'}",
        "--auth=scram-sha-256", "--no-sync", "-E", "UTF8", "--locale=C",
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"initdb failed, cannot start a test PostgreSQL: {init.stderr.strip()[-300:]}")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off -c full_page_writes=off"

    def start() -> None:
        out = run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", opts, "start")
        if out.returncode != 0:
            tail = log.read_text()[-300:] if log.exists() else out.stderr[-300:]
            raise RuntimeError(f"pg_ctl start failed: {tail}")

    def stop(mode: str = "fast") -> None:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", mode, "-w", "stop")

    try:
        start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot start a test PostgreSQL: {exc}")
    url = f"postgresql://cellkit:{PG_PASSWORD}@127.0.0.1:{port}/postgres?connect_timeout=3"
    try:
        yield SimpleNamespace(url=url, port=port, start=start, stop=stop)
    finally:
        stop("immediate")
        shutil.rmtree(base, ignore_errors=True)
