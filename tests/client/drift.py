"""Where the Python client (client/em_client) and an OpenAPI schema disagree, as a list of sentences.

An empty list for the committed openapi/openapi.json is the contract; tests/client/test_schema_drift.py also
feeds it altered schemas to show that each kind of change is caught. What is compared:

- the result dataclasses and request TypedDicts: em_client/models.py must be what generate_models.py makes of
  the schema (every field, its type, required or not);
- the operations: every (method, path, request content type) of the schema is called by a client method listed
  in em_client._calls.OPERATIONS, and every listed method calls one that exists;
- the methods of EMClient and AsyncEMClient: one per listed operation (plus the helpers below), each taking the
  operation's request body TypedDict as keyword arguments, its path parameters positionally, its query parameters
  by name and type, and returning the type of its success response;
- the event stream: the fields of an ``iteration`` event and the final events, as the stream's description says;
- the synchronous client is what unasync.py makes of the asynchronous one.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import re
import types
import typing
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Union

from em_client import AsyncEMClient, EMClient
from em_client._calls import OPERATIONS
from em_client.events import FINAL_EVENTS, _IterationData

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "openapi" / "openapi.json"
SCRIPTS = REPO / "client" / "scripts"

# Client methods that call no endpoint of their own (built on those that do).
HELPERS = {EMClient: {"wait", "close"}, AsyncEMClient: {"wait", "aclose"}}
# Headers the client sets itself rather than taking them as arguments (follow() resumes with Last-Event-ID).
CLIENT_HEADERS = {"Last-Event-ID"}


def _script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"client_scripts_{name}", SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate_models = _script("generate_models")
unasync = _script("unasync")


def committed_schema() -> dict[str, Any]:
    return json.loads(SCHEMA.read_text())  # type: ignore[no-any-return]


def problems(schema: dict[str, Any]) -> list[str]:
    found = _models(schema)
    found += _operations(schema)
    for client in (EMClient, AsyncEMClient):
        found += _methods(client, schema)
    found += _events(schema)
    return found


def sync_client_problems() -> list[str]:
    made = unasync.unasync(unasync.SOURCE.read_text())
    return [] if made == unasync.TARGET.read_text() else ["em_client/_sync.py is stale: run client/scripts/unasync.py"]


def _models(schema: dict[str, Any]) -> list[str]:
    expected = generate_models.generate(schema)
    committed = generate_models.TARGET.read_text()
    if expected == committed:
        return []
    old, new = set(committed.splitlines()), set(expected.splitlines())
    changes = [f"- {line.strip()}" for line in committed.splitlines() if line not in new]
    changes += [f"+ {line.strip()}" for line in expected.splitlines() if line not in old]
    shown = "\n".join(changes[:20])
    return [f"em_client/models.py differs from the schema (make client-models):\n{shown}"]


def _schema_operations(schema: dict[str, Any]) -> dict[tuple[str, str, str | None], dict[str, Any]]:
    found = {}
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            content_types = list(operation.get("requestBody", {}).get("content", {})) or [None]
            for content_type in content_types:
                found[(method.upper(), path, content_type)] = operation
    return found


def _operations(schema: dict[str, Any]) -> list[str]:
    in_schema = _schema_operations(schema)
    called = {(op.method, op.path, op.content_type): name for name, op in OPERATIONS.items()}
    found = [
        f"no client method for {method} {path}" + (f" ({content})" if content else "")
        for (method, path, content) in in_schema
        if (method, path, content) not in called
    ]
    found += [
        f"client method {name} targets no operation: {key[0]} {key[1]}" + (f" ({key[2]})" if key[2] else "")
        for key, name in called.items()
        if key not in in_schema
    ]
    return found


def _methods(client: type, schema: dict[str, Any]) -> list[str]:
    public = {name for name, member in vars(client).items() if callable(member) and not name.startswith("_")}
    expected = set(OPERATIONS) | HELPERS[client]
    found = [f"{client.__name__} lacks {name}()" for name in sorted(expected - public)]
    found += [f"{client.__name__}.{name}() is not in em_client._calls.OPERATIONS" for name in sorted(public - expected)]
    in_schema = _schema_operations(schema)
    for name, op in OPERATIONS.items():
        operation = in_schema.get((op.method, op.path, op.content_type))
        if name in public and operation is not None:
            mismatches = _signature(getattr(client, name), op, operation)
            found += [f"{client.__name__}.{name}(): {text}" for text in mismatches]
    return found


def _signature(method: Any, op: Any, operation: dict[str, Any]) -> list[str]:
    hints = typing.get_type_hints(method, localns={"ArrayLike": Any}, include_extras=True)
    parameters = list(inspect.signature(method).parameters.values())[1:]  # without self
    found = []

    body = operation.get("requestBody", {}).get("content", {}).get(op.content_type, {}).get("schema")
    if op.content_type == "application/json" and body is not None:
        expected = _request_name(body, op)
        keywords = [p for p in parameters if p.kind is p.VAR_KEYWORD]
        unpacked = [typing.get_args(hints[p.name]) for p in keywords]
        names = [args[0].__name__ for args in unpacked if args]
        if names != [expected]:
            found.append(f"takes {names or 'no keyword arguments'} where the body is {expected}")

    path_names = re.findall(r"{(\w+)}", op.path)
    positional = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if op.content_type not in (None, "application/json"):
        positional = positional[:-1]  # the last is the body itself (bytes, text, an array)
    if path_names != positional:
        found.append(f"takes {positional} positionally where the path has {path_names}")

    writer = generate_models.Writer(request=True)
    query = {
        p["name"]: writer.type(p.get("schema", {}))
        for p in operation.get("parameters", [])
        if p["in"] == "query" or (p["in"] == "header" and p["name"] not in CLIENT_HEADERS)
    }
    options = {p.name: annotation_text(hints[p.name]) for p in parameters if p.kind is p.KEYWORD_ONLY}
    if op.path.endswith("/events"):
        options.pop("last_event_id", None)  # sent as the Last-Event-ID header
    for param in sorted(set(query) | set(options)):
        if param not in options:
            found.append(f"lacks the query parameter {param}: {query[param]}")
        elif param not in query:
            found.append(f"takes {param}, which the operation does not")
        elif options[param] != query[param]:
            found.append(f"takes {param} as {options[param]}, the schema says {query[param]}")

    returned = _response_type(operation)
    if returned is not None and annotation_text(hints["return"]) != returned:
        found.append(f"returns {annotation_text(hints['return'])}, the schema says {returned}")
    return found


def _request_name(body: dict[str, Any], op: Any) -> str:
    if "$ref" in body:
        return str(generate_models.ref_name(body["$ref"]))
    if op.method == "POST" and op.path == "/v1/models":
        return str(generate_models.MODEL_IMPORT)
    return str(body.get("title"))


def _response_type(operation: dict[str, Any]) -> str | None:
    """The success response's type as the generator writes it; None for the event stream (follow's own)."""
    status = min(code for code in operation["responses"] if code.startswith("2"))
    content = operation["responses"][status].get("content", {})
    if not content:
        return "None"
    if "text/event-stream" in content:
        return None
    if "application/json" in content:
        return str(generate_models.Writer(request=False).type(content["application/json"]["schema"]))
    return "str" if all(kind.startswith("text/") for kind in content) else "bytes"  # metrics' text; an image


def annotation_text(annotation: Any) -> str:
    """A resolved annotation written as generate_models writes types (``list[int] | None``, ``Literal["a"]``)."""
    if annotation is type(None) or annotation is None:
        return "None"
    if annotation is Any:
        return "Any"
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " | ".join(annotation_text(arg) for arg in typing.get_args(annotation))
    if origin is Literal:
        return f"Literal[{', '.join(json.dumps(arg) for arg in typing.get_args(annotation))}]"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(annotation_text(arg) for arg in typing.get_args(annotation))}]"
    if annotation is datetime or isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _events(schema: dict[str, Any]) -> list[str]:
    stream = schema["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]["description"]
    found = []
    match = re.search(r"`iteration` \(data: ([^)]*)\)", stream)
    said = re.findall(r"`(\w+)`", match.group(1)) if match else []
    fields = [field.name for field in dataclasses.fields(_IterationData)]
    if said != fields:
        found.append(f"the stream's iteration events carry {said}; the client reads {fields}")
    finals = re.search(r"then exactly one of ([^(]*)\(", stream)
    named = set(re.findall(r"`(\w+)`", finals.group(1))) if finals else set()
    if named != FINAL_EVENTS:
        found.append(f"the stream's final events are {sorted(named)}; the client ends on {sorted(FINAL_EVENTS)}")
    return found
