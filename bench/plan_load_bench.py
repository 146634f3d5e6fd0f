"""Plan load benchmark: single-voter ``/score`` latency beside large ``POST /plan`` requests, and a plan's memory.

The ``/plan`` phases of ``bench/load_bench.py`` (whose clients, model and RSS probe it imports):
against a real ``bentoml serve`` on 127.0.0.1 serving the small synthetic model (trained into a
fresh temp store first), with the same lightweight aiohttp client:

1. ``--clients`` (16) clients scoring one voter per request in a loop: the base p50 and p99;
2. the same clients while two clients post 5,000-voter ``/plan`` requests in a loop (budget
   ``--budget``): the single-voter p50 and p99, and the plans' latency;
3. for comparison, in the same run, phase 3 of ``load_bench.py``: the same clients while two
   clients score 5,000 voters per ``/score`` request;
4. while 16 single-voter clients run, one at a time: 10,000 voters of which one has a
   50,000-character id (a 422), then 10,000 voters whose ids are all 128 characters (the
   limit; planned): each one's status, seconds and the largest growth of a worker's RSS
   while it ran (sampled every 50 ms), and the single-voter p99 meanwhile.

Ratios divide a phase's p50/p99 by phase 1's. The load average is printed: on a shared
machine latencies move with it.

Usage::

    PERSUADE_THREADS=1 .venv/bin/python bench/plan_load_bench.py [--clients 16] [--seconds 15]
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_home import publish, service_bench_parser, temp_home
from load_bench import KEY, LARGE, Load, phase_table, post, rss_growth, train_small  # bench/ is on the path above

N_HOSTILE = 10_000


def plan_bodies(voters: list[dict], budget: float) -> list[bytes]:
    """Two 5,000-voter ``/plan`` bodies (ids unique within each)."""
    return [json.dumps({"voters": [{**voters[(k * LARGE + i) % len(voters)], "voter_id": f"P{k}-{i}"}
                                   for i in range(LARGE)], "budget": budget}).encode() for k in range(2)]


def main() -> None:
    parser = service_bench_parser(__doc__)
    parser.add_argument("--budget", type=float, default=500.0, help="budget of each 5,000-voter plan")
    args = parser.parse_args()
    home = temp_home("persuade-plan-load-bench-")
    load_before = os.getloadavg()

    from serving.launcher import ServiceProcess, service_workers

    uri, voters = train_small()
    env = {"PERSUADE_RELOAD_SECONDS": "0", "PERSUADE_HASH_KEY": "plan-load-bench-hash-key"}
    phases, hostile = {}, []
    with ServiceProcess(model_uri=uri, api_keys=[KEY], env=env) as svc:
        def phase(name: str, planners: int, scorers: int = 0) -> None:
            plans = Load(svc.base_url, voters, 0, planners)
            plans.url, plans.bodies["large"] = f"{svc.base_url}/plan", plan_bodies(voters, args.budget)
            with Load(svc.base_url, voters, args.clients, scorers) as load, plans:
                time.sleep(2)  # warm-up, not counted
                t0 = time.monotonic()
                time.sleep(args.seconds)
                t1 = time.monotonic()
            phases[name] = {"single": load.stats("single", t0, t1), "load": os.getloadavg()[0],
                            "large": plans.stats("large", t0, t1) if planners else load.stats("large", t0, t1)}

        phase(f"{args.clients} clients", 0)
        phase(f"{args.clients} clients + 2 x {LARGE:,}-voter /plan clients", 2)
        phase(f"{args.clients} clients + 2 x {LARGE:,}-voter /score clients", 0, 2)
        long_id = [{**voters[i % len(voters)], "voter_id": f"V-{i}"} for i in range(N_HOSTILE - 1)]
        long_id.append({"voter_id": "x" * 50_000})
        at_limit = [{**voters[i % len(voters)], "voter_id": f"{i:0128d}"} for i in range(N_HOSTILE)]
        attacks = [("10,000 voters, one id of 50,000 characters", {"voters": long_id, "budget": args.budget}),
                   ("10,000 voters, every id 128 characters", {"voters": at_limit, "budget": args.budget})]
        with Load(svc.base_url, voters, args.clients) as load:
            time.sleep(2)
            t0 = time.monotonic()
            for name, request in attacks:
                body = json.dumps(request).encode()
                status, seconds, growth = rss_growth(svc, lambda body=body: post(svc.base_url, body, path="/plan"))
                hostile.append({"request": name, "status": status, "seconds": seconds, "rss_growth_mb": growth})
                time.sleep(1)
            t1 = time.monotonic()
        phases["large /plan requests, one at a time"] = {"single": load.stats("single", t0, t1),
                                                         "load": os.getloadavg()[0]}
        n_workers = service_workers(svc.env)
    svc.cleanup()
    home.cleanup()

    lines = phase_table(f"## Plan load benchmark ({n_workers} workers, single-voter /score requests)", phases,
                        f"{args.clients} clients")
    for kind in ("/plan", "/score"):
        large = phases[f"{args.clients} clients + 2 x {LARGE:,}-voter {kind} clients"]["large"]
        lines += ["", f"{LARGE:,}-voter {kind} requests beside them: {large['requests']} answered, "
                  f"{large['failed']} failed, median {large['p50'] / 1000:.2f} s."]
    lines += [f"(plans: budget {args.budget:g})", "",
              f"| /plan request ({args.clients} single-voter clients running) | answer | seconds | "
              "worker RSS peak growth MB |", "|---|---|---:|---:|"]
    for row in hostile:
        lines.append(f"| {row['request']} | {row['status']} | {row['seconds']:.2f} | {row['rss_growth_mb']:.0f} |")
    publish([*lines, ""], command=f"bench/plan_load_bench.py --clients {args.clients} --seconds {args.seconds:g} "
            f"--budget {args.budget:g}", load=load_before[0], out=args.out)


if __name__ == "__main__":
    main()
