"""How long ``bentoml serve`` takes to answer: the service module's import and the time to ready.

``bentoml serve`` imports ``serving.service`` twice before it answers: once in its
arbiter, which reads the decorator's settings and never serves, and once in each worker,
which then loads the model. What the module imports at its top, the arbiter pays too.

For each of ``--rounds`` rounds:

- **import**: ``python -c "import serving.service"`` in a fresh interpreter (wall time),
  and which heavy packages that import loaded;
- **live / ready**: a one-worker ``bentoml serve`` of ``--model`` on 127.0.0.1
  (:class:`serving.launcher.ServiceProcess`) until ``/livez``, then ``/readyz``, answers 200.

With ``--compare DIR`` (another checkout of persuade, e.g. a ``git worktree`` of an older
commit) each round measures both, alternately, with this venv: medians and their ratio.
Medians on stdout (markdown), each round on stderr. Command (project root; a registered
model, e.g. the one ``make demo`` promotes)::

    .venv/bin/python bench/startup_bench.py --rounds 5 --model models:/persuade-ggl2008@champion --compare /tmp/old
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from serving.launcher import ServiceProcess, service_env  # noqa: E402

HEAVY = ("lightgbm", "mlflow", "sklearn", "scipy", "shap", "sqlalchemy", "pandas")
PROBE = ("import sys, time; t = time.perf_counter(); import serving.service; "
         "print(time.perf_counter() - t); print(' '.join(m for m in {heavy!r} if m in sys.modules))")


def import_seconds(code: Path) -> tuple[float, str]:
    """Wall time of a fresh interpreter's ``import serving.service``, and the heavy packages it loaded."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY)], cwd=code,
                         env=service_env(extra={"PYTHONPATH": str(code)}),
                         capture_output=True, text=True, check=True).stdout.splitlines()
    return time.perf_counter() - started, out[1] if len(out) > 1 else ""


def serve_seconds(code: Path, model: str) -> tuple[float, float]:
    """Seconds from ``bentoml serve`` of the checkout ``code`` to ``/livez`` and to ``/readyz`` (one worker)."""
    svc = ServiceProcess(model_uri=model, api_keys=[secrets.token_hex(8)], wait_ready=False, cwd=code,
                         env={"PERSUADE_WORKERS": "1", "PYTHONPATH": str(code)})
    started = time.perf_counter()
    with svc:
        live = time.perf_counter() - started
        svc.wait("/readyz", svc.timeout)
        ready = time.perf_counter() - started
    svc.cleanup()
    return live, ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="models:/persuade-ggl2008@champion")
    parser.add_argument("--compare", type=Path, help="another checkout, measured alternately")
    args = parser.parse_args()
    codes = {"this checkout": ROOT, **({"compared": args.compare.resolve()} if args.compare else {})}
    rows = {name: {"import": [], "live": [], "ready": []} for name in codes}
    loaded = dict.fromkeys(codes, "")
    for k in range(args.rounds):
        for name, code in codes.items():
            seconds, loaded[name] = import_seconds(code)
            live, ready = serve_seconds(code, args.model)
            for key, value in zip(rows[name], (seconds, live, ready), strict=True):
                rows[name][key].append(value)
            print(f"round {k + 1}, {name}: import {seconds:.2f} s, live {live:.2f} s, ready {ready:.2f} s",
                  file=sys.stderr)
    medians = {name: {key: statistics.median(v) for key, v in row.items()} for name, row in rows.items()}
    names = list(codes)
    print(f"Medians of {args.rounds} rounds, seconds\n")
    print("| measure | " + " | ".join(names) + (" | ratio |" if len(names) == 2 else " |"))
    print("|---|" + "--:|" * (len(names) + (len(names) == 2)))
    for key in ("import", "live", "ready"):
        cells = [f"{medians[name][key]:.2f}" for name in names]
        if len(names) == 2:
            cells.append(f"{medians[names[0]][key] / medians[names[1]][key]:.2f}")
        print(f"| {key} | " + " | ".join(cells) + " |")
    for name in names:
        print(f"\n{name}: `import serving.service` loaded {loaded[name] or 'none of ' + ', '.join(HEAVY)}")


if __name__ == "__main__":
    main()
