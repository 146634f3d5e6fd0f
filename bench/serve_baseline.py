"""The baseline of ``bench/serve_bench.py``: a plain BentoML service, default settings.

What a first version of the service would look like: one worker, a sync endpoint (BentoML's
default of one request at a time), no batching, pandas per request, ``ScoringModel.score``
and one ``ScoringModel.explain`` (LightGBM TreeSHAP) per arm, the response built as Python
objects and serialized by BentoML. Same request and response content as ``POST /score``.
No authentication: it only ever listens on 127.0.0.1 during the benchmark.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
import pandas as pd

from serving.registry import load_scoring_model
from serving.store import use_store


@bentoml.service
class Baseline:
    def __init__(self) -> None:
        use_store()
        self.model, self.ref = load_scoring_model(os.environ["PERSUADE_MODEL_URI"])

    @bentoml.api
    def score(self, voters: list[dict], explain: bool = False, top_k: int = 5) -> dict:
        model = self.model
        frame = pd.DataFrame(voters)
        scores = model.score(frame, allow_missing=True)
        X = model.transform(frame, allow_missing=True)
        turnout = scores["turnout"].to_numpy()
        explained = {a.label: model.explain(X, a.label, turnout) for a in model.arms} if explain else {}
        Xu = model.uplift_inputs(X, turnout)
        rank = scores["best_uplift"].rank(ascending=False, method="first").astype(int)
        out = []
        for i, row in scores.iterrows():
            voter = {"voter_id": row["voter_id"], "turnout": row["turnout"],
                     "uplift": {a.label: row[f"uplift_{a.slug}"] for a in model.arms},
                     "best_arm": row["best_arm"], "best_uplift": row["best_uplift"], "rank": int(rank[i])}
            if explain:
                voter["reasons"] = {}
                for arm, contributions in explained.items():
                    phi = contributions[i, :-1]
                    top = np.argsort(-np.abs(phi), kind="stable")[:top_k]
                    voter["reasons"][arm] = {"base_value": contributions[i, -1], "top": [
                        {"feature": model.feature_names[j], "value": _plain(Xu.iloc[i, j]), "contribution": phi[j]}
                        for j in top]}
            out.append(voter)
        return {"model": {"name": self.ref.name, "version": self.ref.version, "run_id": self.ref.run_id},
                "scores": out}


def _plain(value):
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return value if isinstance(value, str) else float(value)
