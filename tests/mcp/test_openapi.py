"""OpenAPI-described REST APIs as MCP upstreams: schema folding, request building, real calls."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from ruamel.yaml import YAML

from crossway.config.mcp import McpTimeouts, OpenApiServerConfig
from crossway.mcp.openapi import (
    ArgumentError,
    OpenApiError,
    OpenApiUpstream,
    RefResolver,
    build_operations,
    build_request,
    render_response,
    sanitize_tool_name,
)
from crossway.mcp.upstream.base import ClientHello, JsonObject, RequestOptions, UpstreamRpcError
from tests.mcp.petstore import PNG, SEEN, SPEC, running_petstore

DOC: dict[str, Any] = YAML(typ="safe", pure=True).load(SPEC.read_text())
OPS = {op.tool_name: op for op in build_operations(DOC)}


def test_tool_names() -> None:
    assert list(OPS) == [
        "listPets",
        "createPet",
        "getPet",
        "delete_pets_petId",
        "replace_pet_tags_v2",
        "createCategory",
        "whoAmI",
        "getPhoto",
    ]
    assert sanitize_tool_name("a" * 100) == "a" * 64
    assert sanitize_tool_name("get /users/{id}:v1") == "get_users_id_v1"
    assert sanitize_tool_name("///") == "operation"


def test_duplicate_names_get_suffixes() -> None:
    doc = {
        "openapi": "3.1.0",
        "paths": {
            "/a": {"get": {"operationId": "op one"}},
            "/b": {"get": {"operationId": "op.one"}},
        },
    }
    assert [op.tool_name for op in build_operations(doc)] == ["op_one", "op_one_2"]


def test_parameters_are_folded_into_one_schema() -> None:
    schema = OPS["listPets"].input_schema
    assert schema == {
        "type": "object",
        "properties": {
            "limit": {"type": "integer", "minimum": 1, "description": "Most pets to return"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
    }  # the Accept header parameter is left to the gateway
    assert (
        OPS["listPets"].description == "List pets\n\nReturns every pet, optionally filtered by tag."
    )

    get_pet = OPS["getPet"].input_schema  # path-level parameter through a $ref
    assert get_pet["properties"]["petId"] == {"type": "integer", "description": "The pet's id"}
    assert get_pet["required"] == ["petId"]

    delete = OPS["delete_pets_petId"].input_schema
    assert set(delete["properties"]) == {"petId", "X-Reason"}
    assert delete["required"] == ["petId", "X-Reason"]


def test_object_body_is_folded_and_nullable_converted() -> None:
    schema = OPS["createPet"].input_schema
    assert schema["properties"] == {
        "name": {"type": "string", "description": "The pet's name"},
        "tag": {"type": ["string", "null"]},
    }
    assert schema["required"] == ["name"]
    assert OPS["createPet"].tool()["annotations"]["readOnlyHint"] is False
    assert OPS["getPet"].tool()["annotations"]["readOnlyHint"] is True


def test_non_object_body_goes_under_body() -> None:
    schema = OPS["replace_pet_tags_v2"].input_schema
    assert schema["properties"]["body"] == {"type": "array", "items": {"type": "string"}}
    assert schema["required"] == ["petId", "body"]


def test_body_clashing_with_a_parameter_goes_under_body() -> None:
    doc = {
        "openapi": "3.0.0",
        "paths": {
            "/x/{id}": {
                "post": {
                    "operationId": "update",
                    "parameters": [{"name": "id", "in": "path", "schema": {"type": "string"}}],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"id": {"type": "string"}},
                                }
                            }
                        }
                    },
                }
            }
        },
    }
    (op,) = build_operations(doc)
    assert set(op.input_schema["properties"]) == {"id", "body"}


def test_recursive_refs_are_cut() -> None:
    schema = OPS["createCategory"].input_schema
    assert schema["properties"] == {
        "name": {"type": "string"},
        "parent": {"description": "(recursive: Category)"},
    }
    orjson.dumps(schema)  # finite and serializable


def test_ref_resolver_pointer_escapes_and_missing_refs() -> None:
    doc = {"components": {"schemas": {"a/b": {"type": "string"}, "x~y": {"type": "integer"}}}}
    resolver = RefResolver(doc)
    assert resolver.resolve({"$ref": "#/components/schemas/a~1b"}) == {"type": "string"}
    assert resolver.resolve({"$ref": "#/components/schemas/x~0y"}) == {"type": "integer"}
    assert resolver.resolve({"$ref": "#/components/schemas/nope"}) == {}
    assert resolver.resolve({"$ref": "other.yaml#/x"}) == {}


def test_rejects_non_openapi3() -> None:
    with pytest.raises(OpenApiError, match="not an OpenAPI 3"):
        build_operations({"swagger": "2.0", "paths": {}})


def test_build_request() -> None:
    request = build_request(OPS["listPets"], {"limit": 5, "tags": ["dog", "cat"]}, "http://h/api/")
    assert (request.method, request.url) == ("GET", "http://h/api/pets")
    assert request.params == [("limit", "5"), ("tags", "dog"), ("tags", "cat")]
    assert request.body is None

    request = build_request(OPS["createPet"], {"name": "Rex", "tag": None}, "http://h/api")
    assert (request.method, request.url) == ("POST", "http://h/api/pets")
    assert orjson.loads(request.body or b"") == {"name": "Rex"}
    assert request.headers == {"Content-Type": "application/json"}

    request = build_request(
        OPS["delete_pets_petId"], {"petId": "a/b c", "X-Reason": "sold"}, "http://h"
    )
    assert request.url == "http://h/pets/a%2Fb%20c"
    assert request.headers == {"X-Reason": "sold"}

    request = build_request(OPS["replace_pet_tags_v2"], {"petId": 1, "body": ["x"]}, "http://h")
    assert orjson.loads(request.body or b"") == ["x"]


def test_build_request_argument_errors() -> None:
    with pytest.raises(ArgumentError, match="missing required arguments: petId"):
        build_request(OPS["getPet"], {}, "http://h")
    with pytest.raises(ArgumentError, match="unknown arguments: color"):
        build_request(OPS["getPet"], {"petId": 1, "color": "red"}, "http://h")


def test_render_response() -> None:
    ok = render_response(200, "OK", "application/json", b'{"a":[1,2]}')
    assert ok == {
        "content": [{"type": "text", "text": '{\n  "a": [\n    1,\n    2\n  ]\n}'}],
        "isError": False,
    }
    bad = render_response(404, "Not Found", "text/plain", b"nope")
    assert bad["isError"] is True
    assert [c["text"] for c in bad["content"]] == ["HTTP 404 Not Found", "nope"]
    image = render_response(200, "OK", "image/png", PNG)
    assert image["content"][0] == {
        "type": "image",
        "data": base64.b64encode(PNG).decode(),
        "mimeType": "image/png",
    }


class _NoEvents:
    async def on_notification(self, server: str, message: JsonObject) -> None:
        raise AssertionError("no notifications expected")

    async def on_request(self, server: str, message: JsonObject) -> JsonObject:
        raise AssertionError("no requests expected")

    async def on_closed(self, server: str) -> None:
        return None


async def _upstream(**cfg: Any) -> OpenApiUpstream:
    config = OpenApiServerConfig.model_validate({"type": "openapi", "spec": str(SPEC), **cfg})
    upstream = OpenApiUpstream("pets", config, McpTimeouts(call=5))
    await upstream.start()
    return upstream


async def test_upstream_lists_and_calls_a_real_service() -> None:
    async with running_petstore() as (base_url, app):
        upstream = await _upstream(base_url=base_url, headers={"X-Api-Key": "k-123"})
        session = await upstream.open_session(ClientHello("2025-06-18"), _NoEvents())
        assert session.init_result["serverInfo"] == {"name": "Pet Store", "version": "1.2.0"}
        assert session.init_result["capabilities"] == {"tools": {"listChanged": False}}
        options = RequestOptions(timeout=5)

        tools = (await session.request("tools/list", None, options))["tools"]
        assert len(tools) == 8 and tools[0]["name"] == "listPets"

        async def call(name: str, arguments: dict[str, Any]) -> JsonObject:
            return await session.request(
                "tools/call", {"name": name, "arguments": arguments}, options
            )

        listed = await call("listPets", {"tags": ["cat"]})
        assert listed["isError"] is False
        assert orjson.loads(listed["content"][0]["text"]) == [
            {"id": 2, "name": "Tom", "tag": "cat"}
        ]

        created = await call("createPet", {"name": "Kit", "tag": "cat"})
        assert orjson.loads(created["content"][0]["text"]) == {"id": 3, "name": "Kit", "tag": "cat"}

        missing = await call("getPet", {"petId": 99})
        assert missing["isError"] is True
        assert missing["content"][0]["text"] == "HTTP 404 Not Found"
        assert orjson.loads(missing["content"][1]["text"]) == {"error": "no such pet"}

        deleted = await call("delete_pets_petId", {"petId": 3, "X-Reason": "adopted"})
        assert deleted == {"content": [{"type": "text", "text": ""}], "isError": False}
        assert app[SEEN] == [{"reason": "adopted"}]

        tags = await call("replace_pet_tags_v2", {"petId": 1, "body": ["good", "dog"]})
        assert orjson.loads(tags["content"][0]["text"]) == {"petId": 1, "tags": ["good", "dog"]}

        me = await call("whoAmI", {})
        assert orjson.loads(me["content"][0]["text"]) == {"authorization": None, "api_key": "k-123"}

        photo = await call("getPhoto", {})
        assert photo["content"][0]["type"] == "image"

        invalid = await call("getPet", {})
        assert invalid["isError"] is True and "missing required" in invalid["content"][0]["text"]

        with pytest.raises(UpstreamRpcError, match="unknown tool"):
            await call("nope", {})
        with pytest.raises(UpstreamRpcError) as info:
            await session.request("sampling/createMessage", {}, options)
        assert info.value.code == -32601
        await upstream.close()


async def test_unreachable_api_is_a_tool_error() -> None:
    async with running_petstore() as (base_url, _):
        dead = base_url  # the server stops when the block ends
    upstream = await _upstream(base_url=dead)
    session = await upstream.open_session(ClientHello("2025-06-18"), _NoEvents())
    result = await session.request(
        "tools/call", {"name": "listPets", "arguments": {}}, RequestOptions(timeout=5)
    )
    assert result["isError"] is True and "failed" in result["content"][0]["text"]
    await upstream.close()


async def test_include_exclude_and_spec_from_url() -> None:
    async with running_petstore():
        # Serve the document itself over HTTP too; its relative server URL resolves against it.
        doc = {**DOC, "servers": [{"url": "/api"}]}

        from aiohttp import web

        async def spec(_: web.Request) -> web.Response:
            return web.json_response(doc)

        spec_app = web.Application()
        spec_app.router.add_get("/openapi.json", spec)
        runner = web.AppRunner(spec_app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        upstream = await _upstream(
            spec=f"http://127.0.0.1:{port}/openapi.json",
            include=["listPets", "getPet"],
            exclude=["getPet"],
        )
        assert list(upstream.operations) == ["listPets"]
        assert upstream.base_url == f"http://127.0.0.1:{port}/api"
        await upstream.close()
        await runner.cleanup()


async def test_missing_document_leaves_the_server_unavailable() -> None:
    from crossway.errors import UpstreamUnreachable

    upstream = await _upstream(spec="/nonexistent/openapi.yaml", base_url="http://127.0.0.1:9")
    with pytest.raises(UpstreamUnreachable, match="cannot read"):
        await upstream.open_session(ClientHello("2025-06-18"), _NoEvents())
    await upstream.close()


async def test_relative_server_url_without_base_url_is_an_error() -> None:
    doc_servers = DOC["servers"]
    assert doc_servers[0]["url"].startswith("{scheme}")
    upstream = await _upstream()  # the fixture's server URL is absolute after variables
    assert upstream.base_url == "https://petstore.invalid/api"
    await upstream.close()


async def test_hanging_api_times_out_as_a_tool_error() -> None:
    import asyncio

    from aiohttp import web

    never = asyncio.Event()

    async def hang(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response()

    app = web.Application()
    app.router.add_get("/api/pets", hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = OpenApiServerConfig.model_validate(
        {"type": "openapi", "spec": str(SPEC), "base_url": f"http://127.0.0.1:{port}/api"}
    )
    upstream = OpenApiUpstream("pets", config, McpTimeouts(call=0.2))
    await upstream.start()
    session = await upstream.open_session(ClientHello("2025-06-18"), _NoEvents())
    result = await session.request(
        "tools/call", {"name": "listPets", "arguments": {}}, RequestOptions(timeout=0.2)
    )
    assert result["isError"] is True and "timed out after 0.2s" in result["content"][0]["text"]
    await upstream.close()
    never.set()
    await runner.cleanup()


async def test_garbage_json_from_the_api_is_passed_as_text() -> None:
    result = render_response(200, "OK", "application/json", b'{"broken": ')
    assert result == {"content": [{"type": "text", "text": '{"broken": '}], "isError": False}
    binary = render_response(200, "OK", "application/octet-stream", b"\xff\xfe\x00")
    assert binary["content"][0]["type"] == "text" and binary["isError"] is False
