"""Load test of `revmux serve`: req/s and p50/p95/p99 latency, N = 1 vs adaptive N, same machine, same run.

Usage:
    python benchmarks/load.py --pack DIR                       # the full run: 10,000 requests, 64 clients
    python benchmarks/load.py --pack DIR --requests 300 --clients 16   # a quick check
    python benchmarks/load.py --url http://127.0.0.1:8080      # a server you started yourself

With --pack/--adapter it starts `revmux serve` twice on free 127.0.0.1 ports, one after the other: once with
`--widths 1` (the teacher alone) and once adaptive (every width of the pack, N picked from queue depth), and
sends each the same request plan: a third singles, a third pairs, a third batches of 2-6 inputs, sentences
from the bundled SST-2 dev set, each request tagged with a client id. The client is a minimal HTTP/1.1
keep-alive client on asyncio (one connection per client) in this process, so the servers run in their own
processes. Latency is send to last byte; a warm-up of --warmup requests is not timed. Every response must be
a 200 with one answer per input. Prints a markdown table (command, machine, date) for docs/RESULTS.md, then
one JSON line. Run it on an otherwise idle machine: the numbers are only as good as the machine is quiet.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEV_TSV = Path(__file__).resolve().parents[1] / "src" / "revmux" / "datasets" / "sst2" / "dev.tsv"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pack", help="Adapter pack directory: serve it at N=1 and adaptively.")
    src.add_argument("--adapter", help="One adapter directory: serve it at N=1 and adaptively.")
    src.add_argument("--url", action="append", help="Measure a running server (repeatable).")
    p.add_argument("--requests", type=int, default=10_000, help="Timed requests per server.")
    p.add_argument("--clients", type=int, default=64, help="Concurrent clients.")
    p.add_argument("--warmup", type=int, default=200, help="Untimed requests first.")
    p.add_argument("--threads", type=int, default=None, help="--threads of the servers started.")
    p.add_argument(
        "--serve-args", default="", help="Extra `revmux serve` flags, e.g. '--max-batch-groups 16'."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tenants",
        type=int,
        default=0,
        help="Clients belong to this many tenants (header X-Tenant, debug answers); adds a third server "
        "with --isolation tenant and counts composites that hold two tenants (from the debug group ids).",
    )
    p.add_argument(
        "--quantize",
        default="none",
        help="Comma-separated backbone precisions (none, int8): an N=1 and an adaptive server for each, so the "
        "adaptive server is compared with the fastest N=1 server a user could run (e.g. none,int8).",
    )
    p.add_argument("--out", help="Also write the JSON result here.")
    args = p.parse_args(argv)
    args.quantize = [q.strip() for q in args.quantize.split(",") if q.strip()]
    if not args.quantize or any(q not in ("none", "int8", "bf16") for q in args.quantize):
        p.error(f"--quantize takes a comma list of none, int8 and bf16, got {args.quantize!r}")
    if args.requests < 1 or args.clients < 1 or args.warmup < 0:
        p.error("--requests and --clients must be >= 1, --warmup >= 0")
    return args


# ---- the request plan ---------------------------------------------------------------------------
def sentences() -> list[str]:
    lines = DEV_TSV.read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0].strip() for line in lines if line.strip()]


def make_plan(n: int, seed: int, debug: bool = False) -> list[tuple[str, bytes, int]]:
    """(request id, JSON body, number of inputs): singles, pairs and batches of 2-6, a third each."""
    rng = random.Random(seed)
    pool = sentences()
    plan = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            inputs: Any = rng.choice(pool)
        elif kind == 1:
            inputs = {"text": rng.choice(pool), "text_pair": rng.choice(pool)}
        else:
            inputs = [rng.choice(pool) for _ in range(rng.randint(2, 6))]
        count = len(inputs) if isinstance(inputs, list) else 1
        body = {"inputs": inputs, **({"debug": True} if debug else {})}
        plan.append((f"c{i}", json.dumps(body).encode(), count))
    return plan


# ---- a minimal keep-alive HTTP/1.1 client -------------------------------------------------------
class Connection:
    """One keep-alive connection; `post` returns (status, body). Enough for uvicorn's responses."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head = (
            f"POST {path} HTTP/1.1\r\nhost: {self.host}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}\r\n"
        )
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", raw)[1])
        data = await self.reader.readexactly(length)
        if re.search(rb"(?i)connection:\s*close", raw):
            await self.close()
        return status, data

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


async def hammer(url: str, plan, clients: int, tenants: int = 0) -> dict[str, Any]:
    """Send `plan` from `clients` concurrent connections; latencies in seconds, wall time, errors; with
    `tenants`, client c sends as tenant c mod tenants and each answer's composite (debug group) is noted."""
    parts = urlsplit(url)
    latencies: list[float] = []
    errors: list[str] = []
    groups: dict[str, set[str]] = {}

    async def client(c: int) -> None:
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        try:
            tenant = f"t{c % tenants}" if tenants else None
            headers = {"x-tenant": tenant} if tenant else {}
            for rid, body, count in plan[c::clients]:
                t0 = time.perf_counter()
                status, data = await conn.post("/predict", body, {"x-request-id": rid, **headers})
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    errors.append(f"{rid}: {status} {data[:200]!r}")
                    continue
                doc = json.loads(data)
                answers = doc["result"] if tenant else doc
                if count > 1 and len(answers) != count:
                    errors.append(f"{rid}: {count} inputs but {len(answers)} answers")
                for item in doc["debug"]["items"] if tenant else []:
                    groups.setdefault(item["group"], set()).add(tenant)
        finally:
            await conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return {"wall_s": time.perf_counter() - t0, "latencies": latencies, "errors": errors, "groups": groups}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s)) - 1))]


def group_widths(metrics_text: str) -> dict[str, int]:
    """Groups run per width bucket, from revmux_group_width's cumulative buckets."""
    buckets = {
        float(m[1]): float(m[2])
        for m in re.finditer(r'revmux_group_width_bucket\{le="([^"]+)"\} ([0-9.e+]+)', metrics_text)
        if m[1] != "+Inf"
    }
    out, prev = {}, 0.0
    for le in sorted(buckets):
        if buckets[le] - prev > 0:
            out[f"{le:g}"] = int(buckets[le] - prev)
        prev = buckets[le]
    return out


async def fetch(url: str, path: str) -> str:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return data.split(b"\r\n\r\n", 1)[1].decode(errors="replace")


def measure(url: str, label: str, args: argparse.Namespace) -> dict[str, Any]:
    tenants = args.tenants
    warm = make_plan(args.warmup, args.seed + 1, debug=bool(tenants))
    plan = make_plan(args.requests, args.seed, debug=bool(tenants))
    if warm:
        asyncio.run(hammer(url, warm, args.clients, tenants))
    before = group_widths(asyncio.run(fetch(url, "/metrics")))
    run = asyncio.run(hammer(url, plan, args.clients, tenants))
    after = group_widths(asyncio.run(fetch(url, "/metrics")))
    widths = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0) > 0}
    lat = run["latencies"]
    inputs = sum(count for *_, count in plan)
    groups = sum(widths.values()) or 1
    return {
        "mode": label,
        "url": url,
        "requests": len(plan),
        "inputs": inputs,
        "req_per_s": len(plan) / run["wall_s"],
        "inputs_per_s": inputs / run["wall_s"],
        "p50_ms": 1000 * percentile(lat, 50),
        "p95_ms": 1000 * percentile(lat, 95),
        "p99_ms": 1000 * percentile(lat, 99),
        "errors": len(run["errors"]),
        "first_errors": run["errors"][:5],
        "groups_by_width": widths,
        "mean_n": sum(float(k) * v for k, v in widths.items()) / groups,
        "tenants": tenants,
        "cross_tenant_groups": sum(len(ts) > 1 for ts in run["groups"].values()) if tenants else None,
        "groups_seen": len(run["groups"]) if tenants else None,
    }


# ---- servers ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(source: list[str], extra: list[str], args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Start `revmux serve` on a free loopback port, measure it, SIGTERM it."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "revmux.cli",
        "serve",
        *source,
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    cmd += (["--threads", str(args.threads)] if args.threads else []) + extra + shlex.split(args.serve_args)
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"`{shlex.join(cmd)}` exited with {proc.returncode} before it was ready")
            try:
                if '"ready"' in asyncio.run(fetch(url, "/ready")):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the server was not ready within 300 s")
            time.sleep(0.2)
        return measure(url, label, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def table(results: list[dict[str, Any]], args: argparse.Namespace, argv: Sequence[str]) -> str:
    import revmux

    lines = [
        f"revmux load test, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"command: `python benchmarks/load.py {shlex.join(argv)}`",
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, revmux {revmux.__version__}",
        f"{args.requests} requests per server from {args.clients} clients (singles, pairs, batches of 2-6)",
        "",
        "| mode | req/s | inputs/s | vs fastest N=1 | p50 ms | p95 ms | p99 ms | errors | mean N | groups by N "
        "| composites holding two tenants |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in results:
        by_n = ", ".join(f"{k}: {v}" for k, v in r["groups_by_width"].items())
        ratio = "-" if r.get("vs_fastest_n1") is None else f"{r['vs_fastest_n1']:.2f}x"
        lines.append(
            f"| {r['mode']} | {r['req_per_s']:.1f} | {r['inputs_per_s']:.1f} | {ratio} | {r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {r['mean_n']:.2f} | {by_n} | "
            f"{_cross(r)} |"
        )
    return "\n".join(lines)


def fastest_single(results: list[dict[str, Any]]) -> float | None:
    """Inputs/s of the fastest N=1 server measured (None without one): the honest reference."""
    singles = [r["inputs_per_s"] for r in results if r["mode"].startswith("N=1")]
    return max(singles) if singles else None


def _cross(r: dict[str, Any]) -> str:
    if r.get("cross_tenant_groups") is None:
        return "-"
    return f"{r['cross_tenant_groups']} of {r['groups_seen']}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.url:
        results = [measure(u, f"server {u}", args) for u in args.url]
    else:
        source = ["--pack", args.pack] if args.pack else ["--adapter", args.adapter]
        results = []
        for q in args.quantize:
            flags, tag = (["--quantize", q], f", --quantize {q}") if q != "none" else ([], "")
            results.append(serve(source, ["--widths", "1", *flags], args, f"N=1 (teacher){tag}"))
            results.append(serve(source, flags, args, f"adaptive N{tag}"))
        if args.tenants:
            isolate = ["--isolation", "tenant", "--tenant-header", "X-Tenant"]
            results.append(serve(source, isolate, args, "adaptive N, --isolation tenant"))
    best = fastest_single(results)
    for r in results:
        r["vs_fastest_n1"] = r["inputs_per_s"] / best if best else None
    print(table(results, args, argv))
    import revmux

    out = {
        "command": f"python benchmarks/load.py {shlex.join(argv)}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}, revmux {revmux.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "requests": args.requests,
        "clients": args.clients,
        "tenants": args.tenants,
        "quantize": args.quantize,
        "results": results,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out))
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
