"""Load on `selfensemble serve`: requests/s and p50/p95 latency for 1, 8 and 32 concurrent clients,
with batching (--max-batch 8) and without (--max-batch 1).

Each setting starts a real server process (`python -m selfensemble serve --threads T`) on
127.0.0.1, waits for /health, sends one warm-up request, then runs C clients that each send their
requests one after another (closed loop). Requests: the bundled trivia questions, the question +
2 of its paraphrases (N=3), one method, greedy, few-shot default format. Latency is measured by the
client (send → full JSON). The server's own stats give the batch sizes it formed.

    python benchmarks/perf/serve_bench.py                      # embedded model, avg, 1/8/32 clients (~5 min)
    python benchmarks/perf/serve_bench.py --model random:llama --clients 1,8 --out runs/serve_bench.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

SAMPLE = Path(__file__).resolve().parents[2] / "src" / "selfensemble" / "samples" / "trivia.jsonl"


def requests_for(count: int, method: str, max_new_tokens: int) -> list[dict]:
    """``count`` distinct bodies: trivia questions cycled, each time with a different pair of paraphrases."""
    items = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    bodies = []
    for i in range(count):
        item = items[i % len(items)]
        paras = item["paraphrases"]
        k = (i // len(items)) % len(paras)
        bodies.append({"question": item["question"], "paraphrases": [paras[k], paras[(k + 1) % len(paras)]],
                       "methods": [method], "max_new_tokens": max_new_tokens})
    return bodies


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch: int, threads: int, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "selfensemble", "serve", "--model", model, "--port", str(port),
           "--max-batch", str(max_batch), "--threads", str(threads)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not answer /health within 300 s")


async def run_clients(url: str, bodies: list[dict], clients: int) -> tuple[list[float], float]:
    """``clients`` closed-loop clients share the bodies round-robin; returns latencies and wall time."""
    latencies: list[float] = []

    async def client(c: int, http: httpx.AsyncClient) -> None:
        for body in bodies[c::clients]:
            t0 = time.perf_counter()
            r = await http.post("/v1/ensemble", json=body)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t0)

    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=clients)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(c, http) for c in range(clients)))
        return latencies, time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def measure(args: argparse.Namespace, max_batch: int) -> list[dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(args.model, max_batch, args.threads, port)
    rows = []
    try:
        warm = requests_for(1, args.method, args.max_new_tokens)[0]
        httpx.post(url + "/v1/ensemble", json=warm, timeout=600).raise_for_status()
        for clients in args.clients:
            bodies = requests_for(max(clients * args.per_client, args.min_requests), args.method, args.max_new_tokens)
            before = httpx.get(url + "/v1/stats").json()["batching"]["batch_sizes"]
            lat, wall = asyncio.run(run_clients(url, bodies, clients))
            after = httpx.get(url + "/v1/stats").json()["batching"]["batch_sizes"]
            sizes = {int(k): v - before.get(k, 0) for k, v in after.items() if v > before.get(k, 0)}
            calls = sum(sizes.values())
            rows.append({"max_batch": max_batch, "clients": clients, "requests": len(lat), "wall_s": wall,
                         "req_per_s": len(lat) / wall, "p50_s": pct(lat, 50), "p95_s": pct(lat, 95),
                         "mean_batch": sum(k * v for k, v in sizes.items()) / max(calls, 1), "batch_sizes": sizes})
            print(f"max_batch={max_batch} clients={clients}: {rows[-1]['req_per_s']:.2f} req/s, "
                  f"p50 {rows[-1]['p50_s']:.2f} s, p95 {rows[-1]['p95_s']:.2f} s, batches {sizes}", flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| --max-batch | clients | requests | req/s | p50 latency (s) | p95 latency (s) | mean batch |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['max_batch']} | {r['clients']} | {r['requests']} | {r['req_per_s']:.2f} | "
                     f"{r['p50_s']:.2f} | {r['p95_s']:.2f} | {r['mean_batch']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--method", default="avg")
    ap.add_argument("--max-new-tokens", type=int, default=8)
    ap.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    ap.add_argument("--max-batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--per-client", type=int, default=1, help="requests per client (closed loop)")
    ap.add_argument("--min-requests", type=int, default=8, help="at least this many requests per setting")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server")
    ap.add_argument("--out", type=Path, default=None, help="write every number as JSON here")
    args = ap.parse_args()
    rows = [row for mb in args.max_batches for row in measure(args, mb)]
    print(f"\nmodel {args.model}, method {args.method}, N=3 prompts, {args.max_new_tokens} new tokens, "
          f"{args.threads} torch thread(s)\n")
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": {k: v for k, v in vars(args).items() if k != "out"},
                                        "rows": rows}, indent=2, default=str))


if __name__ == "__main__":
    main()
