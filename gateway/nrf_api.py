"""The NRF API served by the gateway: Nnrf_NFManagement and Nnrf_NFDiscovery (TS 29.510).

``NrfApi.handle`` answers one whole request (``dataplane.routing.Request``) with a
``LocalResponse``; ``NrfRouter`` is the ``Router`` that claims the NRF's paths (and requests
that NFs in indirect mode send to the SCP with ``3gpp-Sbi-Discovery-target-nf-type: NRF``) and
returns ``None`` for anything else, so it goes first in the gateway's router chain.

Resources:

* ``/nnrf-nfm/v1/nf-instances/{nfInstanceId}``: PUT (201 + Location / 200), PATCH
  (``application/json-patch+json``; 204, or 200 with the profile when the NRF changed it), GET,
  DELETE (204);
* ``/nnrf-nfm/v1/nf-instances?nf-type=&limit=&page-number=&page-size=``: GET (UriList, as
  ``application/3gppHal+json``);
* ``/nnrf-nfm/v1/subscriptions``: POST (201 + Location); ``/subscriptions/{id}``: PATCH, DELETE;
* ``/nnrf-disc/v1/nf-instances?target-nf-type=&requester-nf-type=...``: GET (SearchResult);
  a query parameter that the Rel-17 yaml does not define is a 400 INVALID_QUERY_PARAM;
* ``/oauth2/token``: POST (Nnrf_AccessToken), when ``oauth2.issuer`` gives the API a
  ``token_service`` (``gateway.registry.access_token``).

Discovery answers are cached per query string until the registry changes (its ``version``).
Errors are TS 29.571 ProblemDetails with the TS 29.500 cause; a store failure is 503.  PATCH
bodies go through ``json_patch.decode_patch`` (no duplicate member names, bounded nesting).
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, unquote

import msgspec

from dataplane.engine import Headers
from dataplane.routing import LocalResponse, LocalService, Request
from gateway.registry.json_patch import PatchError, decode_patch
from gateway.registry.profile import ProfileError, is_uuid
from gateway.registry.registry import NotFound, Registry
from gateway.registry.store import StoreError
from nf_adapters.discovery import NF_TYPES, DiscoveryError, parse_query
from nf_adapters.problem_details import CAUSES, problem

log = logging.getLogger(__name__)

NFM = "/nnrf-nfm/v1"
DISC = "/nnrf-disc/v1"
TOKEN = "/oauth2/token"  # Nnrf_AccessToken (gateway.registry.access_token)
JSON = b"application/json"
HAL_JSON = b"application/3gppHal+json"  # the 3GPP hypermedia type: the UriList answer
PATCH_MEDIA = "application/json-patch+json"
_decode = msgspec.json.decode
_encode = msgspec.json.Encoder().encode
MAX_BODY = 256 * 1024
DISCOVERY_CACHE_SIZE = 1024  # SearchResult bodies per query string, valid for one registry version


def _json_response(status: int, body: bytes, extra: Headers | None = None, *,
                   ctype: bytes = JSON) -> LocalResponse:
    headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    return LocalResponse(status, headers, body)


def _empty(status: int) -> LocalResponse:
    return LocalResponse(status, [], b"")


def _header(headers: Headers, name: bytes) -> bytes | None:
    for k, v in headers:
        if k == name:
            return v
    return None


def _media_type(headers: Headers) -> str:
    ct = _header(headers, b"content-type")
    if ct is None:
        return ""
    return ct.split(b";", 1)[0].strip().lower().decode("latin-1")


def _profile_error(exc: ProfileError) -> LocalResponse:
    status = CAUSES.get(exc.cause, 400)
    return problem(status, exc.cause, exc.detail,
                   [p.to_json() for p in exc.invalid_params] or None)


class _QueryError(ValueError):
    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


_ASCII_DIGITS = re.compile(r"[0-9]+")  # query integers: ASCII digits (str.isdigit takes "²")
_BIG = 1 << 62  # integers have no maximum in the yaml: longer ones are clamped to this
# GET nf-instances query parameters (TS29510_Nnrf_NFManagement.yaml, Rel-17): integer ones
# have minimum 1 and no maximum
LIST_PARAMS = ("nf-type", "limit", "page-number", "page-size")


def _list_params(query: str) -> dict:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, max_num_fields=16)
    except ValueError:
        raise _QueryError("query", "more than 16 parameters") from None
    out: dict = {}
    for name, value in pairs:
        if name not in LIST_PARAMS:
            raise _QueryError(name, "unknown query parameter")
        if name in out:
            raise _QueryError(name, "given more than once")
        if name == "nf-type":
            if value not in NF_TYPES:
                raise _QueryError(name, f"unknown NF type {value!r}")
            out[name] = value
        else:
            digits = value.lstrip("0")
            if not _ASCII_DIGITS.fullmatch(value) or not digits:
                raise _QueryError(name, "must be an integer >= 1")
            out[name] = int(digits) if len(digits) < 19 else _BIG
    return out


class NrfApi:
    """NFManagement + NFDiscovery handlers over a ``Registry``."""

    def __init__(self, registry: Registry, *, max_body: int = MAX_BODY,
                 token_service: object = None) -> None:
        self.registry = registry
        self.max_body = max_body
        # Nnrf_AccessToken (gateway.registry.access_token.AccessTokenService), None when off
        self.token_service = token_service
        self.service = LocalService("nrf", self.handle, max_body=max_body)
        self._disc_cache: dict[str, tuple[int, bytes]] = {}

    async def handle(self, req: Request) -> LocalResponse:
        """Answer one NRF request."""
        path, _, query = req.path.partition("?")
        try:
            if path.startswith(NFM + "/"):
                return await self._nfm(req, path[len(NFM):], query)
            if path.startswith(DISC + "/"):
                return self._disc(req, path[len(DISC):], query)
            if path == TOKEN and self.token_service is not None:
                if len(req.body) > self.max_body:
                    return problem(413, "INVALID_MSG_FORMAT", f"body larger than {self.max_body} bytes")
                return self.token_service.handle(req)
            return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"no NRF resource at {path}")
        except StoreError as exc:
            log.warning("registry store error: %s", exc.detail)
            return problem(503, exc.cause, f"registry store unavailable: {exc.detail}")
        except ProfileError as exc:
            return _profile_error(exc)

    # ------------------------------------------------------------------ helpers

    def _body(self, req: Request, media: str) -> object | LocalResponse:
        got = _media_type(req.headers)
        if got != media:
            return problem(415, "INVALID_MSG_FORMAT",
                           f"Content-Type must be {media}, got {got or 'none'}")
        if len(req.body) > self.max_body:
            return problem(413, "INVALID_MSG_FORMAT", f"body larger than {self.max_body} bytes")
        if media == PATCH_MEDIA:
            try:
                return decode_patch(req.body)
            except PatchError as exc:
                return problem(400, "INVALID_MSG_FORMAT", f"JSON Patch: {exc.reason}",
                               [{"param": exc.param, "reason": exc.reason}])
        try:
            return _decode(req.body)
        except (msgspec.DecodeError, ValueError) as exc:
            return problem(400, "INVALID_MSG_FORMAT", f"body is not valid JSON: {exc}")
        except RecursionError:
            return problem(400, "INVALID_MSG_FORMAT", "body is nested too deeply")

    def _api_root(self, req: Request) -> str:
        scheme = _header(req.headers, b":scheme") or b"http"
        auth = _header(req.headers, b":authority") or _header(req.headers, b"host")
        if not auth:
            return self.registry.settings.api_root
        return f"{scheme.decode('latin-1')}://{auth.decode('latin-1')}"

    # ------------------------------------------------------------------ NFManagement

    async def _nfm(self, req: Request, rest: str, query: str) -> LocalResponse:
        m = req.method
        if rest == "/nf-instances":
            if m != "GET":
                return problem(405, "INVALID_API", f"{m} not allowed on nf-instances")
            return self._list(req, query)
        if rest.startswith("/nf-instances/"):
            nf_id = unquote(rest[len("/nf-instances/"):])
            if "/" in nf_id or not nf_id:
                return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"no resource {rest}")
            if m == "PUT":
                return await self._put(req, nf_id)
            if m == "PATCH":
                return await self._patch(req, nf_id)
            if m == "GET":
                return self._get(nf_id)
            if m == "DELETE":
                try:
                    await self.registry.deregister(nf_id)
                except NotFound:
                    return problem(404, "RESOURCE_CONTEXT_NOT_FOUND", f"NF instance {nf_id} not found")
                return _empty(204)
            return problem(405, "INVALID_API", f"{m} not allowed on an NF instance")
        if rest == "/subscriptions":
            if m != "POST":
                return problem(405, "INVALID_API", f"{m} not allowed on subscriptions")
            body = self._body(req, "application/json")
            if isinstance(body, LocalResponse):
                return body
            data = await self.registry.subscribe(body)
            loc = f"{self._api_root(req)}{NFM}/subscriptions/{data['subscriptionId']}"
            return _json_response(201, _encode(data), [(b"location", loc.encode())])
        if rest.startswith("/subscriptions/"):
            sub_id = unquote(rest[len("/subscriptions/"):])
            if m == "DELETE":
                try:
                    await self.registry.unsubscribe(sub_id)
                except NotFound:
                    return problem(404, "SUBSCRIPTION_NOT_FOUND", f"subscription {sub_id} not found")
                return _empty(204)
            if m == "PATCH":
                body = self._body(req, PATCH_MEDIA)
                if isinstance(body, LocalResponse):
                    return body
                try:
                    data, changed = await self.registry.update_subscription(sub_id, body)
                except NotFound:
                    return problem(404, "SUBSCRIPTION_NOT_FOUND", f"subscription {sub_id} not found")
                if changed:
                    return _json_response(200, _encode(data))
                return _empty(204)
            return problem(405, "INVALID_API", f"{m} not allowed on a subscription")
        return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"no resource {NFM}{rest}")

    async def _put(self, req: Request, nf_id: str) -> LocalResponse:
        body = self._body(req, "application/json")
        if isinstance(body, LocalResponse):
            return body
        created, profile = await self.registry.register(nf_id, body)
        out = _encode(profile)
        if created:
            loc = f"{self._api_root(req)}{NFM}/nf-instances/{profile['nfInstanceId']}"
            return _json_response(201, out, [(b"location", loc.encode())])
        return _json_response(200, out)

    async def _patch(self, req: Request, nf_id: str) -> LocalResponse:
        body = self._body(req, PATCH_MEDIA)
        if isinstance(body, LocalResponse):
            return body
        try:
            profile, nrf_changed = await self.registry.update(nf_id, body)
        except NotFound:
            return problem(404, "RESOURCE_CONTEXT_NOT_FOUND", f"NF instance {nf_id} not found")
        if nrf_changed:
            return _json_response(200, _encode(profile))
        return _empty(204)

    def _get(self, nf_id: str) -> LocalResponse:
        try:
            return _json_response(200, _encode(self.registry.get(nf_id)))
        except NotFound:
            if not is_uuid(nf_id):
                return problem(400, "MANDATORY_IE_INCORRECT", "nfInstanceId is not a UUID",
                               [{"param": "nfInstanceId", "reason": "not a UUID"}])
            return problem(404, "RESOURCE_CONTEXT_NOT_FOUND", f"NF instance {nf_id} not found")

    def _list(self, req: Request, query: str) -> LocalResponse:
        """GET nf-instances: a UriList (``_links.item``, ``_links.self``, ``totalItemCount``).

        ``nf-type`` filters; ``page-size`` cuts the sorted ids into pages (without it, one page
        holds them all) and ``page-number`` (default 1) picks one; ``limit`` caps the items of
        the answer; ``totalItemCount`` counts every instance of the type, before paging and
        limit.  An unknown, repeated or out-of-range parameter is a 400 INVALID_QUERY_PARAM
        naming it."""
        try:
            params = _list_params(query)
        except _QueryError as exc:
            return problem(400, "INVALID_QUERY_PARAM", f"{exc.param}: {exc.reason}",
                           [{"param": exc.param, "reason": exc.reason}])
        ids = sorted(self.registry.instance_ids(params.get("nf-type")))
        total = len(ids)
        if "page-size" in params or "page-number" in params:
            size = params.get("page-size") or max(total, 1)  # no page-size: one page of all
            first = (params.get("page-number", 1) - 1) * size
            ids = ids[first:first + size]
        limit = params.get("limit")
        if limit is not None:
            ids = ids[:limit]
        root = f"{self._api_root(req)}{NFM}/nf-instances"
        # TS 29.510 names two members, item and self; with no instance, item is an empty
        # array (what Open5GS's NRF sends and its UriList parser requires), although the
        # yaml's LinksValueSchema asks for at least one link
        body = {
            "_links": {
                "item": [{"href": f"{root}/{i}"} for i in ids],
                "self": {"href": root + (f"?{query}" if query else "")},
            },
            "totalItemCount": total,
        }
        return _json_response(200, _encode(body), ctype=HAL_JSON)

    # ------------------------------------------------------------------ NFDiscovery

    def _disc(self, req: Request, rest: str, query: str) -> LocalResponse:
        if rest != "/nf-instances":
            return problem(404, "RESOURCE_URI_STRUCTURE_NOT_FOUND", f"no resource {DISC}{rest}")
        if req.method != "GET":
            return problem(405, "INVALID_API", f"{req.method} not allowed on nf-instances")
        version = self.registry.version
        hit = self._disc_cache.get(query)
        if hit is not None and hit[0] == version:
            return _json_response(200, hit[1])
        try:
            q = parse_query(query)
        except DiscoveryError as exc:
            return problem(400, exc.cause, str(exc), exc.invalid_params)
        ids = self.registry.discover(q)
        if q.limit is not None:
            ids = ids[: q.limit]
        budget = (q.max_payload_size or 124) * 1000
        parts: list[bytes] = []
        size = 64
        for nf_id in ids:
            b = self.registry.public_json(nf_id)
            if size + len(b) + 1 > budget and parts:
                break
            parts.append(b)
            size += len(b) + 1
        validity = str(self.registry.settings.discovery_validity_s).encode()
        body = (b'{"validityPeriod":' + validity + b',"nfInstances":[' + b",".join(parts)
                + b'],"numNfInstComplete":' + str(len(ids)).encode() + b"}")
        if len(self._disc_cache) >= DISCOVERY_CACHE_SIZE:
            self._disc_cache.clear()
        self._disc_cache[query] = (version, body)
        return _json_response(200, body)


class NrfRouter:
    """Router that claims the NRF's requests for ``NrfApi``; ``None`` for anything else."""

    def __init__(self, api: NrfApi, *, own_api_roots: tuple[str, ...] = ()) -> None:
        self.api = api
        self.service = api.service
        self.own_api_roots = tuple(r.rstrip("/").encode() for r in own_api_roots)

    def route(self, headers: Headers, peer: dict) -> LocalService | LocalResponse | None:
        path = b""
        target_nrf = False
        apiroot = None
        for k, v in headers:
            if k == b":path":
                path = v
            elif k == b"3gpp-sbi-discovery-target-nf-type":
                target_nrf = v.strip().upper() == b"NRF"
            elif k == b"3gpp-sbi-target-apiroot":
                apiroot = v.rstrip(b"/")
        if apiroot is not None and apiroot not in self.own_api_roots:
            return None  # meant for another NRF: model C forwards it
        if (path.startswith(b"/nnrf-nfm/") or path.startswith(b"/nnrf-disc/")
                or path.split(b"?", 1)[0] == b"/oauth2/token"):
            return self.service
        if target_nrf:
            return self.service  # an NRF request to a path we do not serve -> 404 there
        return None
