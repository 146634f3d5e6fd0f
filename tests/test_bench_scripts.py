"""Every ``bench/`` script still imports: the benchmarks BENCHMARKS.md quotes can be run again.

A script's imports are checked in one child process (scripts set environment variables at
import, which must not reach the tests): each ``bench/*.py`` is loaded as a module, not run.
``cycle_bench`` and ``measure_bench`` imported a consent helper, and ``selection_bench`` a
name of ``training.fit``, that refactors had moved; nothing noticed until a benchmark was
run again.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
LOAD_ALL = """
import importlib.util, sys, traceback
failed = []
for path in sys.argv[1:]:
    name = "bench_" + path.rsplit("/", 1)[-1][:-3]
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # as an import does (dataclasses look it up)
    try:
        spec.loader.exec_module(module)
    except Exception:
        failed.append(path + ": " + traceback.format_exc(limit=1).strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_bench_script_imports(tmp_path):
    scripts = sorted(str(p) for p in (PROJECT / "bench").glob("*.py"))
    assert len(scripts) >= 15
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT), "MLFLOW_DISABLE_TELEMETRY": "true",
           "BENTOML_DO_NOT_TRACK": "true", "HOME": str(tmp_path)}  # caches (matplotlib's) go to the temp home
    done = subprocess.run([sys.executable, "-c", LOAD_ALL, *scripts], capture_output=True, text=True, cwd=PROJECT,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
