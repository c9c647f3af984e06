"""`frafer serve` under load, on this machine only: bounded concurrent clients, a fixed time per level.

Starts `frafer serve` (the built-in model unless --model) on 127.0.0.1, then for each concurrency level runs that
many clients, each posting the photo again as soon as its answer arrives, for --seconds. Prints per level:
requests/s, faces/s, p50 / p95 / p99 latency of the answered requests, errors (anything but 200 and 503: must be 0),
the share answered 503 (queue full), and the server's resident memory before the first level and after the last.
Every loop is bounded in count and time, and traffic goes to the loopback address only.

    python benchmarks/serve_load.py [--levels 1,4,16,64] [--seconds 10] [--workers 1] [--max-queue 64]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

MAX_REQUESTS_PER_CLIENT = 10_000  # a hard bound beside the time limit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory of the process and its children (uvicorn workers), in MB, from /proc."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


async def client(c: httpx.AsyncClient, photo: bytes, stop: float, latencies: list, codes: list, faces: list):
    for _ in range(MAX_REQUESTS_PER_CLIENT):
        if time.perf_counter() >= stop:
            return
        start = time.perf_counter()
        r = await c.post("/v1/predict", files={"image": ("photo.png", photo, "image/png")})
        codes.append(r.status_code)
        if r.status_code == 200:
            latencies.append(time.perf_counter() - start)
            faces.append(len(r.json()["faces"]))


async def level(base: str, photo: bytes, concurrency: int, seconds: float) -> dict:
    latencies, codes, faces = [], [], []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as c:
        start = time.perf_counter()
        stop = start + seconds
        await asyncio.gather(*[client(c, photo, stop, latencies, codes, faces) for _ in range(concurrency)])
        elapsed = time.perf_counter() - start
    answered = np.asarray(latencies) * 1000
    pct = (lambda q: float(np.percentile(answered, q))) if len(answered) else (lambda q: float("nan"))
    return {"clients": concurrency, "requests/s": len(latencies) / elapsed, "faces/s": sum(faces) / elapsed,
            "p50 ms": pct(50), "p95 ms": pct(95), "p99 ms": pct(99),
            "errors": sum(1 for c in codes if c not in (200, 503)),
            "503 share": sum(1 for c in codes if c == 503) / max(1, len(codes))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="bundle or built-in name (default: the built-in model)")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--max-queue", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads per server process")
    args = ap.parse_args()

    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, format="PNG")  # a real photo, one face, 512 px
    photo = buffer.getvalue()
    port = free_port()
    command = [sys.executable, "-m", "frafer", "serve", *([args.model] if args.model else []), "--port", str(port),
               "--workers", str(args.workers), "--max-queue", str(args.max_queue), "--threads", str(args.threads)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, env=os.environ.copy())
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise SystemExit("the server did not come up")
        asyncio.run(level(base, photo, 1, 2.0))  # warm-up: first batches allocate
        before = rss_mb(server.pid)
        rows = [asyncio.run(level(base, photo, int(n), args.seconds)) for n in args.levels.split(",")]
        after = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"frafer serve, {args.workers} worker(s), queue {args.max_queue}, {args.seconds:g} s per level, "
          f"astronaut (512 px, 1 face, MTCNN), {os.cpu_count()} cores")
    print("| clients | requests/s | faces/s | p50 ms | p95 ms | p99 ms | errors | 503 share |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['clients']} | {r['requests/s']:.1f} | {r['faces/s']:.1f} | {r['p50 ms']:.0f} | "
              f"{r['p95 ms']:.0f} | {r['p99 ms']:.0f} | {r['errors']} | {100 * r['503 share']:.1f} % |")
    print(f"server memory: {before:.0f} MB before the first level, {after:.0f} MB after the last")


if __name__ == "__main__":
    main()
