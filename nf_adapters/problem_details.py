"""TS 29.571 ProblemDetails answers (``application/problem+json``) built as ``LocalResponse``.

Every error the gateway answers itself (malformed 3GPP header, no route, loop, upstream
timeout...) goes through ``problem()`` so that consumers always get the body TS 29.500 §5.2.7
asks for: ``title``, ``status``, ``detail``, a machine-readable ``cause`` and, for a malformed
parameter or header, ``invalidParams``.

``CAUSES`` maps the application error causes of TS 29.500 Table 5.2.7.2-1 (plus the SCP causes of
§6.10) to the HTTP status the table pairs them with; ``problem_responder`` is the
``error_responder`` callable the proxy uses for its own failures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

import msgspec

from dataplane.routing import LocalResponse

CONTENT_TYPE = b"application/problem+json"

# TS 29.500 Table 5.2.7.2-1 (Rel-17/18) "Protocol and application errors common to several 5GC
# SBI API specifications": cause -> HTTP status.  LOOP_DETECTED is the SCP's own cause for a
# 508 (§6.10.x loop detection names the status, not a cause string).
CAUSES: Mapping[str, int] = {
    "INVALID_API": 400,
    "INVALID_MSG_FORMAT": 400,
    "INVALID_QUERY_PARAM": 400,
    "MANDATORY_QUERY_PARAM_INCORRECT": 400,
    "OPTIONAL_QUERY_PARAM_INCORRECT": 400,
    "MANDATORY_QUERY_PARAM_MISSING": 400,
    "MANDATORY_IE_INCORRECT": 400,
    "OPTIONAL_IE_INCORRECT": 400,
    "MANDATORY_IE_MISSING": 400,
    "UNSPECIFIED_MSG_FAILURE": 400,
    "RESOURCE_CONTEXT_NOT_FOUND": 400,
    "INVALID_DISCOVERY_PARAM": 400,
    "CCA_VERIFICATION_FAILURE": 403,
    "TOKEN_CCA_MISMATCH": 403,
    "MODIFICATION_NOT_ALLOWED": 403,
    "ACCESS_TOKEN_DENIED": 403,
    "SUBSCRIPTION_NOT_FOUND": 404,
    "RESOURCE_URI_STRUCTURE_NOT_FOUND": 404,
    "INCORRECT_LENGTH": 411,
    "NF_CONGESTION_RISK": 429,
    "INSUFFICIENT_RESOURCES": 500,
    "UNSPECIFIED_NF_FAILURE": 500,
    "SYSTEM_FAILURE": 500,
    "NF_FAILOVER": 500,
    "NF_SERVICE_FAILOVER": 500,
    "NF_CONGESTION": 503,
    "TARGET_NF_NOT_REACHABLE": 504,
    "TIMED_OUT_REQUEST": 504,
    "NF_DISCOVERY_FAILURE": 504,
    "LOOP_DETECTED": 508,
    # nfmesh's own: a model C target outside scp.allowed_targets (no 3GPP cause fits)
    "TARGET_NOT_ALLOWED": 403,
}

_ENCODER = msgspec.json.Encoder()


class InvalidParam(msgspec.Struct, omit_defaults=True):
    """TS 29.571 InvalidParam: the attribute (JSON pointer, query or header name) and why."""

    param: str
    reason: str | None = None


class ProblemDetails(msgspec.Struct, omit_defaults=True):
    """TS 29.571 ProblemDetails (the fields nfmesh emits)."""

    title: str
    status: int
    detail: str = ""
    cause: str | None = None
    type: str | None = None
    instance: str | None = None
    invalidParams: list[InvalidParam] | None = None  # noqa: N815 (3GPP field name)


def status_for(cause: str) -> int:
    """The HTTP status TS 29.500 pairs with ``cause``; KeyError for an unknown cause."""
    return CAUSES[cause]


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _invalid(params: Iterable) -> list[InvalidParam]:
    out = []
    for item in params:
        if isinstance(item, InvalidParam):
            out.append(item)
        elif isinstance(item, Mapping):
            out.append(InvalidParam(str(item["param"]), item.get("reason")))
        else:  # (param, reason) pair
            param, reason = item
            out.append(InvalidParam(str(param), None if reason is None else str(reason)))
    return out


def problem_body(
    status: int,
    cause: str,
    detail: str = "",
    invalid_params: list | None = None,
    instance: str | None = None,
) -> bytes:
    """The JSON body alone (for callers that build their own response)."""
    body = ProblemDetails(
        title=_title(status),
        status=status,
        detail=detail,
        cause=cause or None,
        instance=instance,
        invalidParams=_invalid(invalid_params) if invalid_params else None,
    )
    return _ENCODER.encode(body)


def problem(
    status: int,
    cause: str,
    detail: str = "",
    invalid_params: list | None = None,
    instance: str | None = None,
) -> LocalResponse:
    """A ``LocalResponse`` carrying ProblemDetails.

    ``invalid_params`` items are ``InvalidParam``, ``{"param":..., "reason":...}`` dicts or
    ``(param, reason)`` pairs.  ``status`` must be a 4xx/5xx code (ValueError otherwise).
    """
    if not 400 <= status <= 599:
        raise ValueError(f"ProblemDetails status must be 4xx or 5xx, got {status}")
    body = problem_body(status, cause, detail, invalid_params, instance)
    headers = [
        (b"content-type", CONTENT_TYPE),
        (b"content-length", str(len(body)).encode()),
    ]
    return LocalResponse(status, headers, body)


def problem_for(cause: str, detail: str = "", invalid_params: list | None = None) -> LocalResponse:
    """``problem`` with the status TS 29.500 pairs with ``cause``."""
    return problem(CAUSES[cause], cause, detail, invalid_params)


def problem_responder(status: int, cause: str, detail: str) -> LocalResponse:
    """The proxy's ``error_responder``: its own failures (timeouts, unreachable upstreams,
    overload) answered as ProblemDetails."""
    return problem(status, cause, detail)


def decode_problem(body: bytes) -> ProblemDetails:
    """Parse a ProblemDetails body (used by tests and by clients of local services)."""
    return msgspec.json.decode(body, type=ProblemDetails)
