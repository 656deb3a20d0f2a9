"""The HTTP edge towards vLLM: one pooled client per backend, timeouts, bounded retries, error decoding.

Retries happen only when nothing of the answer has arrived yet (connection refused/reset, or a
429/502/503/504 status), a bounded number of times with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson

from gateway.config import ModelServerConfig
from gateway.errors import GatewayError, server_error

RETRY_STATUSES = frozenset({429, 502, 503, 504})
MAX_RETRY_AFTER_S = 5.0

# vLLM's own wordings for a prompt that does not fit (0.32 and older releases). A bare
# "max_tokens" substring is not enough: vLLM also says it for plain validation errors.
_CONTEXT_LENGTH = re.compile(
    r"maximum context length is \d+ tokens"
    r"|max_tokens must be at least 1, got -?\d+"
    r"|cannot be greater than max_model_len"
    r"|exceeds the max_model_len"
    r"|is too long and exceeds limit of \d+"
    r"|is longer than the maximum model length"
)


async def sse_data(response: httpx.Response) -> AsyncIterator[bytes]:
    """The `data:` payloads of an SSE body, as they arrive (vLLM sends one event per line)."""
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            yield line[5:].strip().encode()


def backoff_s(base_s: float, attempt: int, retry_after: str | None = None) -> float:
    """Exponential backoff with jitter; a backend's `retry-after` wins, capped."""
    if retry_after is not None:
        try:
            return min(float(retry_after), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    return float(base_s * (2 ** (attempt - 1)) * (0.5 + random.random()))


class BackendUnavailable(GatewayError):
    """The connection failed before any byte of an answer: safe to try elsewhere."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(
            503,
            f"Backend {url} is unreachable: {cause!r}",
            type="server_error",
            code="backend_unavailable",
        )


class ContextLengthExceeded(GatewayError):
    """vLLM refused the request because prompt + output do not fit the context."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message, param="input", code="context_length_exceeded")


def is_context_length_error(status: int, message: str) -> bool:
    return status == 400 and _CONTEXT_LENGTH.search(message) is not None


def decode_backend_error(status: int, body: bytes) -> GatewayError:
    """A backend error body (vLLM's, or anything else) -> our OpenAI-shaped error, same status."""
    message = body.decode(errors="replace").strip() or f"backend answered HTTP {status}"
    param = None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        err = parsed.get("error", parsed)
        if isinstance(err, dict):
            message = str(err.get("message") or message)
            param = err.get("param") if isinstance(err.get("param"), str) else None
        elif isinstance(err, str):
            message = err
    if is_context_length_error(status, message):
        return ContextLengthExceeded(message)
    if status >= 500:
        # The gateway itself is fine: report a backend failure as a bad gateway, keeping
        # "unavailable" and "timed out" as they are.
        return server_error(status if status in (503, 504) else 502, f"Backend error: {message}")
    codes = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}
    return GatewayError(status, message, param=param, code=codes.get(status))


class Backend:
    """One vLLM OpenAI server, `base_url` ending in `/v1` as in NeMo Gym configs."""

    def __init__(self, base_url: str, cfg: ModelServerConfig) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self._cfg = cfg
        headers = {"content-type": "application/json", **cfg.default_headers}
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        self._headers = headers
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=cfg.connect_timeout_s,
                read=cfg.read_timeout_s,
                write=cfg.read_timeout_s,
                pool=cfg.read_timeout_s,
            ),
            limits=httpx.Limits(
                max_connections=cfg.max_connections_per_backend,
                max_keepalive_connections=cfg.max_connections_per_backend,
                keepalive_expiry=60.0,
            ),
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def open(
        self,
        url: str,
        body: Mapping[str, Any] | bytes,
        extra_headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """POST a JSON body and return the 200 response with its body unread (the caller reads
        and closes it). An error status is read and raised in OpenAI's shape; 429/502/503/504
        are retried here (bounded, backoff, `retry-after`). A connection that fails before any
        byte raises `BackendUnavailable`: the caller picks the next backend."""
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {**self._headers, **extra_headers} if extra_headers else self._headers
        attempt = 0
        while True:
            request = self.client.build_request("POST", url, content=content, headers=headers)
            try:
                response = await self.client.send(request, stream=True)
            except (
                httpx.ConnectError,
                httpx.ConnectTimeout,
                httpx.RemoteProtocolError,
                httpx.ReadError,
            ) as exc:
                raise BackendUnavailable(self.base_url, exc) from exc
            except httpx.TimeoutException as exc:
                raise self._timeout(exc) from exc
            except httpx.TransportError as exc:
                raise server_error(
                    502, f"Backend {self.base_url} failed: {exc!r}", "bad_gateway"
                ) from exc
            status = response.status_code
            if status == 200:
                return response
            try:
                body_bytes = await self._read(response)
            finally:
                await response.aclose()
            if status in RETRY_STATUSES and attempt < self._cfg.max_retries:
                attempt += 1
                await asyncio.sleep(
                    backoff_s(
                        self._cfg.retry_backoff_s, attempt, response.headers.get("retry-after")
                    )
                )
                continue
            error = decode_backend_error(status, body_bytes)
            if "retry-after" in response.headers:
                error.headers["retry-after"] = response.headers["retry-after"]
            raise error

    async def read_json(self, response: httpx.Response) -> dict[str, Any]:
        """Read, close and decode a response from `open`."""
        try:
            raw = await self._read(response)
        finally:
            await response.aclose()
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise server_error(502, f"Backend {self.base_url} sent invalid JSON") from exc
        if not isinstance(parsed, dict):
            raise server_error(502, f"Backend {self.base_url} sent a non-object body")
        return parsed

    async def _read(self, response: httpx.Response) -> bytes:
        try:
            return await response.aread()
        except httpx.TimeoutException as exc:
            raise self._timeout(exc) from exc
        except httpx.TransportError as exc:
            raise server_error(
                502,
                f"Backend {self.base_url} dropped the connection mid-answer: {exc!r}",
                "bad_gateway",
            ) from exc

    @property
    def chat_url(self) -> str:
        return f"{self.base_url}/chat/completions"

    async def tokenize(self, body: Mapping[str, Any]) -> list[int]:
        """vLLM's `/tokenize` (served at the root, not under /v1)."""
        result = await self.read_json(await self.open(f"{self.root_url}/tokenize", body))
        tokens = result.get("tokens")
        if not isinstance(tokens, list):
            raise server_error(502, "Backend /tokenize returned no tokens")
        return tokens

    async def get_json(self, path: str, timeout_s: float) -> Any:
        response = await self.client.get(
            f"{self.base_url}{path}", headers=self._headers, timeout=timeout_s
        )
        response.raise_for_status()
        return orjson.loads(response.content)

    async def is_healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            response = await self.client.get(f"{self.root_url}/health", timeout=timeout_s)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _timeout(self, exc: Exception) -> GatewayError:
        return server_error(
            504, f"Backend {self.base_url} timed out: {type(exc).__name__}", "timeout"
        )
