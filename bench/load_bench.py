"""Load benchmark: latency under concurrent clients, beside large and hostile requests (issue 20).

Against a real ``bentoml serve`` on 127.0.0.1 (``serving.launcher.ServiceProcess``, default
workers) serving a small synthetic model (4,000 voters, the T-learner, trained into a fresh
temp store first), with a lightweight client (aiohttp in one event loop, keep-alive
connections; no work per answer beyond reading it):

1. ``--clients`` (16) clients scoring one voter per request in a loop: p50 and p99;
2. 64 such clients;
3. 16 single-voter clients while two clients score 5,000 voters per request in a loop:
   the single-voter p50 and p99, and the large requests' latency;
4. hostile requests while 16 single-voter clients run: 10,000 voters of which one has a
   50,000-character id, 50 MB of ``{"voters": [{}, {}, ...]}``, a 100 MB header: each
   one's status (or what the connection did), the largest growth of a worker's RSS while it
   ran (sampled every 50 ms), and the single-voter p99 while they run.

Medians and ratios come from this one run: the ratios divide a phase's p50/p99 by the
16-client phase's. The machine's load average is printed: on a shared machine latencies
move with it. A failed request is any answer but 200, or no answer.

Usage::

    PERSUADE_THREADS=1 .venv/bin/python bench/load_bench.py [--clients 16] [--seconds 15]
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the small campaign the tests use
from bench_home import publish, service_bench_parser, temp_home  # noqa: E402 - bench/ is the script's folder

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

KEY = "load-bench-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
LARGE = 5_000
HEADER_BYTES = 100 * 1024 * 1024
EMPTY_VOTERS_BYTES = 50 * 1024 * 1024


def train_small() -> tuple[str, list[dict]]:
    """The small synthetic model trained and registered (its URI), and its campaign's voters as JSON records."""
    from small_model_fixtures import write_small_campaign

    from training.run import train

    campaign = write_small_campaign(Path(os.environ["PERSUADE_HOME"]) / "data", model_name="persuade-load-bench",
                                    name="load-bench")
    outcome = train(campaign.config_path)
    voters = json.loads(campaign.voter_file.to_json(orient="records"))
    return outcome.model_uri, voters


class Load:
    """Clients in one event loop (a thread): ``single`` one-voter clients, ``large`` 5,000-voter clients."""

    def __init__(self, base_url: str, voters: list[dict], single: int, large: int = 0):
        self.url, self.single, self.large = f"{base_url}/score", single, large
        # bodies encoded beforehand: the client's loop does nothing but send and read
        large = [[{**voters[(k * LARGE + i) % len(voters)], "voter_id": f"L{k}-{i}"} for i in range(LARGE)]
                 for k in range(2)]
        self.bodies = {"single": [json.dumps({"voters": [v]}).encode() for v in voters[:500]],
                       "large": [json.dumps({"voters": part}).encode() for part in large]}
        self.answers: dict[str, list[tuple[float, float, int | None]]] = {"single": [], "large": []}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, session, kind: str, i: int) -> None:
        import aiohttp

        bodies, k = self.bodies[kind], i
        while not self._stop.is_set():
            body, k = bodies[k % len(bodies)], k + 1
            t0 = time.perf_counter()
            try:
                async with session.post(self.url, data=body, headers={**AUTH, "Content-Type": "application/json"}) as r:
                    await r.read()
                    self.answers[kind].append((time.monotonic(), time.perf_counter() - t0, r.status))
            except (TimeoutError, aiohttp.ClientError):
                self.answers[kind].append((time.monotonic(), time.perf_counter() - t0, None))
                await asyncio.sleep(0.01)

    async def _run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=120)
        connector = aiohttp.TCPConnector(limit=self.single + self.large)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            await asyncio.gather(*(self._client(session, "single", i) for i in range(self.single)),
                                 *(self._client(session, "large", i) for i in range(self.large)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=180)

    def stats(self, kind: str = "single", start: float = 0.0, stop: float = float("inf")) -> dict:
        inside = [(s, status) for t, s, status in self.answers[kind] if start <= t < stop]
        ok = np.array([s for s, status in inside if status == 200]) * 1000
        return {"requests": len(inside), "failed": sum(status != 200 for _, status in inside),
                "p50": float(np.percentile(ok, 50)) if len(ok) else float("nan"),
                "p99": float(np.percentile(ok, 99)) if len(ok) else float("nan")}


def worker_rss(svc) -> dict[int, float]:
    """Resident memory of each live worker, MB."""
    import psutil

    out = {}
    for pid in svc.worker_pids():
        try:
            out[pid] = psutil.Process(pid).memory_info().rss / 1e6
        except psutil.NoSuchProcess:
            continue
    return out


def rss_growth(svc, action: Callable[[], tuple[int | str, float]]) -> tuple[int | str, float, float]:
    """Run ``action``; its status and seconds, and the largest growth of a worker's RSS (MB) meanwhile."""
    before, peak, done = worker_rss(svc), {}, threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            for pid, rss in worker_rss(svc).items():
                peak[pid] = max(peak.get(pid, 0.0), rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    status, seconds = action()
    time.sleep(0.5)  # what the worker does right after answering counts too
    done.set()
    sampler.join()
    return status, seconds, max((peak[p] - before[p] for p in peak if p in before), default=float("nan"))


def post(base_url: str, body: bytes, timeout: float = 300.0, path: str = "/score") -> tuple[int | str, float]:
    """POST ``body`` to ``path``; the status (or what went wrong) and the seconds it took."""
    import httpx

    t0 = time.perf_counter()
    try:
        r = httpx.post(f"{base_url}{path}", content=body, headers={**AUTH, "Content-Type": "application/json"},
                       timeout=timeout)
        return r.status_code, time.perf_counter() - t0
    except httpx.HTTPError as exc:
        return type(exc).__name__, time.perf_counter() - t0


def huge_header(host: str, port: int, size: int = HEADER_BYTES) -> tuple[int | str, float]:
    """Send a request whose one header is ``size`` bytes, 1 MB at a time, stopping when an answer comes back."""
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=120) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: bench\r\nX-Big: ")
        piece, sent, head = b"a" * (1024 * 1024), 0, b""
        try:
            while sent < size and not select.select([sock], [], [], 0)[0]:
                sock.sendall(piece)
                sent += len(piece)
            if sent >= size:
                sock.sendall(b"\r\n\r\n")
            head = sock.recv(200)
        except OSError as exc:
            return f"{type(exc).__name__} after {sent / 1e6:.0f} MB", time.perf_counter() - t0
    status = head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "closed"
    return (f"{status} after {sent / 1e6:.0f} MB sent"), time.perf_counter() - t0


def phase_table(title: str, phases: dict[str, dict], base: str) -> list[str]:
    """Markdown of each phase's single-voter latency, with p50 and p99 as ratios of phase ``base``'s."""
    first = phases[base]["single"]
    lines = [title, "", "| phase | requests | failed | p50 ms | p99 ms | p50 / base | p99 / base | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, found in phases.items():
        s = found["single"]
        lines.append(f"| {name} | {s['requests']:,} | {s['failed']} | {s['p50']:.1f} | {s['p99']:.1f} | "
                     f"{s['p50'] / first['p50']:.2f} | {s['p99'] / first['p99']:.2f} | {found['load']:.1f} |")
    return lines


def main() -> None:
    args = service_bench_parser(__doc__).parse_args()
    home = temp_home("persuade-load-bench-")
    load_before = os.getloadavg()

    from serving.launcher import ServiceProcess, service_workers

    uri, voters = train_small()
    env = {"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_HASH_KEY": "load-bench-hash-key"}
    phases, hostile = {}, []
    with ServiceProcess(model_uri=uri, api_keys=[KEY], env=env) as svc:
        def phase(name: str, single: int, large: int = 0) -> None:
            with Load(svc.base_url, voters, single, large) as load:
                time.sleep(2)  # warm-up, not counted
                t0 = time.monotonic()
                time.sleep(args.seconds)
                t1 = time.monotonic()
            phases[name] = {"single": load.stats("single", t0, t1), "large": load.stats("large", t0, t1),
                            "load": os.getloadavg()[0]}

        phase(f"{args.clients} clients", args.clients)
        phase("64 clients", 64)
        phase(f"{args.clients} clients + 2 x {LARGE:,}-voter clients", args.clients, 2)
        long_id = [{"voter_id": f"V-{i}"} for i in range(9_999)] + [{"voter_id": "x" * 50_000}]
        attacks = [("10,000 voters, one id of 50,000 characters",
                    lambda: post(svc.base_url, json.dumps({"voters": long_id}).encode())),
                   ("50 MB of empty voters", lambda: post(
                       svc.base_url, b'{"voters": [' + b"{}," * (EMPTY_VOTERS_BYTES // 3) + b"{}]}")),
                   ("100 MB header", lambda: huge_header(svc.host, svc.port))]
        with Load(svc.base_url, voters, args.clients) as load:
            time.sleep(2)
            t0 = time.monotonic()
            for name, attack in attacks:
                status, seconds, growth = rss_growth(svc, attack)
                hostile.append({"attack": name, "status": status, "seconds": seconds, "rss_growth_mb": growth})
                time.sleep(1)
            t1 = time.monotonic()
        phases["hostile"] = {"single": load.stats("single", t0, t1), "load": os.getloadavg()[0]}
        n_workers = service_workers(svc.env)
    svc.cleanup()
    home.cleanup()

    lines = phase_table(f"## Load benchmark ({n_workers} workers, single-voter requests unless said)", phases,
                        f"{args.clients} clients")
    large = phases[f"{args.clients} clients + 2 x {LARGE:,}-voter clients"]["large"]
    lines += ["", f"{LARGE:,}-voter requests beside them: {large['requests']} answered, {large['failed']} failed, "
              f"median {large['p50'] / 1000:.2f} s.", "",
              "| hostile request (16 single-voter clients running) | answer | seconds | worker RSS peak growth MB |",
              "|---|---|---:|---:|"]
    for row in hostile:
        lines.append(f"| {row['attack']} | {row['status']} | {row['seconds']:.2f} | {row['rss_growth_mb']:.0f} |")
    publish([*lines, ""], command=f"bench/load_bench.py --clients {args.clients} --seconds {args.seconds:g}",
            load=load_before[0], out=args.out)


if __name__ == "__main__":
    main()
