"""The built wheel works on its own: installed in a fresh venv, away from the checkout, it
records the demo and serves the UI with its templates and static files.

Slower than most (a wheel build, a venv, a demo and a server: ~30 s), hence `slow`. Nothing is
downloaded: the wheel is built without build isolation by the installed backend, installed
with --no-deps, and the fresh venv reads the dependencies from this environment's
site-packages through a .pth file.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.webui import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _run(args: list[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def test_wheel_installs_and_serves_outside_the_checkout(tmp_path: Path) -> None:
    pytest.importorskip("hatchling", reason="the build backend (hatchling, test extra) is not installed")
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, ROOT])
    (wheel,) = dist.glob("llmlog-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    # The compression dictionary too: without it no response or message can be stored or read.
    packaged_files = (
        "web/templates/base.html",
        "web/static/style.css",
        "web/static/app.js",
        "store/text-1.zdict",
    )
    for packaged in packaged_files:
        packaged = f"llmlog/{packaged}"
        assert packaged in names, f"{packaged} is not in the wheel"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python, llmlog = venv / "bin" / "python", venv / "bin" / "llmlog"
    _run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel])
    # The dependencies are this environment's; a path line in a .pth adds the directory only,
    # so the editable install of the checkout found there is never imported.
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([python, "-c", purelib]).stdout.strip())
    (site / "deps.pth").write_text(f"{sysconfig.get_paths()['purelib']}\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LLMLOG_DB", "LLMLOG_URL")}
    found = _run([python, "-c", "import llmlog; print(llmlog.__file__)"], cwd=elsewhere, env=env).stdout
    assert Path(found.strip()).is_relative_to(venv), f"llmlog imported from {found.strip()}, not the wheel"

    db = tmp_path / "demo.db"
    _run([llmlog, "--db", db, "demo", "--calls", "40", "--history", "1"], cwd=elsewhere, env=env)
    count = [llmlog, "--db", db, "query", "--format", "csv", "SELECT COUNT(*) FROM calls"]
    rows = _run(count, cwd=elsewhere, env=env)
    assert int(rows.stdout.split()[-1]) >= 40

    port = free_port()
    server = subprocess.Popen(
        [str(llmlog), "--db", str(db), "serve", "--port", str(port), "--no-retention"],
        cwd=elsewhere,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    page = client.get("/")
                    break
                except httpx.TransportError:
                    assert server.poll() is None, f"llmlog serve exited:\n{server.communicate()[0]}"
                    assert time.monotonic() < deadline, "llmlog serve did not answer within 30 s"
                    time.sleep(0.2)
            assert page.status_code == 200
            stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', page.text)
            assert stylesheets, "the page links no stylesheet"
            for href in stylesheets:
                css = client.get(href)
                assert css.status_code == 200, href
                assert css.headers["content-type"].startswith("text/css")
                assert css.text.strip()
    finally:
        server.terminate()
        server.wait(timeout=10)
