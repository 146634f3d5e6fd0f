"""The HTTP API's request and response models (pydantic), its limits and its errors.

The models document the API in the OpenAPI spec (``/docs.json``). Responses of
``POST /score`` are built as plain dicts by :mod:`serving.scoring` and serialized
directly (building tens of thousands of pydantic objects per request would cost more
than scoring); the tests validate them against :class:`ScoreResponse`.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from serving.limits import MAX_ID_CHARS, MAX_STRING_CHARS, MAX_VOTERS

MAX_TOP_K = 50

_SCALAR = {"anyOf": [{"type": "string", "maxLength": MAX_STRING_CHARS}, {"type": "number"}, {"type": "boolean"},
                     {"type": "null"}]}
VOTER_SCHEMA = {
    "type": "object",
    "description": "One voter: `voter_id` and the served model's feature fields (see `GET /model`, "
                   "`input_features`). Missing features are allowed (treated as unknown); other fields "
                   "are ignored, and never logged.",
    "properties": {"voter_id": {"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS,
                                            "pattern": "^[^\\x00-\\x1f\\x7f]*$"}, {"type": "integer"}],
                                "description": f"The voter's id in the voter file (not a phone number): at most "
                                               f"{MAX_ID_CHARS} characters, no control characters."}},
    "required": ["voter_id"],
    "additionalProperties": _SCALAR,
    "example": {"voter_id": "MI-000123", "hh_size": 2, "primary_04": 1, "general_04": 1},
}
Voters = Annotated[
    list[dict[str, Any]],
    WithJsonSchema({"type": "array", "items": VOTER_SCHEMA, "maxItems": MAX_VOTERS}),
]


class ScoreRequest(BaseModel):
    """``POST /score``: a segment of voters to score."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"example": {
        "voters": [VOTER_SCHEMA["example"]], "explain": True, "top_k": 5}})

    voters: Voters = Field(description=f"Voters to score (at most {MAX_VOTERS:,} per request).")
    explain: bool = Field(default=False, description="Return the top SHAP reasons of every arm's uplift.")
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K, description="Reasons per arm and voter.")


class ModelRefOut(BaseModel):
    name: str | None
    version: str | None
    run_id: str | None


class ReasonOut(BaseModel):
    feature: str
    value: float | str | None = Field(description="The voter's value of the feature (null if missing).")
    contribution: float = Field(description="SHAP contribution to the arm's uplift.")


class ArmReasons(BaseModel):
    base_value: float = Field(description="Base value: base_value plus all contributions equals the uplift.")
    top: list[ReasonOut] = Field(description="The top_k contributions, largest absolute value first.")


class VoterScore(BaseModel):
    voter_id: str
    turnout: float | SkipJsonSchema[None] = Field(
        default=None, description="P(turnout) without contact. Present only when the served model has a turnout "
        "model (`has_turnout` in `GET /model`): a support model trained without a turnout column has none, and "
        "its scores leave the field out.")
    uplift: dict[str, float | None] = Field(description="Arm label -> predicted uplift against no contact; "
                                            "null for an arm the voter may not get (see ineligible_reasons).")
    best_arm: str = Field(description="Arm with the largest positive uplift, or `control` if none is positive.")
    best_uplift: float
    rank: int = Field(description="1 = most persuadable voter of the request (largest best_uplift).")
    eligible: dict[str, bool] | None = Field(default=None, description="Arm -> may this voter get it "
                                             "(present when eligibility rules apply).")
    ineligible_reasons: dict[str, str | None] | None = None
    time_zone: str | None = Field(
        default=None, description="The voter's local time zone (IANA name; several separated by spaces when the "
        "number and the address state leave more than one: keep the calling window in each), present when the "
        "model has phone or text arms; null when unknown, and then those arms are suppressed (unknown_timezone).")
    reasons: dict[str, ArmReasons | None] | None = Field(
        default=None, description="Arm -> reasons (when explain); null for an arm the voter may not get.")
    warnings: list[str] = Field(
        default=[], description="What deserves a word about this voter's input, as short codes naming the field: "
        "`duplicate:voter_id` (the id appears more than once in the request), `missing:<feature>` (absent or "
        "null: scored as unknown), `out_of_range:<feature>` (outside the range seen in training), "
        "`unknown_category:<feature>` (a category training never saw: scored as unknown).")


class SegmentSummary(BaseModel):
    voters: int
    outcome: str = Field(description="`turnout` (uplift in probability) or `support` (outcome units).")
    eligible_voters: dict[str, int] = Field(description="Arm -> voters of the request who may get it.")
    expected_incremental: dict[str, float] = Field(
        description="Arm -> expected incremental outcomes if every voter who may get that arm got it.")
    mean_uplift: dict[str, float | None] = Field(
        description="Arm -> mean uplift of the voters who may get it (null if nobody may).")
    best_arm_counts: dict[str, int]


class ScoreResponse(BaseModel):
    model: ModelRefOut
    scores: list[VoterScore]
    summary: SegmentSummary


class ArmOut(BaseModel):
    label: str
    slug: str
    channel: str
    delivery: str
    cost: float


class ReloadStatus(BaseModel):
    state: str = Field(description="`ok`, `failed` (a new version was refused; the old one serves) or `loading`.")
    source: str = Field(description="The model URI the service follows, e.g. models:/persuade-ggl2008@champion.")
    checked_at: str | None
    message: str
    failed_version: str | None
    changed: bool | None = Field(default=None, description="A new version was swapped in (reload only).")


class DriftColumn(BaseModel):
    name: str = Field(description="A model feature, or a score: `turnout`, `uplift_<arm slug>`.")
    psi: float | None = Field(description="Population stability index against the training population "
                                          "(null before any voter was scored).")
    band: str = Field(description="`stable` (PSI below 0.1), `moderate` (0.1 to 0.25), `shifted` (above 0.25), "
                                  "or `too few voters` (fewer than `min_voters` scored: not judged).")


class DriftSummary(BaseModel):
    """The voters this worker scored with the served model since it was loaded, against the training population."""

    status: str = Field(description="The worst band of all columns; `too few voters`; or `no drift reference` "
                                    "(a model saved before drift references were recorded: nothing is counted).")
    voters: int = Field(description="Voters of `POST /score` requests this worker scored with this model.")
    training_voters: int | None = Field(description="Training rows the reference was measured on.")
    min_voters: int = Field(description="Voters scored before a column is judged.")
    since: str = Field(description="When this model was loaded by this worker (counting starts then).")
    features: list[DriftColumn] = Field(description="Per model feature, highest PSI first.")
    scores: list[DriftColumn] = Field(description="Per score (turnout, each arm's uplift), highest PSI first.")


class ModelCard(BaseModel):
    """``GET /model``: what is being served."""

    name: str | None
    version: str | None
    run_id: str | None
    uri: str
    loaded_at: str
    learner: str | None = None
    outcome: dict[str, str]
    has_turnout: bool = Field(description="The model predicts turnout: only then do scores have a `turnout` field "
                                          "(a support model may be trained without a turnout model).")
    control_label: str
    arms: list[ArmOut]
    input_features: list[str]
    features: list[str]
    excluded: dict[str, str]
    metrics: dict[str, float | None]
    fingerprint: dict[str, Any]
    gates: dict[str, bool]
    reload: ReloadStatus
    drift: DriftSummary | None = Field(default=None, description="Drift at a glance: the voters this worker scored "
                                       "since the model was loaded against the training population, per feature "
                                       "and score (population stability index and its band).")
    consent: dict[str, Any] | None = Field(
        default=None, description="The consent table in force: file name, fingerprint, event counts, key "
                                  "check, as_of (and a replay warning when pinned), the landline cap, maximum "
                                  "age and staleness, data errors, join diagnostics of the requests answered, "
                                  "and the last re-read error if any (numbers masked).")


class FieldError(BaseModel):
    voter: int | None = None
    field: str | None = None
    message: str


class ErrorResponse(BaseModel):
    error: str
    detail: list[FieldError] = []


class RequestIssue(BaseModel):
    loc: list[str | int] = Field(description="Where in the request: field names and list indices.")
    msg: str
    type: str


class BadRequest(BaseModel):
    """400: a body that is not valid JSON or does not have the request's shape."""

    error: str
    detail: list[RequestIssue] = []


def json_response(payload: Any, status: int = 200) -> Response:
    """A JSON response from plain data (already JSON-ready)."""
    return Response(encode(payload), status_code=status, media_type="application/json")


def encode(payload: Any) -> bytes:
    """Compact JSON bytes (orjson: about 20x faster than ``json`` on a 10,000-voter response)."""
    return orjson.dumps(payload)


def error_response(status: int, error: str, detail: list[dict[str, Any]] | None = None) -> Response:
    return json_response({"error": error, "detail": detail or []}, status)
