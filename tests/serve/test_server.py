"""`revmux serve` (revmux.cli + server.py): start-up errors exit non-zero with a clear message; SIGTERM under
load answers every accepted request and exits 0 within drain_timeout_s (a real subprocess on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from revmux.cli import app
from revmux.serve.contract import token_hash

from .conftest import save_adapter, save_teacher

DRAIN_TIMEOUT_S = 20.0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--adapter", "/nonexistent/adapter"], "is not an adapter directory"),
        (["--pack", "/nonexistent/pack"], "is not a directory"),
        ([], "exactly one of --adapter"),
        (["--pack", "PACK", "--max-batch-groups", "0"], "--max-batch-groups must be"),
        (["--pack", "PACK", "--widths", "1,8"], "--widths asks for N=[8]"),
        (["--pack", "PACK", "--config", "/nonexistent.yaml"], "not found"),
    ],
)
def test_start_up_errors_exit_non_zero_with_a_clear_message(args, needle, pack_dir):
    args = [str(pack_dir) if a == "PACK" else a for a in args]
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 2, result.output
    assert needle in " ".join(result.output.split())


def test_a_pack_of_two_teachers_exits_with_a_clear_message(pack_dir, tmp_path, minilm_path):
    other = save_teacher(tmp_path / "other", minilm_path, seed=1)
    mixed = tmp_path / "mixed"
    shutil.copytree(pack_dir / "n2", mixed / "n2")
    save_adapter(other, mixed / "n4", 4)
    result = CliRunner().invoke(app, ["serve", "--pack", str(mixed)])
    assert result.exit_code == 2 and "mixes teachers" in " ".join(result.output.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, limit_s: float = 120.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"revmux serve exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"revmux serve was not ready within {limit_s} s")


async def _load_then_sigterm(url: str, proc: subprocess.Popen, clients: int = 16) -> tuple[list, float]:
    """Clients post until the server is gone; SIGTERM after 1 s of load. Returns (answers, SIGTERM time)."""
    answers: list[tuple[int, str, str, dict | None]] = []
    stop_at = time.monotonic() + 60
    tls = ssl.create_default_context()  # shared: loading CA files per client would dominate

    async def client(c: int) -> None:
        i = 0
        async with httpx.AsyncClient(base_url=url, timeout=30, verify=tls) as http:
            while time.monotonic() < stop_at:
                text = f"client {c} request {i} " + "word " * (i % 7)
                rid = f"c{c}-{i}"
                try:
                    r = await http.post(
                        "/predict", json={"inputs": text, "debug": True}, headers={"x-request-id": rid}
                    )
                except httpx.TransportError:
                    if proc.poll() is not None:
                        return
                    await asyncio.sleep(0.05)
                    continue
                answers.append((r.status_code, rid, text, r.json() if r.status_code == 200 else None))
                i += 1

    tasks = [asyncio.ensure_future(client(c)) for c in range(clients)]
    await asyncio.sleep(1.0)
    sigterm_at = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    await asyncio.gather(*tasks)
    return answers, sigterm_at


def test_sigterm_under_load_loses_no_accepted_request(pack_dir, teacher_dir, tmp_path):
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    cmd = [sys.executable, "-m", "revmux.cli", "serve", "--pack", str(pack_dir), "--port", str(port)]
    cmd += ["--drain-timeout-s", str(DRAIN_TIMEOUT_S), "--width-thresholds", "2:2,4:8", "--threads", "1"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_ready(url, proc)
        answers, sigterm_at = asyncio.run(_load_then_sigterm(url, proc))
        code = proc.wait(timeout=DRAIN_TIMEOUT_S + 10)
        exited_after_s = time.monotonic() - sigterm_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    log = log_path.read_text()
    assert code == 0, log
    assert exited_after_s < DRAIN_TIMEOUT_S + 2, exited_after_s  # + client polling slack
    match = re.search(r"accepted (\d+) requests, answered (\d+)", " ".join(log.split()))
    assert match, log
    accepted, answered = int(match[1]), int(match[2])
    statuses = {s for s, *_ in answers}
    assert statuses <= {200, 503}, statuses  # 503: refused while draining, never accepted
    ok = [a for a in answers if a[0] == 200]
    assert accepted == answered == len(ok) > 0  # every accepted request got its answer
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(teacher_dir)
    for _, rid, text, data in ok:
        assert data["debug"]["request_id"] == rid
        ids = tok(text, truncation=True, max_length=64)["input_ids"]
        assert data["debug"]["items"][0]["input_sha256"] == token_hash(ids)
