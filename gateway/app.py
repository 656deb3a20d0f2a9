"""HTTP routes: parse and size-check bodies, call the pipeline, render JSON, map errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import __version__
from gateway.config import ModelServerConfig
from gateway.errors import GatewayError, invalid
from gateway.pipeline import Gateway
from gateway.routing.pool import BackendPool
from gateway.routing.session import SessionKey, SessionSigner, resolve_secret
from gateway.upstream import Backend

log = logging.getLogger("gateway")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def sse_response(body: AsyncIterator[bytes]) -> StreamingResponse:
    # no-cache / no proxy buffering: every event reaches the client as soon as it is made
    return StreamingResponse(
        body,
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


def error_response(error: GatewayError) -> Response:
    return json_response(error.body(), error.status, error.headers or None)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"Request body exceeds {limit} bytes.", code="request_too_large")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(
                413, f"Request body exceeds {limit} bytes.", code="request_too_large"
            )
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"The request body is not valid JSON: {exc}", None, "invalid_json") from exc
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_type")
    return body


def create_app(cfg: ModelServerConfig) -> FastAPI:
    """The gateway app for one model server config."""
    signer = SessionSigner(
        resolve_secret(cfg.session_secret), cfg.session_header, cfg.session_cookie
    )
    state: dict[str, Gateway] = {}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool = BackendPool([Backend(url, cfg) for url in cfg.base_url])
        state["gateway"] = Gateway(cfg, pool)
        try:
            yield
        finally:
            await pool.aclose()

    app = FastAPI(
        title="Responses Gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def with_session(response: Response, session: SessionKey) -> Response:
        if session.cookie_value is not None:
            response.headers.append("set-cookie", signer.set_cookie_header(session.cookie_value))
        return response

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        body = await read_json_object(request, cfg.max_request_bytes)
        session = signer.session_for(request)
        if body.get("stream") is True:
            events = await state["gateway"].stream_response(body, session.key)
            return with_session(sse_response(events), session)
        result = await state["gateway"].create_response(body, session.key)
        return with_session(json_response(result), session)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read_json_object(request, cfg.max_request_bytes)
        if not isinstance(body.get("messages"), list):
            raise invalid("'messages' must be an array.", "messages", "invalid_type")
        session = signer.session_for(request)
        if body.get("stream") is True:
            chunks = await state["gateway"].stream_chat_completion(body, session.key)
            return with_session(sse_response(chunks), session)
        result = await state["gateway"].chat_completion(body, session.key)
        return with_session(json_response(result), session)

    @app.get("/v1/models")
    async def list_models() -> Response:
        backends = state["gateway"].pool.backends
        answers = await asyncio.gather(
            *(b.get_json("/models", timeout_s=5.0) for b in backends), return_exceptions=True
        )
        seen: dict[str, Any] = {}
        for answer in answers:
            if isinstance(answer, dict):
                for model in answer.get("data") or []:
                    if isinstance(model, dict) and "id" in model:
                        seen.setdefault(model["id"], model)
        if not seen:
            raise GatewayError(
                503,
                "No backend answered /v1/models.",
                type="server_error",
                code="backend_unavailable",
            )
        return json_response({"object": "list", "data": list(seen.values())})

    @app.get("/health")
    async def health() -> Response:
        backends = state["gateway"].pool.backends
        healthy = await asyncio.gather(*(b.is_healthy() for b in backends))
        return json_response(
            {
                "status": "ok" if any(healthy) else "degraded",
                "model": cfg.model,
                "time": time.time(),
                "backends": [
                    {"url": b.base_url, "healthy": h}
                    for b, h in zip(backends, healthy, strict=True)
                ],
            }
        )

    @app.exception_handler(GatewayError)
    async def on_gateway_error(_: Request, exc: GatewayError) -> Response:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return error_response(GatewayError(exc.status_code, str(exc.detail), code=code))

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unexpected error")
        return error_response(
            GatewayError(
                500, f"Internal gateway error: {exc!r}", type="server_error", code="server_error"
            )
        )

    return app
