"""The API contract: the code's OpenAPI document is the committed one, and complete."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from sanic import Sanic

from allinone.apiserver import openapi
from allinone.app import build_app
from allinone.config import Settings

COMMITTED = Path(openapi.__file__).with_name("openapi.json")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Sanic[Any, Any]:
    return build_app(Settings(state_dir=tmp_path_factory.mktemp("state")),
                     name=f"openapi_{uuid.uuid4().hex[:8]}")


def test_the_code_s_contract_is_the_committed_one(app: Sanic[Any, Any]) -> None:
    built = json.loads(json.dumps(openapi.build_spec(app)))
    committed = json.loads(COMMITTED.read_text())
    assert built == committed, (
        "the API changed: review the difference and refresh the contract with "
        "`python -m allinone.apiserver.openapi > allinone/apiserver/openapi.json`")


def test_every_route_is_documented(app: Sanic[Any, Any]) -> None:
    assert openapi.undocumented(app) == []


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        out = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return out + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_references_resolve_and_schemas_are_valid(app: Sanic[Any, Any]) -> None:
    spec = openapi.build_spec(app)
    schemas = spec["components"]["schemas"]
    for ref in _refs(spec):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    for schema in schemas.values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_errors_carry_the_error_body_and_api_routes_their_401(app: Sanic[Any, Any]) -> None:
    spec = openapi.build_spec(app)
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                if int(status) >= 400 and path != "/readyz":  # its 503 says what is down
                    schema = resp["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path)
            assert ("401" in op["responses"]) == path.startswith("/api/"), (method, path)
    invoke = spec["paths"]["/function/{name}"]["post"]["responses"]
    assert {"200", "400", "404", "500", "503", "504"} <= set(invoke)


def test_the_error_schema_accepts_what_the_server_sends() -> None:
    schema = openapi.SCHEMAS["Error"]
    jsonschema.validate({"error": {"code": "NotFound", "message": "no function"}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"error": "NotFound"}, schema)


def test_path_parameters_come_from_the_route() -> None:
    app: Sanic[Any, Any] = Sanic(f"t_{uuid.uuid4().hex[:8]}")

    @app.get("/things/<name>/parts/<part:int>")
    @openapi.doc("a part", responses={200: ("the part", {"type": "object"})})
    async def part(request: Any, name: str, part: int) -> Any: ...

    @app.get("/hidden")
    @openapi.doc(hidden=True)
    async def hidden(request: Any) -> Any: ...

    @app.get("/bare")
    async def bare(request: Any) -> Any: ...

    spec = openapi.build_spec(app)
    op = spec["paths"]["/things/{name}/parts/{part}"]["get"]
    assert [p["name"] for p in op["parameters"]] == ["name", "part"]
    assert "/hidden" not in spec["paths"] and "/bare" not in spec["paths"]
    assert openapi.undocumented(app) == ["GET /bare"]
