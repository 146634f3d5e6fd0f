"""Fault benchmark: bad model versions and a killed worker under concurrent clients (issue 20).

Against a real ``bentoml serve`` on 127.0.0.1 (default workers, polling the alias every
second) that follows ``models:/persuade-fault-bench@champion``, while ``--clients``
concurrent clients (default 16) score one voter per request in a loop:

1. the alias is moved, in turn, to a version whose LightGBM file has a ``nan`` leaf, one whose
   two arm files were swapped in the artifact store, and one with a file deleted there (see
   ``tests/model_faults.py``); for each: requests, failed requests (target 0), which
   versions answered, and what ``/model`` says;
2. one worker is killed with SIGKILL: requests and failed requests from 5 s before the kill
   until ``--seconds`` after its replacement has loaded its model (target: under 1% failed),
   and the requests answered while it was down.

The model is a small synthetic campaign (4,000 voters, the T-learner) trained into a fresh
temp store first. A failed request is any answer but 200, or no answer.

Usage::

    PERSUADE_THREADS=1 .venv/bin/python bench/fault_bench.py [--clients 16] [--seconds 15]
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the fault helpers and the small campaign the tests use
from bench_home import publish, service_bench_parser, temp_home  # noqa: E402 - bench/ is the script's folder

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NAME = "persuade-fault-bench"
KEY = "fault-bench-key"
VOTER = {"voter_id": "V-1", "age": 44, "hh_size": 2, "urbanicity": "rural"}
WAIT = 300.0  # seconds to wait for a worker's refusal or restart (a bound, then the bench gives up)


class Clients:
    """``n`` concurrent clients POSTing one voter to ``/score`` in a loop (aiohttp, in a thread)."""

    def __init__(self, base_url: str, n: int):
        if urlparse(base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the load client only targets the loopback interface, not {base_url}")
        self.url, self.n = f"{base_url}/score", n
        self.answers: list[tuple[float, int | None, str | None]] = []  # (time, status or None, version)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _client(self, session) -> None:
        import aiohttp

        while not self._stop.is_set():
            try:
                async with session.post(self.url, json={"voters": [VOTER]},
                                        headers={"Authorization": f"Bearer {KEY}"}) as r:
                    body = await r.json() if r.status == 200 else None
                    self.answers.append((time.monotonic(), r.status, body["model"]["version"] if body else None))
            except (TimeoutError, aiohttp.ClientError, ValueError):
                self.answers.append((time.monotonic(), None, None))
                await asyncio.sleep(0.01)

    async def _run(self) -> None:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.n), timeout=timeout) as session:
            await asyncio.gather(*(self._client(session) for _ in range(self.n)))

    def start(self) -> Clients:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=120)

    def window(self, start: float, stop: float) -> dict:
        inside = [a for a in self.answers if start <= a[0] < stop]
        failed = sum(status != 200 for _, status, _ in inside)
        return {"requests": len(inside), "failed": failed, "share": failed / max(len(inside), 1),
                "versions": sorted({v for _, status, v in inside if status == 200})}


def wait_until(check, timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def train_small() -> tuple:
    """The small synthetic model, trained and loaded, and five voters of its input."""
    from small_model_fixtures import write_small_campaign

    from serving.registry import load_scoring_model
    from training.run import train

    campaign = write_small_campaign(Path(os.environ["PERSUADE_HOME"]) / "data", model_name=f"{NAME}-trained",
                                    name="fault-bench")
    outcome = train(campaign.config_path)
    model = load_scoring_model(outcome.model_uri)[0]
    return model, campaign.voter_file.head(5)[["voter_id", *model.input_features]]


def main() -> None:
    args = service_bench_parser(__doc__, "traffic after each refusal / restart").parse_args()
    home = temp_home("persuade-fault-bench-")
    load_before = os.getloadavg()
    service_tmp = Path(home.name) / "tmp"  # the service's TMPDIR: its persuade-serve-* folders land here
    service_tmp.mkdir()
    started = time.perf_counter()

    from mlflow.tracking import MlflowClient
    from model_faults import register_faulty_versions

    from serving.launcher import ServiceProcess, service_workers

    model, example = train_small()
    versions = register_faulty_versions(model, example, NAME)
    client = MlflowClient()
    client.set_registered_model_alias(NAME, "champion", versions["good"])
    n_workers = service_workers()
    env = {"PERSUADE_RELOAD_SECONDS": "1", "TMPDIR": str(service_tmp), "PERSUADE_HASH_KEY": "fault-bench-hash-key"}
    rows, kill = [], {}
    with ServiceProcess(model_uri=f"models:/{NAME}@champion", api_keys=[KEY], env=env) as svc, svc.client(KEY) as http:
        wait_until(lambda: svc.log.count("now serving it") == n_workers)
        load = Clients(svc.base_url, args.clients).start()
        try:
            time.sleep(5)
            for fault in ("nan_leaf", "swapped", "deleted"):
                version = versions[fault]
                t0 = time.monotonic()
                client.set_registered_model_alias(NAME, "champion", version)
                refused = f"version {version} failed"
                all_refused = wait_until(lambda r=refused: svc.log.count(r) >= n_workers)
                time.sleep(args.seconds)
                card = http.get("/model").json()
                rows.append({"fault": fault, "version": version, **load.window(t0, time.monotonic()),
                             "refused_by": svc.log.count(refused), "all_refused": all_refused,
                             "card_version": card.get("version"), "reload": card.get("reload", {})})
            loaded, pids = svc.log.count("now serving it"), sorted(svc.worker_pids())
            t0 = time.monotonic()
            time.sleep(5)
            killed = time.monotonic()
            os.kill(pids[0], signal.SIGKILL)
            back = wait_until(lambda: svc.log.count("now serving it") > loaded)
            replaced = time.monotonic()
            time.sleep(args.seconds)
            kill = {**load.window(t0, time.monotonic()), "back": back, "down_s": replaced - killed,
                    "while_down": load.window(killed, replaced)}
        finally:
            load.stop()
    leftovers = sorted(p.name for p in service_tmp.glob("persuade-serve-*"))
    svc.cleanup()
    home.cleanup()

    lines = [f"## Fault benchmark ({args.clients} clients, {n_workers} workers, alias polled every second)", "",
             "| version pushed to the alias | requests | failed | versions that answered | `/model` reload |",
             "|---|---:|---:|---|---|"]
    for row in rows:
        reload = row["reload"]
        lines.append(f"| {row['fault'].replace('_', ' ')} (v{row['version']}) | {row['requests']:,} | {row['failed']} "
                     f"| {', '.join(row['versions'])} | {reload.get('state')}, failed_version "
                     f"{reload.get('failed_version')}: {reload.get('message', '')[:240]} |")
    down = kill["while_down"]
    lines += ["", "| SIGKILL of one worker | requests | failed | failed share | answered while it was down |",
              "|---|---:|---:|---:|---:|",
              f"| 5 s before the kill to {args.seconds:.0f} s after its replacement loaded | {kill['requests']:,} | "
              f"{kill['failed']} | {kill['share']:.2%} | {down['requests'] - down['failed']:,} of "
              f"{down['requests']:,} ({kill['down_s']:.1f} s) |",
              "", f"Each bad version refused by {', '.join(str(r['refused_by']) for r in rows)} worker(s); "
              f"replacement loaded: {'yes' if kill['back'] else 'no'}; `persuade-serve-*` temp folders left: "
              f"{len(leftovers)}."]
    publish(lines, command=f"bench/fault_bench.py --clients {args.clients} --seconds {args.seconds:g}",
            load=load_before[0], out=args.out, note=f"total {time.perf_counter() - started:.0f} s; ")


if __name__ == "__main__":
    main()
