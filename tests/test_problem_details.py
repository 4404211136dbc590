"""ProblemDetails bodies: field by field, and against the official TS 29.571 schema (the
repository's copy in specs/3gpp)."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft7Validator

from dataplane.routing import LocalResponse
from nf_adapters.problem_details import (
    CAUSES,
    CONTENT_TYPE,
    InvalidParam,
    decode_problem,
    problem,
    problem_for,
    problem_responder,
    status_for,
)
from tests.spec_files import COMMON, schema_checker


def _header(resp: LocalResponse, name: bytes) -> bytes | None:
    for k, v in resp.headers:
        if k == name:
            return v
    return None


def test_problem_fields_exact() -> None:
    resp = problem(400, "MANDATORY_IE_INCORRECT", "bad apiRoot",
                   [("3gpp-Sbi-Target-apiRoot", "scheme must be http or https")])
    assert isinstance(resp, LocalResponse)
    assert resp.status == 400
    assert _header(resp, b"content-type") == CONTENT_TYPE
    assert _header(resp, b"content-length") == str(len(resp.body)).encode()
    body = json.loads(resp.body)
    assert body == {
        "title": "Bad Request",
        "status": 400,
        "detail": "bad apiRoot",
        "cause": "MANDATORY_IE_INCORRECT",
        "invalidParams": [
            {"param": "3gpp-Sbi-Target-apiRoot", "reason": "scheme must be http or https"}
        ],
    }


def test_problem_omits_absent_optional_fields() -> None:
    body = json.loads(problem(504, "TIMED_OUT_REQUEST").body)
    assert body == {"title": "Gateway Timeout", "status": 504, "cause": "TIMED_OUT_REQUEST"}


def test_invalid_params_accepts_dicts_structs_and_pairs() -> None:
    resp = problem(400, "OPTIONAL_IE_INCORRECT", "x", [
        {"param": "a", "reason": "r1"}, InvalidParam("b"), ("c", None)])
    assert json.loads(resp.body)["invalidParams"] == [
        {"param": "a", "reason": "r1"}, {"param": "b"}, {"param": "c"}]


def test_loop_detected_title_and_status() -> None:
    body = json.loads(problem(508, "LOOP_DETECTED", "via SCP-a").body)
    assert body["title"] == "Loop Detected"
    assert body["status"] == 508


def test_unknown_status_gets_generic_title() -> None:
    assert json.loads(problem(599, "SYSTEM_FAILURE").body)["title"] == "Error"


@pytest.mark.parametrize("status", [200, 302, 399, 600, 0])
def test_non_error_status_rejected(status: int) -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        problem(status, "SYSTEM_FAILURE")


@pytest.mark.parametrize(("cause", "status"), [
    ("MANDATORY_IE_INCORRECT", 400), ("MANDATORY_IE_MISSING", 400),
    ("OPTIONAL_IE_INCORRECT", 400), ("NF_DISCOVERY_FAILURE", 504),
    ("TARGET_NF_NOT_REACHABLE", 504), ("NF_FAILOVER", 500), ("TIMED_OUT_REQUEST", 504),
    ("NF_CONGESTION", 503), ("INSUFFICIENT_RESOURCES", 500), ("SYSTEM_FAILURE", 500),
    ("NF_CONGESTION_RISK", 429), ("RESOURCE_URI_STRUCTURE_NOT_FOUND", 404),
])
def test_cause_table(cause: str, status: int) -> None:
    assert status_for(cause) == status
    resp = problem_for(cause, "d")
    assert resp.status == status
    assert json.loads(resp.body)["cause"] == cause


def test_problem_responder_signature_and_body() -> None:
    resp = problem_responder(504, "TARGET_NF_NOT_REACHABLE", "connect refused 10.0.0.1:80")
    assert resp.status == 504
    pd = decode_problem(resp.body)
    assert (pd.status, pd.cause, pd.detail) == (504, "TARGET_NF_NOT_REACHABLE",
                                                "connect refused 10.0.0.1:80")


def _schema_validator() -> Draft7Validator:
    """ProblemDetails of the vendored TS 29.571 file, its $refs into other files resolved."""
    return schema_checker().validator(COMMON, "ProblemDetails")


def test_bodies_validate_against_ts29571_schema() -> None:
    validator = _schema_validator()
    samples = [
        problem(400, "MANDATORY_IE_INCORRECT", "x", [("h", "r")]),
        problem(508, "LOOP_DETECTED", "loop"),
        problem_responder(504, "TIMED_OUT_REQUEST", ""),
        problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", "no route", instance="/a/b"),
    ]
    for resp in samples:
        validator.validate(json.loads(resp.body))
    assert all(CAUSES[c] in range(400, 600) for c in CAUSES)


def test_schema_rejects_a_wrong_body() -> None:
    """The validator is really checking: a wrong type fails."""
    import jsonschema

    validator = _schema_validator()
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"status": "400", "title": "x"})
    with pytest.raises(jsonschema.ValidationError):
        validator.validate({"status": 400, "invalidParams": []})  # minItems 1
