"""The Python client follows the committed OpenAPI schema; a change to the API that it does not follow fails here.

(tests/api/test_openapi.py holds openapi/openapi.json to the app, so an API change reaches this test through it.)
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from tests.client.drift import committed_schema, problems, sync_client_problems


def test_client_follows_the_committed_schema():
    found = problems(committed_schema())
    assert not found, "the client does not follow openapi/openapi.json:\n" + "\n".join(found)


def test_sync_client_is_made_from_the_async_one():
    assert not sync_client_problems()


# Each change below, made to a copy of the schema, must be reported (and how).
Mutation = Callable[[dict[str, Any]], None]


def _new_operation(schema: dict[str, Any]) -> None:
    schema["paths"]["/v1/widgets"] = {"get": {"responses": {"200": {"description": "ok"}}}}


def _operation_removed(schema: dict[str, Any]) -> None:
    del schema["paths"]["/v1/models/{model_id}/sample"]


def _new_upload_format(schema: dict[str, Any]) -> None:
    content = schema["paths"]["/v1/datasets"]["post"]["requestBody"]["content"]
    content["application/vnd.apache.parquet"] = {"schema": {"type": "string", "format": "binary"}}


def _result_field_added(schema: dict[str, Any]) -> None:
    schema["components"]["schemas"]["Score"]["properties"]["median"] = {"type": "number"}


def _result_field_retyped(schema: dict[str, Any]) -> None:
    schema["components"]["schemas"]["Dataset"]["properties"]["n"] = {"type": "number"}


def _result_field_made_optional(schema: dict[str, Any]) -> None:
    schema["components"]["schemas"]["Job"]["required"].remove("progress")


def _request_field_added(schema: dict[str, Any]) -> None:
    schema["components"]["schemas"]["GaussianFitRequest"]["properties"]["n_threads"] = {"type": "integer"}


def _enum_value_added(schema: dict[str, Any]) -> None:
    schema["components"]["schemas"]["GaussianFitRequest"]["properties"]["dtype"]["enum"].append("float16")


def _query_parameter_added(schema: dict[str, Any]) -> None:
    parameter = {"name": "since", "in": "query", "required": False, "schema": {"type": "string"}}
    schema["paths"]["/v1/jobs"]["get"]["parameters"].append(parameter)


def _query_parameter_retyped(schema: dict[str, Any]) -> None:
    schema["paths"]["/v1/datasets"]["get"]["parameters"][0]["schema"] = {"type": "string"}


def _response_changed(schema: dict[str, Any]) -> None:
    response = schema["paths"]["/v1/fit/coins"]["post"]["responses"]["200"]["content"]["application/json"]
    response["schema"] = {"$ref": "#/components/schemas/GaussianFitResult"}


def _request_body_changed(schema: dict[str, Any]) -> None:
    body = schema["paths"]["/v1/models/{model_id}/score"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"] = {"$ref": "#/components/schemas/PredictRequest"}


def _path_parameter_renamed(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    paths["/v1/jobs/{id}"] = paths.pop("/v1/jobs/{job_id}")


def _iteration_event_changed(schema: dict[str, Any]) -> None:
    response = schema["paths"]["/v1/jobs/{job_id}/events"]["get"]["responses"]["200"]
    response["description"] = response["description"].replace("`delta`", "`delta`, `elapsed_ms`")


MUTATIONS: dict[str, tuple[Mutation, str]] = {
    "new operation": (_new_operation, "no client method for GET /v1/widgets"),
    "operation removed": (_operation_removed, "client method sample targets no operation"),
    "new upload format": (_new_upload_format, "POST /v1/datasets (application/vnd.apache.parquet)"),
    "result field added": (_result_field_added, "+ median: float"),
    "result field retyped": (_result_field_retyped, "+ n: float"),
    "result field made optional": (_result_field_made_optional, "+ progress: JobProgress | None = None"),
    "request field added": (_request_field_added, "+ n_threads: NotRequired[int]"),
    "enum value added": (_enum_value_added, '"float16"'),
    "query parameter added": (_query_parameter_added, "list_jobs(): lacks the query parameter since"),
    "query parameter retyped": (_query_parameter_retyped, "list_datasets(): takes limit as int, the schema says str"),
    "response changed": (_response_changed, "fit_coins(): returns CoinFitResult, the schema says GaussianFitResult"),
    "request body changed": (_request_body_changed, "score(): takes ['ScoreRequest'] where the body is PredictRequest"),
    "path parameter renamed": (_path_parameter_renamed, "client method get_job targets no operation"),
    "iteration event changed": (_iteration_event_changed, "the stream's iteration events carry"),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_a_schema_change_the_client_does_not_follow_is_caught(mutation):
    change, expected = MUTATIONS[mutation]
    schema = copy.deepcopy(committed_schema())
    change(schema)
    found = "\n".join(problems(schema))
    assert expected in found, found
