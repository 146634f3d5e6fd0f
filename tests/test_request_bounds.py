"""Bounded work per request, the contract in the OpenAPI document, and honest edges (issue 20).

Against a real ``bentoml serve`` on 127.0.0.1 serving the small synthetic model
(``small_model_fixtures``), over HTTP and raw sockets:

- an id over 128 characters, an id with a control character (a trailing NUL used to be
  stripped, so ``"a\\x00"`` and ``"a"`` collided) and a string over 256 characters are 422s
  naming the voter and the field;
- a body with more voters than the limit, or more JSON values than the limit, is refused
  413 while it arrives: the test sends the first part of a body and waits, and the answer
  comes before the rest is sent;
- a request head over 64 KiB is answered 431 as it arrives;
- multipart and other non-JSON bodies get 415 on every POST endpoint (multipart without a
  boundary was a 500);
- the OpenAPI document declares the bearer scheme, every status the service answers with
  its real body (a 400's ``detail`` is a list), and no ``null`` where a field is not nullable;
- every score carries ``warnings``: duplicate ids, values outside the training range,
  unknown categories and missing features, named per voter, counted in the audit line.

In process: ids are kept as Python strings (an object array: memory does not grow with the
longest id), a model without recorded ranges scores without range warnings, the body scan
counts exactly (escaped quotes, chunk boundaries), and a large request is scored in slices
while a small request is answered beside it, with the same answer as in one piece.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import threading
from dataclasses import replace

import httpx
import numpy as np
import pytest
from small_service_fixtures import CONSENT_KEY, KEY
from test_service_reload import wait_for

from features.pipeline import FeaturePipeline
from serving.api import ScoreResponse
from serving.batching import ScoreBatcher, ScoreJob
from serving.json_shape import JsonShape
from serving.limits import MAX_ID_CHARS, MAX_STRING_CHARS, MAX_VOTERS, VALUES_PER_ITEM
from serving.model_holder import ServedModel
from serving.model_ref import ModelRef
from serving.scoring import SegmentScorer
from serving.voters import VoterError, VoterReader

POSTS = ("/score", "/plan", "/consent/events")


def score(client: httpx.Client, voters, **options) -> httpx.Response:
    return client.post("/score", json={"voters": voters, **options})


def problems(response: httpx.Response) -> dict[tuple[int, str], str]:
    assert response.status_code == 422, response.text[:300]
    return {(d["voter"], d["field"]): d["message"] for d in response.json()["detail"]}


def send_part_and_wait(service, path: str, first_part: bytes, declared: int) -> bytes:
    """Send a request announcing ``declared`` body bytes, then only ``first_part``; what comes back."""
    with socket.create_connection((service.host, service.port), timeout=120) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {KEY}\r\n"
                     f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n".encode() + first_part)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)  # a server still waiting for the body never answers: the timeout fails the test
            if not chunk:
                break
            answer += chunk
    return answer


# -- ids and strings ------------------------------------------------------------------------
def test_an_id_over_the_limit_is_422_naming_the_limit(small_client):
    found = problems(score(small_client, [{"voter_id": "a" * MAX_ID_CHARS}, {"voter_id": "b" * (MAX_ID_CHARS + 1)},
                                    {"voter_id": 10 ** (MAX_ID_CHARS + 1)}]))
    assert set(found) == {(1, "voter_id"), (2, "voter_id")}
    assert f"at most {MAX_ID_CHARS} characters" in found[(1, "voter_id")]


def test_ids_with_control_characters_are_refused_not_stripped(small_client):
    r = score(small_client, [{"voter_id": "a"}, {"voter_id": "a\x00"}, {"voter_id": "b\tc"}, {"voter_id": "\x7f"}])
    found = problems(r)
    assert set(found) == {(1, "voter_id"), (2, "voter_id"), (3, "voter_id")}
    assert all("control characters" in m for m in found.values())
    assert score(small_client, [{"voter_id": "a"}, {"voter_id": "ä-é 1"}]).status_code == 200


def test_strings_over_the_limit_are_422_naming_the_field(small_client, small_model):
    model, _ = small_model
    categorical = next(iter(model.pipeline.categories_))
    numeric = model.pipeline.numeric_[0]
    r = score(small_client, [{"voter_id": "1", categorical: "x" * (MAX_STRING_CHARS + 1)},
                       {"voter_id": "2", numeric: "1" * (MAX_STRING_CHARS + 1)},
                       {"voter_id": "3", categorical: "x" * MAX_STRING_CHARS}])
    found = problems(r)
    assert set(found) == {(0, categorical), (1, numeric)}
    assert all(f"at most {MAX_STRING_CHARS} characters" in m for m in found.values())
    assert "xxxx" not in r.text  # the value is never echoed


def test_ids_are_python_strings_whatever_their_length(small_model):
    """A fixed-width array of ids is as wide as the longest: one long id multiplied every id's memory."""
    model, _ = small_model
    batch = VoterReader(model).read([{"voter_id": "a" * MAX_ID_CHARS}, *({"voter_id": str(i)} for i in range(999))])
    assert batch.ids.dtype == object and batch.ids[1] == "0"
    with pytest.raises(VoterError, match="voter_id"):
        VoterReader(model).read([{"voter_id": "a\x00"}])


# -- sizes refused while the body arrives ----------------------------------------------------------
def test_too_many_voters_are_refused_before_the_body_has_arrived(small_service):
    first = b'{"voters": [' + b"{}," * (MAX_VOTERS + 10)
    answer = send_part_and_wait(small_service, "/score", first, declared=50 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413")
    assert f"more than {MAX_VOTERS:,} voters".encode() in answer


def test_too_many_values_are_refused_before_the_body_has_arrived(small_service):
    """Few voters, each with a long list an ignored field holds: the values are counted, not only the voters."""
    voter = b'{"voter_id": "x", "notes": [' + b"0," * 999 + b"0]},"
    first = b'{"voters": [' + voter * (MAX_VOTERS * VALUES_PER_ITEM // 1000 + 10)
    answer = send_part_and_wait(small_service, "/plan", first, declared=len(first) + 10_000_000)
    assert answer.startswith(b"HTTP/1.1 413") and b"JSON values" in answer


def test_the_request_object_is_bounded_too(small_service):
    first = b'{"voters": [], ' + b"".join(b'"k%d": 0, ' % i for i in range(MAX_VOTERS + 10))
    answer = send_part_and_wait(small_service, "/score", first, declared=len(first) + 10_000_000)
    assert answer.startswith(b"HTTP/1.1 413")


def test_a_request_head_over_the_limit_is_431_as_it_arrives(small_service, small_client):
    with socket.create_connection((small_service.host, small_service.port), timeout=120) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 200_000)  # the head never ends
        answer = b""
        while chunk := sock.recv(4096):  # the server closes the connection after its answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431") and b"request headers larger than" in answer
    assert score(small_client, [{"voter_id": "after"}]).status_code == 200


@pytest.mark.parametrize("path", POSTS)
@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded", "text/plain"])
def test_bodies_that_are_not_json_are_415(small_client, path, content_type):
    key = CONSENT_KEY if path.startswith("/consent/") else KEY
    r = small_client.post(path, content=b'{"voters": []}', headers={"Content-Type": content_type,
                                                               "Authorization": f"Bearer {key}"})
    assert r.status_code == 415, r.text[:200]
    assert "application/json" in r.json()["error"]


# -- the contract --------------------------------------------------------------------------------
def test_the_openapi_document_says_what_the_service_answers(small_service):
    spec = httpx.get(f"{small_service.base_url}/docs.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {**spec["components"]["securitySchemes"]["bearer"],
                                                               "type": "http", "scheme": "bearer"}
    schemas = spec["components"]["schemas"]
    assert schemas["BadRequest"]["properties"]["detail"]["type"] == "array"
    for path in POSTS:
        operation = spec["paths"][path]["post"]
        assert operation["security"] == [{"bearer": []}]
        assert {"400", "401", "403", "413", "415", "422", "503"} <= set(operation["responses"])
        assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/BadRequest")
    assert spec["paths"]["/livez"]["get"]["security"] == []
    design = spec["paths"]["/plan"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"type": "null"} in design["properties"]["design"]["anyOf"]  # null only where it is allowed
    warnings = schemas["VoterScore"]["properties"]["warnings"]
    assert warnings["type"] == "array"


# -- honest edges --------------------------------------------------------------------------------
def test_warnings_name_duplicates_ranges_categories_and_missing_features(small_service, small_client, small_model,
                                                                          small_campaign):
    model, _ = small_model
    features = model.input_features
    assert {"hh_size", "primary_18"} <= set(model.pipeline.ranges_) and "urbanicity" in model.pipeline.categories_
    complete = small_campaign.voter_file[["voter_id", *features]].dropna().head(1)
    full = json.loads(complete.to_json(orient="records"))[0]
    odd = {**full, "voter_id": "odd", "hh_size": -5, "primary_18": 7, "urbanicity": "moon"}
    body = score(small_client, [{**full, "voter_id": "twice"}, {**full, "voter_id": "twice"}, odd,
                          {"voter_id": "bare"}]).json()
    ScoreResponse.model_validate(body)
    warnings = [s["warnings"] for s in body["scores"]]
    assert warnings[0] == warnings[1] == ["duplicate:voter_id"]
    odd_codes = {"hh_size": "out_of_range", "primary_18": "out_of_range", "urbanicity": "unknown_category"}
    assert warnings[2] == [f"{odd_codes[f]}:{f}" for f in features if f in odd_codes]
    assert warnings[3] == [f"missing:{f}" for f in features]

    def audited() -> dict | None:
        lines = [json.loads(line) for line in small_service.log.splitlines() if line.startswith('{"audit"')]
        return next((a for a in lines if a["path"] == "/score" and a.get("voters") == 4 and a.get("warnings")), None)

    wait_for(lambda: audited() is not None)
    assert audited()["warnings"] == {"duplicate": 2, "out_of_range": 2, "unknown_category": 1, "missing": len(features)}


def test_a_model_without_recorded_ranges_scores_without_range_warnings(small_model):
    model, _ = small_model
    state = model.pipeline.to_dict()
    assert state["ranges"]
    old = replace(model, pipeline=FeaturePipeline.from_dict({k: v for k, v in state.items() if k != "ranges"}))
    assert old.pipeline.ranges_ == {}
    voter = [{"voter_id": "a", "hh_size": -5}]
    assert "out_of_range:hh_size" in VoterReader(model).read(voter).warnings[0]
    assert not [w for w in VoterReader(old).read(voter).warnings[0] if w.startswith("out_of_range")]
    assert SegmentScorer(old, ModelRef(None, None, None, "old")).score_request(voter)["scores"][0]["warnings"]


# -- in process: the body scan and large requests in slices ---------------------------------------------------------
def _random_json(rng: random.Random, depth: int = 1):
    if depth > 3 or rng.random() < 0.3:
        return rng.choice([1, 2.5, None, True, "".join(rng.choice('a,{}[]"\\é ') for _ in range(rng.randint(0, 6)))])
    if rng.random() < 0.5:
        return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 6))]
    return {"".join(rng.choice('k,"\\{') for _ in range(3)) + str(i): _random_json(rng, depth + 1)
            for i in range(rng.randint(0, 6))}


def _largest_container(value, depth: int = 1) -> int:
    if not isinstance(value, (list, dict)):
        return 0
    items = list(value.values()) if isinstance(value, dict) else value
    own = len(items) if depth <= 2 else 0
    return max([own, *(_largest_container(v, depth + 1) for v in items)])


def test_the_body_scan_counts_exactly_across_chunks_and_escapes():
    rng = random.Random(20)
    for _ in range(1500):
        document = [_random_json(rng)]
        text = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
        limit = rng.randint(1, 7)
        shape, found, at = JsonShape(max_items=limit, max_values=10 ** 9), None, 0
        while at < len(text) and found is None:
            step = rng.randint(1, 9)
            found, at = shape.feed(text[at:at + step]), at + step
        assert found == ("items" if _largest_container(document) > limit else None), text


def beside_one_small_request(large, served: ServedModel, voters: list[dict], answered: threading.Event):
    """Run ``large(batcher)`` (a large request's coroutine) and, once one of its steps runs, a single-voter
    /score on the same batcher (40 voters per slice, fixed). Returns the large answer, the small one and the
    order they finished in; ``answered`` is set when the small one is."""
    async def run() -> tuple[object, dict, list[str]]:
        batcher, done = ScoreBatcher(), []
        batcher.slice_voters = 40
        batcher._adapt = lambda voters, seconds: None  # keep 40 voters per slice

        async def big():
            out = await large(batcher)
            done.append("large")
            return out

        async def small() -> dict:
            while not batcher.large_steps.locked():  # a step of the large request is running
                await asyncio.sleep(0)
            out = await batcher.score(ScoreJob(served, served.scorer.read(voters[:1]), False, 5))
            answered.set()
            done.append("small")
            return out

        big_answer, one = await asyncio.gather(big(), small())
        return big_answer, one, done

    return asyncio.run(run())


def test_a_large_request_in_slices_lets_a_small_one_through_with_the_same_answer(small_model, small_campaign):
    """The large request's second slice waits until the small request is answered: a small request
    that had to wait for the whole large one would never be (the wait gives up after a minute)."""
    model, _ = small_model
    scorer = SegmentScorer(model, ModelRef("small", "1", None, "models:/small/1"))
    served = ServedModel(model, scorer.ref, scorer, "now")
    voters = json.loads(small_campaign.voter_file.head(300).to_json(orient="records"))
    voters[7]["voter_id"] = voters[250]["voter_id"]  # a duplicate across slices
    whole = scorer.score_request(voters, explain=True, top_k=3)
    answered = threading.Event()

    class SecondSliceWaits:
        def __init__(self):
            self.slices = 0

        def __getattr__(self, name):
            return getattr(scorer, name)

        def score(self, batch, explain, top_k):
            self.slices += 1
            if self.slices == 2 and not answered.wait(60):
                raise AssertionError("the small request was not answered while the large one was scored")
            return scorer.score(batch, explain, top_k)

    gated = ServedModel(model, scorer.ref, SecondSliceWaits(), "now")
    sliced, one, done = beside_one_small_request(
        lambda batcher: batcher.score_large(gated, scorer.read(voters), True, 3), served, voters, answered)
    assert done == ["small", "large"], "the small request waited for the whole large one"
    assert one["scores"][0]["voter_id"] == voters[0]["voter_id"]
    assert sliced["scores"] == whole["scores"]
    assert sliced["scores"][7]["warnings"][0] == "duplicate:voter_id"
    for key, value in whole["summary"].items():
        if isinstance(value, dict):
            assert sliced["summary"][key] == pytest.approx(value, abs=1e-12)
        else:
            assert sliced["summary"][key] == value
    assert np.array_equal(sorted(s["rank"] for s in sliced["scores"]), np.arange(1, len(voters) + 1))
