"""Pictures of a run: Qini curves per arm, decile bars, turnout calibration (PNG)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from training.evaluation import qini_points


def qini_curves(
    arm: str, scores: Mapping[str, np.ndarray], y: np.ndarray, treated: np.ndarray, path: Path
) -> Path:
    """One arm's Qini curves for several rankings (learners and references)."""
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for name, score in scores.items():
        x, q = qini_points(score, y, treated)
        ax.plot(x, q * 100, label=name, lw=1.6 if name != "random" else 1.0)
    x, q = qini_points(np.zeros(len(y)), y, treated)
    ax.plot([0, 1], [0, q[-1] * 100], color="grey", ls="--", lw=1, label="random (expected)")
    ax.set_xlabel("share of voters targeted")
    ax.set_ylabel("incremental outcomes per 100 voters")
    ax.set_title(f"Qini curves - {arm} vs control (hold-out)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def decile_bars(arm: str, table: pd.DataFrame, path: Path, units: str = "pp") -> Path:
    """Predicted vs observed uplift by decile of predicted uplift."""
    scale = 100 if units == "pp" else 1
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    x = table.decile.to_numpy()
    ax.bar(x - 0.2, table.predicted_uplift * scale, width=0.4, label="predicted")
    ax.bar(x + 0.2, table.observed_uplift * scale, width=0.4, label="observed",
           yerr=1.96 * table.observed_se * scale, capsize=2)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(x)
    ax.set_xlabel("decile of predicted uplift (1 = highest)")
    ax.set_ylabel(f"uplift ({units})")
    ax.set_title(f"{arm}: predicted vs observed uplift by decile")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def calibration_plot(table: pd.DataFrame, path: Path) -> Path:
    """Turnout calibration by decile of predicted probability."""
    fig, ax = plt.subplots(figsize=(4.8, 4.2), dpi=110)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1)
    ax.plot(table.predicted, table.observed, marker="o")
    ax.set_xlabel("predicted turnout (decile mean)")
    ax.set_ylabel("observed turnout")
    ax.set_title("Turnout calibration (hold-out control)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
