"""Serving benchmark: scores and SHAP reasons in-process and over HTTP, on GGL.

Measures, in one run (medians of repeats; every ratio is against a baseline measured in
the same run, on the same machine):

1. in-process scoring + explanation of every arm for a 10,000-voter segment, voters/s:
   the service's path (``SegmentScorer``: read, score, explain all arms, top-5 reasons,
   JSON) against the straightforward one (``ScoringModel.score`` + LightGBM's own TreeSHAP,
   ``pred_contrib``, per arm);
2. the same segment through HTTP (``POST /score``, explain on), voters/s, against (1);
3. single-voter requests with explain on, 1 and 16 concurrent clients: requests/s, p50 and
   p99 latency, for the service (adaptive batching ``queue``, and BentoML's dispatcher
   ``bentoml``) and for a plain one-worker BentoML service with default settings
   (``bench/serve_baseline.py``). The load client runs on the same machine (loopback only,
   bounded in requests and time) and its CPU counts.

Usage::

    .venv/bin/python bench/serve_bench.py            # full run (trains GGL first if needed)
    .venv/bin/python bench/serve_bench.py --quick    # fewer repeats and requests

The model is ``--model`` (default ``models:/persuade-ggl2008@champion``) in the store of
``--home`` (default: a fresh temp folder, where GGL is trained with configs/ggl2008.yaml).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

KEY = "bench-key"
SEGMENT = 10_000


@dataclass
class Load:
    """Result of one load run."""

    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def load(url: str, body: bytes, clients: int, requests: int, max_seconds: float, warmup: int = 50) -> Load:
    """``clients`` concurrent clients POST ``body`` until ``requests`` are done or time is up."""
    import aiohttp

    if urlparse(url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError(f"the load client only targets the loopback interface, not {url}")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}

    async def run() -> Load:
        latencies: list[float] = []
        errors = 0
        sent = 0
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
            async def one() -> None:
                nonlocal errors
                started = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

            for _ in range(warmup):
                await one()
            latencies.clear()
            errors = 0
            deadline = time.monotonic() + max_seconds

            async def client() -> None:
                nonlocal sent
                while sent < requests and time.monotonic() < deadline:
                    sent += 1
                    await one()

            started = time.perf_counter()
            await asyncio.gather(*(client() for _ in range(clients)))
            return Load(len(latencies), errors, time.perf_counter() - started, latencies)

    return asyncio.run(run())


def median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def ensure_model(uri: str) -> None:
    """Train and promote GGL into the current store if ``uri`` does not resolve."""
    from serving.registry import resolve
    from serving.store import use_store

    use_store()
    try:
        resolve(uri)
        return
    except Exception:  # noqa: BLE001 - MLflow raises its own types for a missing model
        pass
    print(f"{uri} not found in {os.environ.get('PERSUADE_HOME')}: training GGL (a few minutes)...", flush=True)
    from training.promotion import promote
    from training.run import train

    outcome = train(ROOT / "configs" / "ggl2008.yaml")
    promote(outcome.model_name, version=outcome.version)


def segment_records(model, n: int) -> list[dict]:
    import json

    import pandas as pd

    frame = pd.read_parquet(ROOT / "data" / "ggl2008" / "ggl2008.parquet").head(n)
    return json.loads(frame[[model.id_column, *model.input_features]].to_json(orient="records"))


def in_process(model, ref, voters: list[dict], repeats: int) -> dict[str, float]:
    import pandas as pd

    from serving.api import encode
    from serving.scoring import SegmentScorer

    scorer = SegmentScorer(model, ref)
    frame = pd.DataFrame(voters)

    def baseline() -> None:
        scores = model.score(frame, allow_missing=True)
        Xu = model.uplift_inputs(model.transform(frame, allow_missing=True), scores["turnout"].to_numpy())
        for arm in model.arms:
            model.uplift[arm.label].predict(Xu, pred_contrib=True)

    n = len(voters)
    return {
        "baseline": n / median_time(baseline, repeats),
        "service_explain": n / median_time(lambda: encode(scorer.score_request(voters, True, 5)), repeats),
        "service_scores": n / median_time(lambda: encode(scorer.score_request(voters, False, 5)), repeats),
        "shared_trees": float(scorer.ensembles.fast),
    }


def http_segment(base_url: str, voters: list[dict], repeats: int, explain: bool) -> float:
    import httpx
    import orjson

    body = orjson.dumps({"voters": voters, "explain": explain, "top_k": 5})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    with httpx.Client(timeout=300) as client:
        def post() -> httpx.Response:
            r = client.post(f"{base_url}/score", content=body, headers=headers)
            r.raise_for_status()
            return r

        assert len(post().json()["scores"]) == len(voters)  # warm-up, and a check of the answer
        return len(voters) / median_time(post, repeats)


def single_voter(base_url: str, voter: dict, quick: bool) -> dict[int, list[Load]]:
    import orjson

    body = orjson.dumps({"voters": [voter], "explain": True, "top_k": 5})
    runs = 1 if quick else 3
    out = {}
    for clients, requests in ((1, 300 if quick else 1000), (16, 1500 if quick else 4000)):
        out[clients] = [load(f"{base_url}/score", body, clients, requests, max_seconds=60) for _ in range(runs)]
    return out


def summarize(runs: list[Load]) -> tuple[float, float, float, int]:
    return (statistics.median(r.rps for r in runs), statistics.median(r.pct(0.50) for r in runs),
            statistics.median(r.pct(0.99) for r in runs), sum(r.errors for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and requests")
    parser.add_argument("--model", default="models:/persuade-ggl2008@champion")
    parser.add_argument("--home", type=Path, default=None, help="PERSUADE_HOME with the MLflow store "
                        "(default: a temp folder; GGL is trained there)")
    parser.add_argument("--workers", type=int, default=1, help="service worker processes")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args()
    tmp = None
    if args.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="persuade-serve-bench-")
        args.home = Path(tmp.name)
    os.environ["PERSUADE_HOME"] = str(args.home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("BENTOML_HOME", str(args.home / "bentoml"))
    repeats = 3 if args.quick else 7
    load_before = os.getloadavg()
    started = time.perf_counter()

    ensure_model(args.model)
    from serving.launcher import ServiceProcess
    from serving.registry import load_scoring_model

    model, ref = load_scoring_model(args.model)
    voters = segment_records(model, SEGMENT)
    inproc = in_process(model, ref, voters, repeats)

    env = {"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_WORKERS": str(args.workers)}
    results: dict[str, dict[int, list[Load]]] = {}
    with ServiceProcess(model_uri=args.model, api_keys=[KEY], env=env) as svc:
        http_explain = http_segment(svc.base_url, voters, repeats, explain=True)
        http_scores = http_segment(svc.base_url, voters, repeats, explain=False)
        results["persuade (batching: queue)"] = single_voter(svc.base_url, voters[0], args.quick)
    if not args.quick:
        with ServiceProcess(model_uri=args.model, api_keys=[KEY], env={**env, "PERSUADE_BATCHING": "bentoml"}) as svc:
            results["persuade (batching: bentoml dispatcher)"] = single_voter(svc.base_url, voters[0], args.quick)
    with ServiceProcess(model_uri=args.model, service="bench.serve_baseline:Baseline") as svc:
        results["baseline: plain BentoML service"] = single_voter(svc.base_url, voters[0], args.quick)

    lines = [
        f"## Serving benchmark ({ref.name} v{ref.version}, {len(model.arms)} arms, "
        f"{len(model.feature_names)} features; shared-tree explanation: {'yes' if inproc['shared_trees'] else 'no'})",
        "",
        f"Segment: {SEGMENT:,} GGL voters; explain = every arm, top 5 reasons; medians of {repeats} repeats.",
        "",
        "| path | voters/s | ratio |",
        "|---|---:|---:|",
        f"| in-process baseline: `ScoringModel.score` + LightGBM `pred_contrib` per arm | {inproc['baseline']:,.0f} "
        "| 1.00 |",
        f"| in-process service path, explain (read, score, reasons, JSON) | {inproc['service_explain']:,.0f} | "
        f"{inproc['service_explain'] / inproc['baseline']:.2f} |",
        f"| in-process service path, scores only | {inproc['service_scores']:,.0f} | "
        f"{inproc['service_scores'] / inproc['baseline']:.2f} |",
        f"| HTTP `POST /score`, explain (vs in-process service path) | {http_explain:,.0f} | "
        f"{http_explain / inproc['service_explain']:.2f} |",
        f"| HTTP `POST /score`, scores only (vs in-process scores only) | {http_scores:,.0f} | "
        f"{http_scores / inproc['service_scores']:.2f} |",
        "",
        "Single-voter requests, explain on (load client on the same machine):",
        "",
        "| service | clients | requests/s | p50 ms | p99 ms | errors | req/s vs baseline |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {c: summarize(runs)[0] for c, runs in results["baseline: plain BentoML service"].items()}
    for name, per_clients in results.items():
        for clients, runs in per_clients.items():
            rps, p50, p99, errors = summarize(runs)
            lines.append(f"| {name} | {clients} | {rps:,.0f} | {p50:.1f} | {p99:.1f} | {errors} | "
                         f"{rps / base[clients]:.2f} |")
    load_after = os.getloadavg()
    lines += ["", f"Machine: {os.cpu_count()} cores; load average before {load_before[0]:.2f}, after "
              f"{load_after[0]:.2f}; service workers: {args.workers}; total run {time.perf_counter() - started:.0f} s.",
              f"Command: `.venv/bin/python bench/serve_bench.py{' --quick' if args.quick else ''}"
              f"{f' --workers {args.workers}' if args.workers != 1 else ''}`"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
