"""The list report (``persuade report --scores FILE``): one scored list or contact plan.

How many voters were scored, suppressed (by reason) and targeted per arm, the top reasons
behind targeting, the expected incremental outcomes, and which model, data and consent table
produced it (:class:`serving.provenance.ScoreProvenance`). A contact plan (``persuade plan``,
recognised by its ``persuade.plan`` metadata) is reported as a plan: voters considered,
suppressed and contacted per arm and channel, budget and spend, the expected incremental
outcomes with their interval, the solver's bound and gap, the top reasons and its provenance.
A list made with a model whose gates failed says so first and promises no expected gain.
Aggregates only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd

from features.consent import (
    suppression_counts,
)
from features.table_files import open_dataset
from serving.batch import input_columns
from serving.bundle import CONTROL_ARM, ScoringModel
from serving.planning import SUPPRESSION_KEYS
from serving.provenance import ScoreProvenance, now_utc
from serving.registry import ModelRef
from training import report_html as h
from training.list_blocks import drift_sections, gates_failed, hidden_gains, plan_checks, plan_sensitivity
from training.list_inputs import (
    PLAN_OUTCOMES,
    ListFile,
    bar_chart,
    consent_text,
    load_list_model,
    model_facts,
    model_mismatch,
    model_uri_for,
    per_incremental,
    priority_chart,
    priority_steps,
    without_consent,
)
from training.program_report import design_section
from training.promotion import failed_gates
from training.report_blocks import PRIVACY_FOOTER, outcome_units, reason_legend, suppression_pivot


class ListReport:
    """The explanation report of one scored list or contact plan.

    Parameters
    ----------
    explain_rows : int
        Targeted voters per arm sampled to tally the top reasons behind targeting.
    seed : int
        Seed of that sample.

    Attributes
    ----------
    summary_ : DataFrame
        Per arm (after :meth:`build`): voters eligible, suppressed and targeted, expected
        incremental outcomes and cost for scores; contacts, cost, expected incremental
        outcomes and expected reached for a plan.
    failed_ : list of str
        The gates the list's model failed (after :meth:`build`): the report then shows none
        of its expected gains and says why.
    """

    def __init__(self, explain_rows: int = 2000, seed: int = 0):
        self.explain_rows = explain_rows
        self.seed = seed

    def build(self, scores_path: str | Path, model_uri: str | None = None,
              input_path: str | Path | None = None) -> str:
        """The report's HTML for the scores or the plan at ``scores_path``.

        Parameters
        ----------
        scores_path : str or Path
            Scores (``persuade score``) or a contact plan (``persuade plan``).
        model_uri : str, optional
            The model that produced the list (default: from its provenance).
        input_path : str or Path, optional
            The voter file it was made from, to explain the targeting (default: from its
            provenance).

        Returns
        -------
        str
            A self-contained HTML document (aggregates only).
        """
        listed = ListFile.read(scores_path)
        if listed.plan is not None:
            return self._build_plan(listed, model_uri, input_path)
        return self._build_scores(listed, model_uri, input_path)

    def write(self, scores_path: str | Path, output: str | Path | None = None, model_uri: str | None = None,
              input_path: str | Path | None = None) -> Path:
        """Build the report and write it (default: ``<list stem>_report.html`` beside the list)."""
        text = self.build(scores_path, model_uri, input_path)
        scores_path = Path(scores_path)
        output = Path(output) if output else scores_path.with_name(f"{scores_path.stem}_report.html")
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
        return output

    @staticmethod
    def _page(title: str, subtitle: str, ref: ModelRef, sections: list[h.Section]) -> str:
        made = f"{subtitle} by {ref.name or ref.uri} version {ref.version or '-'} · generated {now_utc()}"
        return h.page(title, made, sections, footer=PRIVACY_FOOTER)

    @staticmethod
    def _provenance(title: str, head: Mapping[str, str], model: ScoringModel, ref: ModelRef,
                    recorded: Mapping[str, Any] | None, tail: Mapping[str, str], notes: list[str]) -> h.Section:
        facts = {**head, **model_facts(model, ref), **tail}
        return h.Section("provenance", title, h.key_values(facts) + "".join([*model_mismatch(ref, recorded), *notes]))

    # -- a scored list ------------------------------------------------------------------
    def _build_scores(self, listed: ListFile, model_uri: str | None, input_path: str | Path | None) -> str:
        scores, path = listed.table, listed.path
        provenance = ScoreProvenance.read(path)
        recorded = provenance.model if provenance else None
        missing = (f"{path.name}: no provenance file ({ScoreProvenance.path_for(path).name})" if provenance is None
                   else f"{path.name}: its provenance names no model")
        model, ref = load_list_model(model_uri_for(model_uri, recorded, missing))
        self.failed_ = failed_gates(model.metadata)
        tail: dict[str, str] = {}
        notes = [gates_failed(ref, self.failed_)] if self.failed_ else []
        if provenance is not None:
            tail = {"input file": Path(provenance.input).name, "scored at": provenance.scored_at,
                    "consent table": consent_text(provenance.consent)}
        else:
            notes.append(h.paragraph("No provenance file was found beside the scores: the model was given on the "
                                     "command line.", "warn"))
        source = input_path or (provenance.input if provenance else None)
        self.summary_ = self._summary(scores, model)
        sections = [
            self._provenance("Which data and model produced this list",
                             {"scores file": path.name, "voters scored": f"{len(scores):,}"},
                             model, ref, recorded, tail, notes),
            self._targeting(scores, model),
            self._suppression(scores, model),
            self._reasons(scores.voter_id, scores.best_arm, model, source, "targeted"),
            *drift_sections(provenance),  # the scored voters against the training population
        ]
        return self._page(f"List report: {path.name}", f"{len(scores):,} voters scored", ref, sections)

    def _summary(self, scores: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
        rows = []
        n = len(scores)
        for arm in model.arms:
            elig_col = f"eligible_{arm.slug}"
            eligible = int(scores[elig_col].sum()) if elig_col in scores.columns else n
            target = scores.best_arm == arm.label
            expected = float(scores.loc[target, "best_uplift"].sum())
            cost = arm.cost * int(target.sum())
            rows.append({"arm": arm.label, "delivery": arm.delivery, "eligible": eligible,
                         "suppressed": n - eligible, "targeted": int(target.sum()),
                         "share_targeted": target.mean() if n else 0.0,
                         "mean_uplift_targeted": float(scores.loc[target, "best_uplift"].mean()) if target.any()
                         else float("nan"),
                         "expected_incremental": expected, "cost": cost,
                         "cost_per_incremental": per_incremental(cost, expected)})
        control = scores.best_arm == CONTROL_ARM
        rows.append({"arm": "control (contact nobody)", "delivery": "-", "eligible": n, "suppressed": 0,
                     "targeted": int(control.sum()), "share_targeted": control.mean() if n else 0.0,
                     "mean_uplift_targeted": 0.0, "expected_incremental": 0.0, "cost": 0.0,
                     "cost_per_incremental": float("nan")})
        return pd.DataFrame(rows)

    @staticmethod
    def _budgets(scores: pd.DataFrame, model: ScoringModel,
                 shares: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)) -> pd.DataFrame:
        """Expected incremental outcomes and cost when contacting the top share of the list by best uplift."""
        costs = {a.label: a.cost for a in model.arms}
        ranked = scores[scores.best_arm != CONTROL_ARM].sort_values("best_uplift", ascending=False, kind="stable")
        uplift = ranked.best_uplift.to_numpy()
        cost = ranked.best_arm.map(costs).fillna(0.0).to_numpy(dtype=float)
        rows = []
        for share in shares:
            k = min(round(share * len(scores)), len(ranked))
            gain, spend = float(uplift[:k].sum()), float(cost[:k].sum())
            rows.append({"share_of_list": share, "voters_contacted": k, "expected_incremental": gain, "cost": spend,
                         "cost_per_incremental": per_incremental(spend, gain)})
        return pd.DataFrame(rows)

    def _targeting(self, scores: pd.DataFrame, model: ScoringModel) -> h.Section:
        fmt, units = outcome_units(model)
        s = self.summary_
        total = float(s.expected_incremental.sum())
        body = [
            h.paragraph(f"Each voter is targeted with the arm of the highest positive predicted uplift among the arms "
                        f"they may get; 'control' means no eligible arm is expected to help. Expected incremental "
                        f"outcomes: the sum of the targeted voters' predicted uplift, in {units}."),
            h.table(s, {"share_targeted": h.pct(1), "mean_uplift_targeted": fmt,
                        "expected_incremental": h.number(1), "cost": h.number(2),
                        "cost_per_incremental": h.number(2)}, hide=hidden_gains(self.failed_)),
        ]
        if self.failed_:  # a model whose gates failed promises nothing
            body.append(h.paragraph(f"Expected incremental {units}: not shown, the model failed its gates.", "bad"))
        else:
            body += [
                h.paragraph(f"Expected incremental {units} if every targeted voter is contacted: {total:,.1f}.",
                            "note"),
                h.heading("At a contact budget: the most persuadable voters first"),
                h.table(self._budgets(scores, model), {"share_of_list": h.pct(0), "voters_contacted": h.number(0),
                                                       "expected_incremental": h.number(1), "cost": h.number(2),
                                                       "cost_per_incremental": h.number(2)})]
        body.append(h.figures([h.image(bar_chart(s.arm, s.targeted, "voters targeted", "Targeted voters per arm"),
                                       "Targeted voters per arm")]))
        return h.Section("targeting", "Scored, targeted and expected outcomes", "".join(body))

    def _suppression(self, scores: pd.DataFrame, model: ScoringModel) -> h.Section:
        if not all(f"eligible_{a.slug}" in scores.columns for a in model.arms):
            return h.Section("suppression", "Consent suppression",
                             without_consent(model, "This list was scored", "score"))
        counts = suppression_counts(scores, model.arms)
        return h.Section("suppression", "Consent suppression", h.table(suppression_pivot(counts))
                         + reason_legend(counts.reason))

    # -- a contact plan -----------------------------------------------------------------
    def _build_plan(self, listed: ListFile, model_uri: str | None, input_path: str | Path | None) -> str:
        table, plan, path = listed.table, listed.plan, listed.path
        provenance = plan.get("provenance") or {}
        recorded = provenance.get("model")
        model, ref = load_list_model(model_uri_for(model_uri, recorded, f"{path.name}: the plan's provenance names no "
                                                                 f"model (no uri, nor name and version)"))
        self.failed_ = failed_gates(model.metadata)
        costs, consent, applied = (provenance.get(k) for k in ("costs", "consent", "consent_applied"))
        tail = {"input file": Path(provenance["input"]).name if provenance.get("input") else "-",
                "costs file": Path(costs).name if costs else "the model's costs per arm, no channel capacities",
                "consent table": consent_text(applied) if applied or not consent else Path(consent).name,
                "planned at": provenance.get("planned_at", "-")}
        notes = [] if provenance else [h.paragraph("The plan records no provenance: the model was given on the "
                                                   "command line.", "warn")]
        notes += [gates_failed(ref, self.failed_)] if self.failed_ else []
        self.summary_ = self._plan_arms(table, model)
        sections = [
            self._provenance("Which data and model produced this plan",
                             {"plan file": path.name, "voters considered": f"{plan['voters']:,}"},
                             model, ref, recorded, tail, notes),
            self._plan_outcomes(table, plan, model),
            self._plan_suppression(plan, model, bool(consent or applied)),
            design_section(plan),  # the holdout and exploration (training/program_report.py)
            self._reasons(table.voter_id, table.arm, model, input_path or provenance.get("input"), "contacted"),
        ]
        return self._page(f"Plan report: {path.name}",
                          f"{plan['voters']:,} voters considered, {len(table):,} contacts planned", ref, sections)

    @staticmethod
    def _plan_arms(table: pd.DataFrame, model: ScoringModel) -> pd.DataFrame:
        """Contacts, cost and expected outcomes per arm of the plan, and their total."""
        def row(label: str, channel: str, delivery: str, part: pd.DataFrame) -> dict[str, Any]:
            gain, cost = float(part.expected_gain.sum()), float(part.cost.sum())
            return {"arm": label, "channel": channel, "delivery": delivery, "contacts": len(part),
                    "share_of_contacts": len(part) / len(table) if len(table) else 0.0, "cost": cost,
                    "expected_incremental": gain,
                    "mean_gain_per_contact": gain / len(part) if len(part) else float("nan"),
                    "expected_reached": float(part.p_reached.sum()),
                    "cost_per_incremental": per_incremental(cost, gain)}

        rows = [row(a.label, a.channel, a.delivery, table[table.arm == a.label]) for a in model.arms]
        return pd.DataFrame([*rows, row("total", "-", "-", table)])

    def _plan_outcomes(self, table: pd.DataFrame, plan: Mapping[str, Any], model: ScoringModel) -> h.Section:
        fmt, units = outcome_units(model)
        solver = plan["solver"]
        interval = plan.get("interval")
        spent, budget = float(plan["spent"]), float(plan["budget"])
        totals = {
            "voters considered": f"{plan['voters']:,}",
            "voters contacted": f"{plan['suppression'].get('contacted', len(table)):,}",
            "budget": f"{budget:,.2f}",
            "spent": f"{spent:,.2f} ({spent / budget:.1%} of the budget)" if budget > 0 else f"{spent:,.2f}",
            f"expected incremental {units}": f"{plan['total_expected_gain']:,.2f}",
            "95% interval": f"{interval['low']:,.2f} to {interval['high']:,.2f}" if interval
            else "none (the model carries no hold-out deciles)",
            "LP bound (no plan gains more)": f"{solver.get('lp_bound', float('nan')):,.2f}",
            "gap to the bound": f"{solver.get('gap', float('nan')):,.4f} ({solver.get('rel_gap', float('nan')):.2e} "
                                f"relative)",
            "solver": f"{solver.get('method', '-')}; {solver.get('lp_solves', '-')} LP solves, "
                      f"{solver.get('fractional_voters', '-')} fractional voters",
        }
        if self.failed_:  # a model whose gates failed promises nothing
            for key in (f"expected incremental {units}", "95% interval", "LP bound (no plan gains more)",
                        "gap to the bound"):
                totals.pop(key)
            totals[f"expected incremental {units}"] = "not shown: the model failed its gates"
        channels = pd.DataFrame.from_dict(plan.get("channels") or {}, orient="index")
        channels = channels.rename_axis("channel").reset_index().rename(
            columns={"expected_gain": "expected_incremental"})
        money = {"cost": h.number(2), "expected_incremental": h.number(2), "expected_reached": h.number(1),
                 "cost_per_incremental": h.number(2)}
        body = [
            h.paragraph(f"The plan contacts each chosen voter once, with one arm, so that the expected incremental "
                        f"{units} are as large as possible within the budget and channel capacities; contacts are "
                        f"listed by expected gain per unit cost. Expected gain of a contact: its predicted uplift, "
                        f"scaled by the program's chance of reaching the voter where the channel has a contact-rate "
                        f"model. The LP bound certifies the plan: no plan within these limits is expected to gain "
                        f"more."),
            h.columns(h.key_values(totals), plan_checks(table, plan, model)),
            h.heading("Contacts per arm"),
            h.table(self.summary_, {"share_of_contacts": h.pct(1), "mean_gain_per_contact": fmt, **money},
                    row_class=lambda r: "ref" if r["arm"] == "total" else "", hide=hidden_gains(self.failed_)),
            h.heading("Contacts per channel"),
            h.table(channels, money, hide=hidden_gains(self.failed_)) if len(channels)
            else h.paragraph("Nobody is contacted."),
            *([] if self.failed_ else plan_sensitivity(plan, units)),
            h.heading("If the budget were cut: the plan's priority order"),
            h.paragraph("Contacts in priority order until the share of the budget is spent (the plan itself, cut "
                        "short; a plan re-solved for a smaller budget may do slightly better)."),
            h.table(priority_steps(table, budget), {"share_of_budget": h.pct(0), "contacts": h.number(0), **money},
                    hide=hidden_gains(self.failed_)),
        ]
        arms = self.summary_.iloc[:-1]
        images = [h.image(bar_chart(arms.arm, arms.contacts, "contacts planned", "Contacts per arm"),
                          "Contacts per arm")]
        if len(table) and not self.failed_:
            images.insert(0, h.image(priority_chart(table, plan, units), "Expected gain along the priority order",
                                     "Each step is one contact; the curve flattens as less efficient contacts "
                                     "are added."))
        body.append(h.figures(images))
        return h.Section("plan", "Budget, contacts and expected outcomes", "".join(body))

    @staticmethod
    def _plan_suppression(plan: Mapping[str, Any], model: ScoringModel, consent_applied: bool) -> h.Section:
        counts = plan["suppression"]
        voters = max(int(plan["voters"]), 1)
        outcomes = pd.DataFrame([{"outcome": k, "voters": int(counts.get(k, 0)),
                                  "share_of_considered": int(counts.get(k, 0)) / voters, "meaning": PLAN_OUTCOMES[k]}
                                 for k in SUPPRESSION_KEYS])
        body = [h.heading("Every voter considered, once"), h.table(outcomes, {"share_of_considered": h.pct(1)})]
        not_allowed = pd.DataFrame(sorted((plan.get("not_allowed") or {}).items(), key=lambda kv: -kv[1]),
                                   columns=["reason", "voter_arm_pairs"])
        if not consent_applied:
            body.append(without_consent(model, "This plan was made", "plan", plan.get("contacts_per_arm") or {}))
        body.append(h.heading("(voter, arm) pairs not allowed, by reason"))
        if len(not_allowed):
            body += [h.paragraph("A voter counts once per arm they may not get; such an arm is never planned for "
                                 "them."), h.table(not_allowed), reason_legend(not_allowed.reason)]
        else:
            body.append(h.paragraph("None: every arm was allowed for every voter."))
        return h.Section("suppression", "Voters considered, suppressed and contacted", "".join(body))

    # -- shared -------------------------------------------------------------------------
    def _reasons(self, voter_ids: pd.Series, arms: pd.Series, model: ScoringModel,
                 source: str | Path | None, who: str) -> h.Section:
        """The top SHAP reason of sampled voters per arm (``arms``: each voter's arm), tallied."""
        title = "Top reasons behind targeting"
        if source is None or not Path(source).exists():
            named = f" ({Path(source).name})" if source is not None else ""
            return h.Section("reasons", title, h.paragraph(
                f"The input voter file{named} is not available: pass --input to explain the targeting.", "warn"))
        fmt, _ = outcome_units(model)
        dataset = open_dataset(Path(source))
        features = dataset.to_table(columns=input_columns(model, dataset)).to_pandas()
        features[model.id_column] = features[model.id_column].astype(str)
        features = features.drop_duplicates(model.id_column).set_index(model.id_column)
        voter_ids = voter_ids.astype(str).to_numpy()
        arms = arms.astype(str).to_numpy()
        rng = np.random.default_rng(self.seed)
        body = [h.paragraph(
            f"For up to {self.explain_rows:,} sampled voters {who} with each arm, the feature with the largest "
            f"positive SHAP contribution to that arm's uplift (the top reason), tallied.")]
        images = []
        for arm in model.arms:
            ids = voter_ids[arms == arm.label]
            ids = ids[pd.Index(ids).isin(features.index)]
            if len(ids) == 0:
                body += [h.heading(arm.label), h.paragraph(f"Nobody is {who} with this arm.")]
                continue
            ids = rng.choice(ids, min(self.explain_rows, len(ids)), replace=False)
            X = model.transform(features.loc[ids].reset_index())
            contrib = model.explain(X, arm.label)[:, :-1]
            names = np.asarray(model.feature_names)
            top = names[contrib.argmax(axis=1)]
            tally = (pd.DataFrame({"reason": top, "contribution": contrib.max(axis=1)})
                     .groupby("reason").agg(voters=("contribution", "size"), mean_contribution=("contribution", "mean"))
                     .sort_values("voters", ascending=False).reset_index())
            tally.insert(2, "share", tally.voters / len(ids))
            body += [h.heading(f"{arm.label}: {len(ids):,} {who} voters explained"),
                     h.table(tally, {"share": h.pct(1), "mean_contribution": fmt})]
            shown = tally.head(8)
            images.append(h.image(bar_chart(shown.reason, shown.share * 100, f"% of {who} voters",
                                             f"Top reason: {arm.label}", "#2e7d32", (5.6, 3.2)),
                                  f"Top reasons: {arm.label}"))
        body.append(h.figures(images))
        return h.Section("reasons", title, "".join(body))
