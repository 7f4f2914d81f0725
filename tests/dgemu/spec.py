"""Validation of dgemu's wire traffic against Deepgram's official specs.

``/work/shared/deepgram/openapi.yml`` (OpenAPI 3.1, whose schemas are JSON Schema 2020-12) and
``asyncapi.yml`` (AsyncAPI 2.6) are loaded once. Each document is registered whole as one
``referencing`` resource, so the ``$ref: '#/components/schemas/…'`` pointers inside resolve against it.
A response is validated with ``Draft202012Validator`` and a format checker for ``uuid``, ``date`` and
``date-time`` (the formats the spec uses for ids and timestamps).

The spec's ``ErrorResponse`` is a ``oneOf`` of a string and two objects whose properties are all optional
and open, so every JSON object matches both object variants and the ``oneOf`` can never hold for one.
``ERROR_SCHEMA`` keeps the three variants but closes the two objects (``unevaluatedProperties: false``)
and requires their identifying fields (``err_code``+``err_msg``, ``category``+``message``), which makes
"exactly one variant" decidable.
"""

from __future__ import annotations

import functools
import json
import os
import re
import uuid
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(os.environ.get("DEEPGRAM_SPEC_DIR", "/work/shared/deepgram"))
OPENAPI_URI = "urn:deepgram:openapi"
ASYNCAPI_URI = "urn:deepgram:asyncapi"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}

# --------------------------------------------------------------------------- formats

FORMATS = FormatChecker(formats=())
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
_DATETIME = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d+)?"
    r"([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)


@FORMATS.checks("date")
def _is_date(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE.match(value))


@FORMATS.checks("date-time")
def _is_datetime(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATETIME.match(value))


@FORMATS.checks("uuid")
def _is_uuid(value: object) -> bool:
    if not isinstance(value, str):
        return True
    try:
        return str(uuid.UUID(value)) == value.lower() and len(value) == 36
    except ValueError:
        return False


# --------------------------------------------------------------------------- documents


@functools.cache
def openapi() -> dict:
    return yaml.safe_load((SPEC_DIR / "openapi.yml").read_text())


@functools.cache
def asyncapi() -> dict:
    return yaml.safe_load((SPEC_DIR / "asyncapi.yml").read_text())


@functools.cache
def registry() -> Registry:
    return Registry().with_resources([
        (OPENAPI_URI, Resource.from_contents(openapi(), default_specification=DRAFT202012)),
        (ASYNCAPI_URI, Resource.from_contents(asyncapi(), default_specification=DRAFT202012)),
    ])


def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def validator(schema: dict) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=registry(), format_checker=FORMATS)


def spec_operations() -> set[tuple[str, str]]:
    """Every (METHOD, path template) of the OpenAPI document."""
    return {
        (method.upper(), path)
        for path, item in openapi()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


@functools.cache
def response_validator(method: str, template: str, status: str = "200",
                       content_type: str = "application/json") -> Draft202012Validator:
    """The validator of the documented response of one operation (raises KeyError if undocumented)."""
    operation = openapi()["paths"][template][method.lower()]
    schema = operation["responses"][status]["content"][content_type]["schema"]  # KeyError if not documented
    ref = OPENAPI_URI + "#/" + _pointer(
        "paths", template, method.lower(), "responses", status, "content", content_type, "schema"
    )
    target = schema.get("$ref", "")
    if target.startswith("#/components/schemas/"):
        component = openapi()["components"]["schemas"][target.rsplit("/", 1)[1]]
        if "oneOf" in component and all(set(v) == {"$ref"} for v in component["oneOf"]):
            # Like ErrorResponse, some responses are a oneOf of open objects with optional properties
            # (GetModelV1Response: STT model | TTS model), which any object satisfies twice. Close each
            # variant so "exactly one" means "the body's fields are those of exactly one variant".
            return validator({"oneOf": [{"$ref": OPENAPI_URI + v["$ref"], "unevaluatedProperties": False}
                                        for v in component["oneOf"]]})
    return validator({"$ref": ref})


def component_validator(name: str) -> Draft202012Validator:
    openapi()["components"]["schemas"][name]  # KeyError if absent
    return validator({"$ref": f"{OPENAPI_URI}#/components/schemas/{name}"})


_ERR = f"{OPENAPI_URI}#/components/schemas/"
ERROR_SCHEMA = {
    "oneOf": [
        {"$ref": _ERR + "ErrorResponseTextError"},
        {"$ref": _ERR + "ErrorResponseLegacyError", "required": ["err_code", "err_msg"],
         "unevaluatedProperties": False},
        {"$ref": _ERR + "ErrorResponseModernError", "required": ["category", "message"],
         "unevaluatedProperties": False},
    ]
}


@functools.cache
def error_validator() -> Draft202012Validator:
    # the variants really are the spec's ErrorResponse variants
    one_of = openapi()["components"]["schemas"]["ErrorResponse"]["oneOf"]
    variants = [v["$ref"].rsplit("/", 1)[1] for v in one_of]
    assert variants == ["ErrorResponseTextError", "ErrorResponseLegacyError", "ErrorResponseModernError"]
    return validator(ERROR_SCHEMA)


def errors_of(v: Draft202012Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:300]}"
        for e in sorted(v.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    ]


def assert_valid(v: Draft202012Validator, instance: Any, what: str) -> None:
    problems = errors_of(v, instance)
    assert not problems, f"{what} does not validate against the spec:\n  " + "\n  ".join(problems[:20]) + (
        f"\n  body: {json.dumps(instance, default=str)[:1500]}"
    )


# --------------------------------------------------------------------------- HTTP responses


def template_of(path: str, templates: Iterable[str] | None = None) -> str:
    """The spec's path template of a concrete path (``/v1/projects/X/keys`` → ``…/{project_id}/keys``)."""
    matches = []
    for t in templates if templates is not None else openapi()["paths"]:
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(t)) + "$"
        if re.match(pattern, path):
            matches.append(t)
    assert matches, f"{path} matches no path of the OpenAPI spec"
    # prefer the most literal template (fewest parameters)
    return min(matches, key=lambda t: t.count("{"))


def json_body(resp: httpx.Response, *, decimal: bool = False) -> Any:
    ctype = resp.headers.get("content-type", "")
    assert ctype.split(";")[0].strip() == "application/json", (
        f"{resp.request.method} {resp.request.url} answered Content-Type {ctype!r}, not application/json"
    )
    if decimal:
        return json.loads(resp.content, parse_float=Decimal)
    return resp.json()


def check_ok(resp: httpx.Response, template: str | None = None, *, status: int = 200) -> Any:
    """Assert ``resp`` is the documented 200 of its operation and return the parsed body."""
    method = resp.request.method
    template = template or template_of(resp.request.url.path)
    assert resp.status_code == status, (
        f"{method} {resp.request.url} → {resp.status_code} (expected {status}): {resp.text[:800]}"
    )
    body = json_body(resp)
    assert_valid(response_validator(method, template), body, f"{method} {template} {resp.status_code}")
    return body


def check_error(resp: httpx.Response, status: int | set[int],
                err_codes: set[str] | None = None, message: str | None = None) -> Any:
    """Assert an error response: the status, a Deepgram error body (ErrorResponse), its code and (as a
    prefix) its message."""
    statuses = {status} if isinstance(status, int) else status
    method, url = resp.request.method, resp.request.url
    assert resp.status_code in statuses, (
        f"{method} {url} → {resp.status_code} (expected {sorted(statuses)}): {resp.text[:800]}"
    )
    ctype = resp.headers.get("content-type", "").split(";")[0].strip()
    if ctype == "application/json":
        body = resp.json()
    else:
        assert ctype.startswith("text/"), f"{method} {url}: error with Content-Type {ctype!r}"
        body = resp.text
    assert_valid(error_validator(), body, f"{method} {url} {resp.status_code} error body")
    if err_codes is not None:
        code = body.get("err_code", body.get("category")) if isinstance(body, dict) else None
        assert code in err_codes, f"{method} {url}: error code {code!r}, expected {sorted(err_codes)}: {body}"
    if message is not None:
        text = body if isinstance(body, str) else body.get("err_msg", body.get("message", ""))
        assert text.startswith(message), f"{method} {url}: error message {text!r}, expected {message!r}…"
    return body


# --------------------------------------------------------------------------- AsyncAPI messages


@functools.cache
def message_validator(channel: str, message_name: str, direction: str = "publish") -> Draft202012Validator:
    """Validator of the payload of message ``message_name`` that the server sends on ``channel``.

    The channel's message refs use raw ``/`` inside one key (``subpackage_listen/v1.listen…``), which is not a
    valid JSON pointer, so the message is found by name in ``components.messages``; its payload ``$ref`` is
    an ordinary pointer and is resolved by the registry.
    """
    doc = asyncapi()
    refs = [m["$ref"] for m in doc["channels"][channel][direction]["message"]["oneOf"]]
    prefix = "#/components/messages/"
    keys = [r[len(prefix):] for r in refs if r.startswith(prefix)]
    messages = doc["components"]["messages"]
    found = [k for k in keys if messages[k]["name"] == message_name]
    assert len(found) == 1, f"{channel} {direction}: no unique message {message_name} among {keys}"
    payload = messages[found[0]]["payload"]
    assert "$ref" in payload
    return validator({"$ref": ASYNCAPI_URI + payload["$ref"]})


# --------------------------------------------------------------------------- dgemu helpers for the tests


def create_key(client: httpx.Client, project_id: str, scopes: list[str], **extra: Any) -> dict:
    """Create a key through the real API; returns the create response (with the secret ``key``)."""
    body = {"comment": "test key", "scopes": scopes, **extra}
    resp = client.post(f"/v1/projects/{project_id}/keys", json=body)
    return check_ok(resp, "/v1/projects/{project_id}/keys")


def inject(client: httpx.Client, project_id: str, records: list[dict]) -> None:
    resp = client.post(f"/_emulator/projects/{project_id}/requests", json={"requests": records})
    assert resp.status_code == 200, f"injection failed: {resp.status_code} {resp.text[:500]}"
    assert resp.json() == {"created": len(records)}


# --------------------------------------------------------------------------- completeness

# Properties the spec documents but that a faithful server may leave out, with the reason.
OPTIONAL_FIELDS: dict[str, str] = {
    # legacy keys docs: tags / expiration_date are left out when empty
    "$.expiration_date": "key without expiry",
    "$.item.member.api_key.tags": "key without tags",
    "$.item.member.api_key.expiration_date": "key without expiry",
    # OAS: the callback URL of the request, absent when none was given
    "$.requests[].callback": "request without callback",
    "$.request.callback": "request without callback",
    # listen / read: blocks that exist only when their feature was requested
    "$.metadata.summary_info": "summarize", "$.metadata.sentiment_info": "sentiment",
    "$.metadata.topics_info": "topics", "$.metadata.intents_info": "intents", "$.metadata.tags": "tag",
    "$.results.channels[].search": "search", "$.results.channels[].detected_language": "detect_language",
    "$.results.channels[].alternatives[].paragraphs": "paragraphs",
    "$.results.channels[].alternatives[].entities": "detect_entities",
    "$.results.channels[].alternatives[].summaries": "summarize v1",
    "$.results.channels[].alternatives[].topics": "topics", "$.results.utterances": "utterances",
    "$.results.summary": "summarize", "$.results.topics": "topics", "$.results.intents": "intents",
    "$.results.sentiments": "sentiment",
    "$.metadata.metadata.summary_info": "summarize", "$.metadata.metadata.sentiment_info": "sentiment",
    "$.metadata.metadata.topics_info": "topics", "$.metadata.metadata.intents_info": "intents",
}


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        ref = schema["$ref"]
        schema = registry().resolver().lookup(OPENAPI_URI + ref if ref.startswith("#") else ref).contents
    return schema


def missing_fields(schema: dict, instance: Any, path: str = "$") -> set[str]:
    """Documented properties absent from ``instance`` (array items as ``[]``), recursively."""
    schema = _resolve(schema)
    variants = schema.get("oneOf") or schema.get("anyOf")
    if variants:
        for v in variants:
            if validator({"$ref": OPENAPI_URI + v["$ref"]} if "$ref" in v else v).is_valid(instance):
                return missing_fields(v, instance, path)
        return set()
    out: set[str] = set()
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in instance:
                out.add(f"{path}.{name}")
            else:
                out |= missing_fields(sub, instance[name], f"{path}.{name}")
    elif isinstance(instance, list) and "items" in schema:
        for item in instance:
            out |= missing_fields(schema["items"], item, f"{path}[]")
    return out


def assert_complete(method: str, template: str, body: Any) -> None:
    schema = openapi()["paths"][template][method.lower()]["responses"]["200"]["content"]["application/json"]
    missing = missing_fields(schema["schema"], body) - set(OPTIONAL_FIELDS)
    assert not missing, f"{method} {template}: documented fields missing: {sorted(missing)}"
