"""The coordinator's OpenAPI description, made to tell the truth about refusals and credentials.

FastAPI documents each operation's success, and a 422 in its own validation-error format. The
coordinator answers every refusal with an RFC 9457 problem document instead (see
:mod:`hydracompute.coordinator.problems`), authenticates with bearer credentials or a session
cookie, and refuses for reasons FastAPI cannot see: roles, rate limits, unknown ids, conflicts
with recorded state. :func:`install_openapi` post-processes the generated document so that

* every operation declares, as ``application/problem+json``, each status it can send: those
  its credentials explain (401, 403, 429), those its inputs explain (413, 422), the ones of
  :data:`REFUSALS` (404, 409, ...), 500 and 503; and a ``4XX`` problem catch-all, so that any
  refusal (a 405 for a wrong method, say) still matches the document;
* the security schemes say how each operation is authenticated: an API key or a session
  cookie, a worker's own secret, or nothing.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, get_type_hints

import fastapi.routing
from fastapi import FastAPI
from fastapi.routing import APIRoute

from hydracompute.coordinator.auth import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE, Principal
from hydracompute.coordinator.problems import PROBLEM_MEDIA_TYPE
from hydracompute.core.models import JobState

JSON = dict[str, Any]

#: Refusals of an operation that neither its credentials nor its inputs explain, by route
#: name. An operation missing here still gets the derived statuses and the ``4XX`` catch-all;
#: the tests keep this table and the routes in step.
REFUSALS: dict[str, frozenset[int]] = {
    # jobs: a submitter's quota of running jobs; a job another submitter owns is not found
    "submit_job": frozenset({429}),
    "list_jobs": frozenset(),
    "list_shares": frozenset(),
    "get_job": frozenset({404}),
    "cancel_job": frozenset({404, 409}),
    "job_result": frozenset({404, 409}),
    "job_artefact": frozenset({404}),
    "history": frozenset({404}),
    "chunks": frozenset({404}),
    "preview": frozenset({404}),
    # workers: enrolling spends a join token; an exchange's results may be refused
    "enrol": frozenset({401, 429, 503}),
    "exchange": frozenset({403, 404, 409, 422}),
    "rejoin": frozenset({404}),
    "leave": frozenset(),
    "return_leases": frozenset({403, 404}),
    "list_workers": frozenset(),
    # administration (the admin role: viewers and submitters are forbidden, even to read)
    "create_key": frozenset({403}),
    "list_keys": frozenset({403}),
    "revoke_key": frozenset({403, 404}),
    "set_key_weight": frozenset({403, 404}),
    "create_join_token": frozenset({403}),
    "list_join_tokens": frozenset({403}),
    "revoke_join_token": frozenset({403, 404}),
    "revoke_worker": frozenset({403, 404}),
    "remove_worker": frozenset({403, 404}),
    "label_worker": frozenset({403, 404}),
    # blobs: uploading needs the pool's code role and stays under its size limit; a worker
    # fetches only what its leases name, from where a cut-off download stopped
    "blob_exists": frozenset({404}),
    "upload_blob": frozenset({403, 413}),
    "fetch_blob": frozenset({403, 404, 416}),
    # sessions: signing in checks an API key, rate-limited per address
    "sign_in": frozenset({401, 429, 503}),
    "whoami": frozenset({429, 503}),
    "sign_out": frozenset(),
    # the pool
    "certificate_authority": frozenset({404}),
    "health": frozenset({503}),
    "coordinators": frozenset(),
    "kinds": frozenset(),
    "pool": frozenset(),
    "events": frozenset({404}),  # with job=ID, a job the caller cannot see
    # credit: the statement is the admin's; the leaderboard and a volunteer's page anyone's
    # who may read the pool;
    # a worker's own credit, with its secret
    "credit_statement": frozenset({403}),
    "leaderboard": frozenset(),
    "carbon": frozenset(),
    "volunteer": frozenset({404}),
    "worker_credit": frozenset(),
}

#: Routes that authenticate by hand rather than by a role dependency, with their security
#: requirements: ``{}`` means that a request may also go without a credential.
CREDENTIALS_BY_HAND: dict[str, list[JSON]] = {
    # answers signed_in false, not 401, without a usable credential
    "whoami": [{"apiKey": []}, {"session": []}, {}],
}

PROBLEM_SCHEMA: JSON = {
    "type": "object",
    "title": "Problem",
    "description": (
        "An RFC 9457 problem document: every refusal and error of the coordinator. "
        "Members beyond the standard ones are extensions that some problems carry."
    ),
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {
            "type": "string",
            "description": "The problem type; about:blank means the title says it all.",
            "default": "about:blank",
        },
        "title": {"type": "string", "minLength": 1, "description": "Short and fixed per type."},
        "status": {
            "type": "integer",
            "minimum": 400,
            "maximum": 599,
            "description": "The HTTP status code of the response.",
        },
        "detail": {
            "type": "string",
            "minLength": 1,
            "description": "What went wrong with this request, for a person to read.",
        },
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": (
                "Invalid requests and job parameters: one message per offending field, keyed "
                "by its name or its location in the request (e.g. body.want)."
            ),
        },
        "lease_id": {
            "type": "string",
            "description": "The lease whose result made an exchange refused as a whole.",
        },
        "state": {
            "type": "string",
            "enum": [state.value for state in JobState],
            "description": "The job's state, when its result was asked for before it was done.",
        },
        "retry_after_s": {
            "type": "integer",
            "minimum": 0,
            "description": "Over a rate limit: seconds until a request is allowed again.",
        },
    },
    # RFC 9457 lets problem types add members; clients ignore the ones they do not know.
    "additionalProperties": True,
}

#: status → (name of the response component, description, headers it always carries)
RESPONSES: dict[str, tuple[str, str, JSON]] = {
    "401": (
        "Unauthorized",
        "No credential, or an unknown, wrong, expired or revoked one (API key, session, "
        "join token or worker secret).",
        {
            "WWW-Authenticate": {
                "description": "The scheme to authenticate with: Bearer.",
                "required": True,
                "schema": {"type": "string"},
            }
        },
    ),
    "403": (
        "Forbidden",
        "The credential may not do this: a role below the one needed, a change made through "
        f"a session cookie without its {CSRF_HEADER} header, or another worker's lease.",
        {},
    ),
    "404": (
        "NotFound",
        "No such job, artefact, lease, worker or credential (another submitter's jobs do not "
        "exist for a submitter).",
        {},
    ),
    "409": (
        "Conflict",
        "The request contradicts recorded state: a job that has already finished or is not "
        "done yet, or a second, different result for a lease.",
        {},
    ),
    "413": (
        "RequestTooLarge",
        "The request body is larger than the coordinator accepts.",
        {},
    ),
    "416": (
        "RangeNotSatisfiable",
        "A Range that starts past the end of the blob; content_range gives its size.",
        {},
    ),
    "422": (
        "InvalidRequest",
        "A malformed request (not JSON, a field missing, of the wrong type or out of range), "
        "an unknown job kind, invalid job parameters or an invalid chunk result; errors "
        "names the offending fields where there are any.",
        {},
    ),
    "429": (
        "TooManyRequests",
        "Over a rate limit (per API key, worker or address) or a submitter's quota of "
        "running jobs.",
        {
            "Retry-After": {
                "description": "Seconds to wait before trying again.",
                "required": True,
                "schema": {"type": "integer", "minimum": 0},
            }
        },
    ),
    "4XX": (
        "Refused",
        "Any other refusal, e.g. 405 for a method the path does not allow, or 400 for a "
        "request that is not valid HTTP/1.1 (a malformed Content-Length, say).",
        {},
    ),
    "500": (
        "InternalError",
        "A bug in the coordinator; the details are in its log, not in the answer.",
        {},
    ),
    "503": (
        "StoreUnavailable",
        "The coordinator's store could not be read or written; try again later.",
        {},
    ),
}

SECURITY_SCHEMES: JSON = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "An API key from the pool's admin, as 'Authorization: Bearer <key>'. Its role "
            "(viewer, submitter or admin) decides what it may do."
        ),
    },
    "session": {
        "type": "apiKey",
        "in": "cookie",
        "name": SESSION_COOKIE,
        "description": (
            "The session cookie set by POST /api/v1/session. A change made through it must "
            f"also carry the session's {CSRF_HEADER} header."
        ),
    },
    "workerSecret": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A worker's own secret, returned once when it enrols, as "
            "'Authorization: Bearer <secret>'; only for that worker's own paths."
        ),
    },
}


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and so ``/openapi.json`` and ``/docs``) describe the problem
    responses and the security schemes of the coordinator's operations."""
    generate = app.openapi
    raw: JSON | None = None
    described: JSON = {}

    def openapi() -> JSON:
        nonlocal raw, described
        generated = generate()  # FastAPI's own, cached until the routes change
        if generated is not raw:
            security = getattr(app.state, "security", None)
            anonymous_read = security is not None and bool(security.anonymous_read)
            described = describe_refusals(copy.deepcopy(generated), app.routes, anonymous_read)
            raw = generated
        return described

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented extension point


def describe_refusals(schema: JSON, routes: list[Any], anonymous_read: bool = False) -> JSON:
    """``schema``, FastAPI's document for ``routes``, with every refusal and credential
    declared (changed in place and returned).

    Args:
        anonymous_read: requests without a credential may read, so the safe operations that
            take an API key may also go without one.
    """
    # Copies throughout: a document is the caller's to change, the tables here are not.
    components = schema.setdefault("components", {})
    components.setdefault("schemas", {})["Problem"] = copy.deepcopy(PROBLEM_SCHEMA)
    components["responses"] = {
        name: _problem_response(status, description, headers)
        for status, (name, description, headers) in RESPONSES.items()
    }
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    by_operation = {(path, method): found for path, method, found in _operations(routes)}
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            found = by_operation.get((path, method))
            if found is not None:
                _describe_operation(operation, found, method.upper(), anonymous_read)
    _drop_unused_schemas(schema, ("HTTPValidationError", "ValidationError"))
    return schema


@dataclass(frozen=True)
class _Operation:
    name: str
    endpoint: Callable[..., Any]


def _operations(routes: list[Any]) -> Iterator[tuple[str, str, _Operation]]:
    """(path, method, operation) of each documented route, through included routers."""
    # FastAPI keeps included routers as such since 0.16x and walks them with
    # iter_route_contexts; before, app.routes was already flat.
    contexts = getattr(fastapi.routing, "iter_route_contexts", iter)(routes)
    for context in contexts:
        route = getattr(context, "original_route", context)
        if isinstance(route, APIRoute) and context.include_in_schema:
            operation = _Operation(context.name, context.endpoint)
            for method in context.methods:
                yield context.path_format, method.lower(), operation


def _problem_response(status: str, description: str, headers: JSON) -> JSON:
    if status.endswith("XX"):
        low = int(status[0]) * 100
        status_schema: JSON = {"minimum": low, "maximum": low + 99}
    else:
        status_schema = {"const": int(status)}
    response: JSON = {
        "description": description,
        "content": {
            PROBLEM_MEDIA_TYPE: {
                "schema": {
                    "allOf": [
                        {"$ref": "#/components/schemas/Problem"},
                        {"properties": {"status": status_schema}},
                    ]
                }
            }
        },
    }
    if headers:
        response["headers"] = copy.deepcopy(headers)
    return response


def _describe_operation(
    operation: JSON, route: _Operation, method: str, anonymous_read: bool
) -> None:
    parameters = operation.get("parameters", [])
    # A worker's secret: an explicit Authorization header parameter of the route. OpenAPI
    # ignores header parameters named Authorization; a security requirement says it instead.
    # Its length is still validated, hence a possible 422 even without a body.
    worker_auth = any(_is_authorization(p) for p in parameters)
    parameters = [p for p in parameters if not _is_authorization(p)]
    if parameters:
        operation["parameters"] = parameters
    else:
        operation.pop("parameters", None)
    api_key_auth = _takes_principal(route.endpoint)

    statuses = {413, 500} | REFUSALS.get(route.name, frozenset())
    if "requestBody" in operation or worker_auth or any(_may_be_invalid(p) for p in parameters):
        statuses.add(422)
    if api_key_auth:
        statuses |= {401, 429, 503}
        if method not in SAFE_METHODS:
            statuses.add(403)  # a change through a session cookie without the CSRF token
        security: list[JSON] = [{"apiKey": []}, {"session": []}]
        if anonymous_read and method in SAFE_METHODS:
            security.append({})
        operation["security"] = security
    elif worker_auth:
        statuses |= {401, 429, 503}
        operation["security"] = [{"workerSecret": []}]
    if route.name in CREDENTIALS_BY_HAND:
        operation["security"] = copy.deepcopy(CREDENTIALS_BY_HAND[route.name])

    responses = {
        code: response
        for code, response in operation.get("responses", {}).items()
        if code.startswith(("1", "2", "3"))
    }
    for status in [*map(str, sorted(statuses)), "4XX"]:
        name = RESPONSES[status][0]
        responses[status] = {"$ref": f"#/components/responses/{name}"}
    operation["responses"] = dict(sorted(responses.items()))


def _is_authorization(parameter: JSON) -> bool:
    return parameter.get("in") == "header" and str(parameter.get("name")).lower() == "authorization"


def _may_be_invalid(parameter: JSON) -> bool:
    """Whether FastAPI may refuse this parameter: anything but an always-present string."""
    if parameter.get("in") != "path":
        return True
    schema = {k: v for k, v in parameter.get("schema", {}).items() if k != "title"}
    return schema != {"type": "string"}


def _takes_principal(endpoint: Callable[..., Any]) -> bool:
    """Whether the route authenticates its caller by API key (or session): it is given the
    :class:`Principal`, which only the role dependencies of :mod:`.auth` provide."""
    return any(hint is Principal for hint in get_type_hints(endpoint).values())


def _drop_unused_schemas(schema: JSON, names: tuple[str, ...]) -> None:
    schemas = schema["components"]["schemas"]
    for name in names:
        if name in schemas:
            rest = {k: v for k, v in schemas.items() if k != name}
            others = json.dumps([schema["paths"], rest, schema["components"].get("responses")])
            if f'"#/components/schemas/{name}"' not in others:
                del schemas[name]
