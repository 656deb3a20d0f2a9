"""HTTP routes: parse and size-check bodies, call the pipeline, render JSON, map errors."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from gateway import __version__
from gateway.config import ModelServerConfig
from gateway.errors import GatewayError, invalid
from gateway.metrics import Metrics
from gateway.pipeline import Exchange, Gateway
from gateway.routing.health import Membership, maintain
from gateway.routing.pool import BackendPool, PoolEvents
from gateway.routing.session import SessionKey, SessionSigner, resolve_secret
from gateway.upstream import Backend

log = logging.getLogger("gateway")

ADMIN_KEY_ENV = "GATEWAY_ADMIN_KEY"
STATE_DIR_ENV = "GATEWAY_STATE_DIR"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _admin_url(body: dict[str, Any]) -> str:
    url = body.get("url")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise invalid("'url' must be an http(s) URL ending in /v1.", "url")
    return url.rstrip("/")


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
    metrics = Metrics()
    # which worker process answered (/health and /admin only: debugging several workers)
    worker_header = {"x-gateway-worker": str(os.getpid())}
    admin_key = cfg.admin_key or os.environ.get(ADMIN_KEY_ENV)
    membership = Membership(os.environ.get(STATE_DIR_ENV))
    state: dict[str, Gateway] = {}

    def build_pool() -> BackendPool:
        return BackendPool(
            [Backend(url, cfg) for url in membership.load(cfg.base_url)],
            policy=cfg.routing_policy,
            max_inflight=cfg.max_inflight_per_backend,
            spill=cfg.spill_when_saturated,
            eject_after_failures=cfg.eject_after_failures,
            eject_cooldown_s=cfg.eject_cooldown_s,
            retry_after_s=cfg.saturated_retry_after_s,
        )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        backends = build_pool()
        backends.events = PoolEvents(
            on_eject=metrics.backend_ejected,
            on_readmit=metrics.backend_readmitted,
            on_spill=lambda url: metrics.spills.labels(url).inc(),
        )
        for backend in backends.states:
            metrics.healthy.labels(backend.url).set(1 if backend.healthy else 0)
        state["gateway"] = Gateway(cfg, backends, metrics)
        probes = None
        if cfg.health_check_interval_s > 0:
            probes = asyncio.create_task(
                maintain(backends, membership, cfg, lambda url: Backend(url, cfg))
            )
        try:
            yield
        finally:
            if probes is not None:
                probes.cancel()
            await backends.aclose()

    app = FastAPI(
        title="Responses Gateway",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def with_session(response: Response, session: SessionKey, exchange: Exchange) -> Response:
        if session.cookie_value is not None:
            response.headers.append("set-cookie", signer.set_cookie_header(session.cookie_value))
        if cfg.expose_backend_header:
            response.headers["x-gateway-backend"] = exchange.backend
        return response

    def record(exchange: Exchange, status: int) -> None:
        metrics.requests.labels(exchange.route, str(status), exchange.backend).inc()
        metrics.latency.labels(exchange.route).observe(time.perf_counter() - exchange.started)
        if exchange.first_output_at is not None:
            metrics.ttft.labels(exchange.route).observe(exchange.first_output_at - exchange.started)

    async def recorded(body: AsyncIterator[bytes], exchange: Exchange) -> AsyncIterator[bytes]:
        try:
            async for chunk in body:
                yield chunk
        finally:
            record(exchange, 200)

    async def serve(
        request: Request, route: str, check: Callable[[dict[str, Any]], None]
    ) -> Response:
        exchange = Exchange(route, "", time.perf_counter())
        try:
            body = await read_json_object(request, cfg.max_request_bytes)
            check(body)
            session = signer.session_for(request)
            exchange.session_key = session.key
            gateway = state["gateway"]
            if body.get("stream") is True:
                if route == "responses":
                    events = await gateway.stream_response(body, exchange)
                else:
                    events = await gateway.stream_chat_completion(body, exchange)
                return with_session(sse_response(recorded(events, exchange)), session, exchange)
            if route == "responses":
                result = await gateway.create_response(body, exchange)
            else:
                result = await gateway.chat_completion(body, exchange)
        except GatewayError as exc:
            record(exchange, exc.status)
            raise
        record(exchange, 200)
        return with_session(json_response(result), session, exchange)

    def no_check(body: dict[str, Any]) -> None:
        return None

    def check_chat(body: dict[str, Any]) -> None:
        if not isinstance(body.get("messages"), list):
            raise invalid("'messages' must be an array.", "messages", "invalid_type")

    @app.post("/v1/responses")
    async def create_response(request: Request) -> Response:
        return await serve(request, "responses", no_check)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await serve(request, "chat_completions", check_chat)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def require_admin(request: Request) -> None:
        if not admin_key:
            raise GatewayError(
                404,
                "Admin endpoints are off: set admin_key or $GATEWAY_ADMIN_KEY.",
                code="not_found",
            )
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {admin_key}".encode()):
            raise GatewayError(401, "Invalid admin key.", code="invalid_api_key")

    def pool_view() -> list[dict[str, Any]]:
        return [
            {
                "url": s.url,
                "healthy": s.healthy,
                "in_flight": s.in_flight,
                "consecutive_failures": s.consecutive_failures,
                "ejections": s.ejections,
            }
            for s in state["gateway"].pool.states
        ]

    @app.get("/admin/backends")
    async def admin_list(request: Request) -> Response:
        require_admin(request)
        return json_response({"backends": pool_view()}, headers=worker_header)

    @app.post("/admin/backends")
    async def admin_add(request: Request) -> Response:
        require_admin(request)
        url = _admin_url(await read_json_object(request, 4096))
        added = state["gateway"].pool.add(Backend(url, cfg))
        membership.save([s.url for s in state["gateway"].pool.states])
        return json_response({"added": added, "backends": pool_view()}, 201 if added else 200)

    @app.delete("/admin/backends")
    async def admin_remove(request: Request) -> Response:
        require_admin(request)
        url = _admin_url(await read_json_object(request, 4096))
        pool_ = state["gateway"].pool
        if len(pool_.states) == 1 and pool_.get(url) is not None:
            raise invalid("Cannot remove the last backend.", "url")
        removed = await pool_.remove(url)
        if not removed:
            raise GatewayError(404, f"No backend {url}.", param="url", code="not_found")
        membership.save([s.url for s in pool_.states])
        return json_response({"removed": True, "backends": pool_view()})

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
        states = state["gateway"].pool.states
        reachable = await asyncio.gather(*(s.backend.is_healthy() for s in states))
        return json_response(
            {
                "status": "ok" if any(reachable) else "degraded",
                "model": cfg.model,
                "backends": [
                    {
                        "url": s.url,
                        "healthy": ok,
                        "in_rotation": s.healthy,
                        "in_flight": s.in_flight,
                    }
                    for s, ok in zip(states, reachable, strict=True)
                ],
            },
            headers=worker_header,
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
