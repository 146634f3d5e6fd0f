"""persuade over HTTP: turnout, uplift per arm and SHAP reasons for field tools (BentoML).

Run it with ``persuade serve`` (or ``bentoml serve serving.service:Persuade --host 127.0.0.1``).
Environment: the ``PERSUADE_*`` variables of :class:`features.settings.Settings` (their types and
defaults: the model URI, keys, reload interval, workers, body limit, the consent table and rules
(see serving/eligibility.py), the consent ledger and consent-event keys (see
serving/consent_intake.py)), and ``MLFLOW_TRACKING_URI``.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle LightGBM threads must not spin

import anyio.to_thread
import bentoml
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.responses import Response

from features.consent_ledger import ConsentLedger
from features.settings import Settings
from serving import header_limit, heap
from serving.api import (
    ErrorResponse,
    ModelCard,
    ReloadStatus,
    ScoreRequest,
    ScoreResponse,
    Voters,
    encode,
    error_response,
    json_response,
)
from serving.audit import AuditMiddleware, AuditRecord, current_record
from serving.auth import BearerKeyMiddleware, is_open_path
from serving.batching import Overloaded, ScoreBatcher, ScoreJob
from serving.consent_feed import LedgerFeed, LedgerUnavailable
from serving.consent_intake import ConsentEvents, ConsentEventsRequest, ConsentEventsResponse, ConsentIntake
from serving.eligibility import ConsentEligibility
from serving.limits import MAX_VOTERS, BodyLimitMiddleware
from serving.log_privacy import install as keep_requests_out_of_logs
from serving.model_report import REPORT_CSP, ReportNotFound, fetch_model_report
from serving.openapi import PublishedSpecMiddleware
from serving.plan_api import PlanRequest, PlanResponse, answer_plan
from serving.plan_costs import PlanError, ProgramCosts
from serving.plan_design import DesignSpec
from serving.scoring import SegmentScorer
from serving.voters import VoterError

if TYPE_CHECKING:
    from serving.model_holder import ServedModel

SMALL_REQUEST = 32  # voters; smaller requests are scored in adaptive batches
http = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
keep_requests_out_of_logs()
header_limit.install()  # request heads over 64 KiB answered 431 as they arrive (before uvicorn is configured)
heap.tune()  # collection thresholds of a long-lived scoring worker; each loaded model is frozen (serving/heap.py)
logging.getLogger("persuade").setLevel(logging.INFO)
# BentoML takes the worker count and tracing from the decorator, and the middlewares' options (the body
# limit) where they are added, when this module is imported: those values are read here, through Settings.
# Everything else is read once in Persuade.__init__.
STARTUP = Settings.from_env()


@bentoml.service(
    name="persuade", workers=STARTUP.workers, traffic={"timeout": 120},
    logging={"access": {"enabled": False}},  # the audit log is the access log
    tracing={"excluded_urls": [] if STARTUP.tracing else [".*"]},
)
@bentoml.asgi_app(http, path="/")
class Persuade:
    """Persuadability scores and their reasons for dialers, texting and canvassing apps."""

    def __init__(self) -> None:
        # BentoML's arbiter imports this module for the decorator's settings and never serves: the model's
        # loading and checking (MLflow, LightGBM) are imported here, in each worker
        from serving.model_holder import ModelHolder

        self.settings = Settings.from_env()  # read once, at start-up
        ledger = ConsentLedger.from_settings(self.settings)  # consent events (POST /consent/events)
        self.intake = ConsentIntake(ledger)
        # a consent table that cannot be read stops start-up; the ledger's events apply from the next request on
        self.consent = ConsentEligibility.from_settings(self.settings, feed=LedgerFeed(ledger))
        self.holder = ModelHolder(
            self.settings.model_uri, self.settings.reload_seconds,
            scorer_factory=lambda model, ref: SegmentScorer(model, ref, self.consent, self.consent.passthrough))
        self.holder.start()
        self.batcher = ScoreBatcher(self.settings.batching)

    async def __is_ready__(self) -> bool:
        return self.holder.ready

    def _take_model(self) -> tuple[ServedModel | None, AuditRecord | None]:
        """The model for this request (taken once, so a reload never mixes two), named in its audit line."""
        served, audit = self.holder.current, current_record()
        if served is not None and audit is not None:
            audit.model, audit.model_version = served.ref.name, served.ref.version
        return served, audit

    @bentoml.api(route="/score", input_spec=ScoreRequest, output_spec=ScoreResponse)
    async def score(self, voters: Voters, explain: bool = False, top_k: int = 5) -> Response:
        """Score a segment: turnout (if the model has one), uplift per arm, best arm, rank, (explain) SHAP reasons.

        Consent rules apply first: an arm a voter may not get is never their best arm, and
        `eligible`/`ineligible_reasons` say why per arm. Needs `Authorization: Bearer <key>`
        (else 401). Each score has `warnings`: short codes naming the field (`duplicate:voter_id`,
        `missing:<feature>`, `out_of_range:<feature>`, `unknown_category:<feature>`). Errors: 400
        malformed JSON or request shape; 413 more than 10,000 voters or an oversized body; 415 a
        body that is not JSON; 422 a voter field of the wrong type or too long, an id with a control
        character, `{"error", "detail": [{"voter", "field", "message"}]}`; 503 no model loaded yet.
        """
        served, audit = self._take_model()
        if served is None:
            return error_response(503, "no model is loaded yet: see GET /model and retry")
        if audit is not None:
            audit.explain = explain
        if len(voters) > MAX_VOTERS:
            return error_response(413, f"{len(voters):,} voters in one request; the limit is {MAX_VOTERS:,}")
        try:
            if len(voters) <= SMALL_REQUEST:
                batch = served.scorer.read(voters)
                payload = await self.batcher.score(ScoreJob(served, batch, explain, top_k))
            else:  # read, then scored in slices: small requests are scored beside it (serving/batching.py)
                batch = await self.batcher.run(served.scorer.read, voters)
                payload = await self.batcher.score_large(served, batch, explain, top_k)
        except VoterError as exc:
            return error_response(422, str(exc), [p.as_dict() for p in exc.problems])
        except (Overloaded, LedgerUnavailable) as exc:
            return error_response(503, str(exc))
        if audit is not None:
            audit.voters, audit.warnings = len(voters), batch.warning_counts()
        return Response(encode(payload), media_type="application/json")

    @bentoml.api(route="/plan", input_spec=PlanRequest, output_spec=PlanResponse)
    async def plan(self, voters: Voters, budget: float, costs: ProgramCosts | None = None,
                   sensitivity: bool = False, holdout: float = 0.0, explore: float = 0.0,
                   seed: int | None = None) -> Response:
        """Whom to contact with which arm within `budget`: ordered lists per channel.

        Consent rules apply as for /score. The answer has each channel's contacts in
        priority order with their expected gain, the total expected incremental outcomes
        with a 95% interval, suppression counts and the solver's optimality bound; with
        `sensitivity`, what the plan would lose if an arm's average effect were at an end
        of its interval; with `holdout` or `explore`, a randomized design (held-out voters
        are not contacted, explored voters get a random arm they may get) and every voter's
        assignment and probabilities; `warnings` lists the voters whose input deserves a word
        (the codes of /score). Errors as for /score; 422 also for an id that appears twice (a
        voter is planned once), costs that do not fit the model or a share outside [0, 1)
        (names the field).
        """
        served, audit = self._take_model()
        if served is None:
            return error_response(503, "no model is loaded yet: see GET /model and retry")
        if len(voters) > MAX_VOTERS:
            return error_response(413, f"{len(voters):,} voters in one request; the limit is {MAX_VOTERS:,}")
        try:  # gains in slices beside small /score requests, then one solve (serving/plan_api.py)
            body, batch = await answer_plan(self.batcher, served, voters, budget=budget, costs=costs,
                                            sensitivity=sensitivity,
                                            design=DesignSpec(holdout=holdout, explore=explore, seed=seed))
        except VoterError as exc:
            return error_response(422, str(exc), [p.as_dict() for p in exc.problems])
        except PlanError as exc:
            return error_response(422, str(exc), [{"field": exc.field, "message": str(exc)}])
        except LedgerUnavailable as exc:
            return error_response(503, str(exc))
        if audit is not None:
            audit.voters, audit.warnings = len(voters), batch.warning_counts()
        return Response(body, media_type="application/json")

    @bentoml.api(route="/consent/events", input_spec=ConsentEventsRequest, output_spec=ConsentEventsResponse)
    async def consent_events(self, events: ConsentEvents) -> Response:
        """Record consent events (STOP replies, do-not-contact, consents) in the consent ledger.

        Each event is committed before the 200 and applies to the next /score and /plan. Send
        `reply` with a voter's free-text answer and it is read as an opt-out (STOP, PARA, ...),
        an opt-in or help reply (recorded, no effect), or unclear (kept for review; revokes
        automated contact meanwhile). Idempotent by `event_id`. Needs a consent-event key
        (`PERSUADE_CONSENT_KEYS`; else 401/403). Errors: 422 a bad event,
        `{"error", "detail": [{"event", "field", "message"}]}` (no value echoed); 409 an
        `event_id` recorded with other content; 413 too many events; 503 the ledger cannot be
        written (nothing recorded: retry).
        """
        audit = current_record()
        status, body = await anyio.to_thread.run_sync(self.intake.receive, events, audit.key_id if audit else None)
        return json_response(body, status)

    @http.get("/report", response_class=HTMLResponse, responses={404: {"model": ErrorResponse}})
    async def report(self):
        """The model report of the served model's run (HTML, self-contained), for reviewers."""
        served, _ = self._take_model()
        if served is None:
            return JSONResponse(self.holder.status(), status_code=503)
        try:
            html = await anyio.to_thread.run_sync(fetch_model_report, served.ref.run_id)
        except ReportNotFound as exc:
            return error_response(404, str(exc))
        return HTMLResponse(html, headers={"Content-Security-Policy": REPORT_CSP, "Cache-Control": "no-store"})

    @bentoml.api(route="/admin/reload", output_spec=ReloadStatus)
    async def reload(self) -> Response:
        """Check the model alias now and swap in a new version (admin key)."""
        return json_response(await anyio.to_thread.run_sync(self.holder.refresh, True))

    @http.get("/model", response_model=ModelCard, responses={503: {"model": ReloadStatus}})
    async def model(self):
        """The served model: version, run, arms and channels, features, metrics, reload state, and the drift of the
        voters this worker scored since the model was loaded (PSI per feature and score against training)."""
        from serving.model_holder import model_card

        served, _ = self._take_model()
        if served is None:
            return JSONResponse(self.holder.status(), status_code=503)
        try:
            consent = self.consent.describe()
        except LedgerUnavailable as exc:  # /score and /plan answer 503; the card says why
            consent = {"error": str(exc), "decisions": "refused until the consent ledger can be read"}
        return {**model_card(served, self.holder.status()), "consent": consent}

    @bentoml.on_shutdown
    def stop(self) -> None:
        self.holder.stop()
        self.batcher.shutdown()


Persuade.add_asgi_middleware(AuditMiddleware, is_open=is_open_path)  # outermost: audits 401s too
Persuade.add_asgi_middleware(BearerKeyMiddleware)
Persuade.add_asgi_middleware(BodyLimitMiddleware, max_bytes=STARTUP.max_body_bytes)
Persuade.add_asgi_middleware(PublishedSpecMiddleware)  # /docs.json says what the service answers
