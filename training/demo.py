"""``persuade demo``: the main job end to end on the bundled GGL data.

Train -> log to MLflow under mlruns/ -> register -> promote (gates) -> start the
service on 127.0.0.1 -> score a sample segment over HTTP, plan a postcard program for
it (``POST /plan``) and fetch the model report the service serves (``GET /report``) ->
write the list report -> print where to look. Each step runs the same code as the CLI
command of the same name.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
from rich.console import Console
from rich.table import Table

from features.config import RunConfig, load_config
from features.tables import load_experiment
from serving.plan_sensitivity import sensitivity_verdict

SAMPLE_SIZE = 500
PLAN_SHARE = 0.2  # the demo plan's budget: postcards for 20% of the segment


def sample_segment(config: RunConfig, n: int = SAMPLE_SIZE, seed: int = 2006) -> pd.DataFrame:
    """A segment a field tool might send: ids and raw feature columns, nothing else."""
    frame = load_experiment(config)
    cols = [config.id_column, *config.features]
    return frame[cols].sample(n=n, random_state=seed).reset_index(drop=True)


def score_over_http(http: httpx.Client, segment: pd.DataFrame, top_k: int = 3) -> dict:
    """POST the segment to /score with explanations; return the JSON response."""
    body = {"voters": segment.to_dict(orient="records"), "explain": True, "top_k": top_k}
    resp = http.post("/score", json=body)
    resp.raise_for_status()
    return resp.json()


def plan_over_http(http: httpx.Client, segment: pd.DataFrame, budget: float) -> dict:
    """POST the segment to /plan with a budget (the run config's costs) and its sensitivity; return the JSON."""
    body = {"voters": segment.to_dict(orient="records"), "budget": budget, "sensitivity": True}
    resp = http.post("/plan", json=body)
    resp.raise_for_status()
    return resp.json()


def report_over_http(http: httpx.Client) -> bytes:
    """GET /report: the model report of the served model's run."""
    resp = http.get("/report")
    resp.raise_for_status()
    return resp.content


def outcome_units(outcome: str) -> tuple[str, float, str]:
    """(uplift unit, its scale, what is gained) for a response's ``outcome`` kind: turnout or support."""
    return ("pp", 100.0, "votes") if outcome == "turnout" else ("points", 1.0, "support points")


def print_plan(console: Console, plan: dict) -> None:
    """What the plan does with the budget, and how sure it is."""
    gained = outcome_units(plan.get("outcome", "turnout"))[2]
    interval = plan.get("interval") or {}
    spread = f" [95% interval {interval['low']:.1f}, {interval['high']:.1f}]" if interval else ""
    arms = ", ".join(f"{arm} {n}" for arm, n in plan["contacts_per_arm"].items() if n)
    console.print(f"planned {sum(plan['contacts_per_arm'].values())} contacts for budget {plan['budget']:g} "
                  f"(spent {plan['spent']:g}: {arms or 'none'}); expected extra {gained} "
                  f"{plan['total_expected_gain']:.1f}{spread}; LP bound {plan['solver']['lp_bound']:.1f}")
    if plan.get("sensitivity"):
        console.print(sensitivity_verdict(plan["sensitivity"]))


def print_response(console: Console, response: dict) -> None:
    """The response summary a field director would look at first."""
    m = response["model"]
    console.print(f"scored {len(response['scores'])} voters over HTTP with {m['name']} v{m['version']} "
                  f"(run {m['run_id']})")
    summary = response.get("summary", {})
    unit, scale, gained = outcome_units(summary.get("outcome", "turnout"))
    table = Table(title="segment summary")
    table.add_column("arm")
    table.add_column(f"mean uplift ({unit})", justify="right")
    table.add_column(f"expected extra {gained} if all got it", justify="right")
    for arm, mean in summary.get("mean_uplift", {}).items():
        table.add_row(arm, f"{mean * scale:.2f}" if mean is not None else "-",  # null: nobody may get it
                      f"{summary.get('expected_incremental', {}).get(arm, float('nan')):.1f}")
    console.print(table)
    top = sorted(response["scores"], key=lambda s: s["rank"])[:5]
    turnout = any("turnout" in s for s in top)  # a support model without a turnout model has none
    t = Table(title="top 5 voters of the segment")
    for col in ("rank", "voter_id", *(["turnout"] if turnout else []), "best arm", f"uplift ({unit})",
                "top reasons (best arm)"):
        t.add_column(col)
    for s in top:
        reasons = s.get("reasons", {}).get(s["best_arm"], {}).get("top", [])
        text = "; ".join(f"{r['feature']}={r['value']} ({r['contribution'] * scale:+.2f})" for r in reasons)
        t.add_row(str(s["rank"]), s["voter_id"], *([f"{s['turnout']:.2f}"] if turnout else []), s["best_arm"],
                  f"{s['best_uplift'] * scale:.2f}", text)
    console.print(t)


def run_demo(config_path: Path, console: Console, train: Callable[[Path], object], out_dir: Path) -> dict[str, Path]:
    """Run the demo; ``train`` is the CLI's training step (with its progress bar and tables)."""
    from serving.batch import score_file
    from serving.launcher import ServiceProcess
    from serving.provenance import score_provenance
    from serving.registry import load_scoring_model
    from training.list_report import ListReport
    from training.model_report import ModelReport
    from training.promotion import promote
    from training.tracking import configure

    config = load_config(config_path)
    outcome = train(config_path)
    client = configure()
    console.rule("promote")
    p = promote(config.model_name, version=outcome.version, client=client)
    console.print(f"promoted {p.name} version {p.version} to @{p.alias}"
                  + (f" (was version {p.previous})" if p.previous else ""))

    out_dir.mkdir(parents=True, exist_ok=True)
    segment = sample_segment(config)
    segment_path = out_dir / "sample_segment.parquet"
    segment.to_parquet(segment_path, index=False)
    uri = f"models:/{config.model_name}@champion"

    console.rule("model report")
    model_report = ModelReport().write(outcome.run_id, out_dir / "model_report.html", client=client)
    console.print(f"logged to run {outcome.run_id}; the service serves it at GET /report")

    console.rule("serve, score, plan and fetch the report over HTTP")
    key = secrets.token_urlsafe(16)
    with ServiceProcess(model_uri=uri, api_keys=[key]) as svc, svc.client(key) as http:
        console.print(f"service up on {svc.base_url} (bentoml serve, loopback only)")
        response = score_over_http(http, segment)
        plan = plan_over_http(http, segment, budget=PLAN_SHARE * len(segment))
        served_report = report_over_http(http)
    print_response(console, response)
    print_plan(console, plan)
    if served_report != model_report.read_bytes():
        raise RuntimeError("GET /report did not serve the model report just logged to the run")
    console.print(f"GET /report served the model report of run {outcome.run_id} ({len(served_report):,} bytes)")
    http_scores = out_dir / "sample_segment_http_response.json"
    http_scores.write_text(httpx.Response(200, json=response).text)
    http_plan = out_dir / "sample_segment_http_plan.json"
    http_plan.write_text(httpx.Response(200, json=plan).text)

    console.rule("list report")
    scores_path = out_dir / "sample_segment_scores.parquet"
    model, ref = load_scoring_model(uri)  # downloaded to a folder removed when the demo exits
    stats = score_file(model, segment_path, scores_path)
    score_provenance(ref, model, segment_path, stats.rows, None).write(scores_path)
    list_report = ListReport().write(scores_path, out_dir / "list_report.html", uri, segment_path)
    paths = {"model report": model_report.resolve(), "list report": list_report.resolve(),
             "scored list": scores_path.resolve(), "HTTP response": http_scores.resolve(),
             "HTTP plan": http_plan.resolve()}
    from training.tracking import tracking_uri

    console.rule("where to look")
    console.print(f"run id         {outcome.run_id}")
    console.print(f"MLflow UI      .venv/bin/mlflow ui --backend-store-uri {tracking_uri()}")
    for label, path in paths.items():
        console.print(f"{label:<14} {path}")
    return paths
