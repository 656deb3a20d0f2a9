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

import aiohttp
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


class StreamBroken(Exception):
    """The backend's stream broke after it began: dropped, or no data within the read timeout."""

    def __init__(self, message: str, *, timed_out: bool) -> None:
        super().__init__(message)
        self.timed_out = timed_out


async def sse_data(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The `data:` payloads of an SSE body, as they arrive (vLLM sends one event per line).
    Raises `StreamBroken` when the stream breaks."""
    buffered = b""
    try:
        # whatever arrived, split here: cheaper than aiohttp's line reader per event
        async for data in response.content.iter_any():
            buffered += data
            *lines, buffered = buffered.split(b"\n")
            for line in lines:
                if line.startswith(b"data:"):
                    yield line[5:].strip()
    except TimeoutError as exc:
        raise StreamBroken(
            f"Backend timed out mid-stream: {type(exc).__name__}", timed_out=True
        ) from exc
    except (aiohttp.ClientError, ValueError) as exc:
        raise StreamBroken(f"Backend dropped the stream: {exc!r}", timed_out=False) from exc


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
    """One vLLM OpenAI server, `base_url` ending in `/v1` as in NeMo Gym configs.

    One pooled aiohttp session per backend, created in the running loop on first use
    (aiohttp over httpx: 5-15x less client CPU per call, see docs/decisions.md).
    """

    def __init__(self, base_url: str, cfg: ModelServerConfig) -> None:
        self.base_url = base_url.rstrip("/")
        self.root_url = self.base_url.removesuffix("/v1")
        self.chat_url = f"{self.base_url}/chat/completions"
        self._cfg = cfg
        headers = {"content-type": "application/json", **cfg.default_headers}
        if cfg.api_key:
            headers["authorization"] = f"Bearer {cfg.api_key}"
        self._headers = headers
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            cfg = self._cfg
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=cfg.max_connections_per_backend,
                    limit_per_host=cfg.max_connections_per_backend,
                    # below vLLM's (uvicorn's) 5 s idle timeout: never reuse a connection the
                    # server is closing
                    keepalive_timeout=4.0,
                ),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=cfg.connect_timeout_s, sock_read=cfg.read_timeout_s
                ),
                cookie_jar=aiohttp.DummyCookieJar(),  # affinity is the gateway's, not vLLM's
                skip_auto_headers=("User-Agent",),
                auto_decompress=False,
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(
        self,
        url: str,
        body: Mapping[str, Any] | bytes,
        extra_headers: Mapping[str, str] | None = None,
    ) -> aiohttp.ClientResponse:
        """POST a JSON body and return the 200 response with its body unread (the caller reads
        it, or closes it). An error status is read and raised in OpenAI's shape; 429/502/503/504
        are retried here (bounded, backoff, `retry-after`). A connection that fails before any
        byte raises `BackendUnavailable`: the caller picks the next backend."""
        content = body if isinstance(body, bytes) else orjson.dumps(body)
        headers = {**self._headers, **extra_headers} if extra_headers else self._headers
        attempt = 0
        while True:
            try:
                response = await self.session.post(url, data=content, headers=headers)
            except (
                aiohttp.ClientConnectorError,
                aiohttp.ServerDisconnectedError,
                aiohttp.ClientOSError,
            ) as exc:
                # Nothing of an answer arrived (refused, reset, closed before the head).
                raise BackendUnavailable(self.base_url, exc) from exc
            except TimeoutError as exc:
                raise self._timeout(exc) from exc
            except aiohttp.ClientError as exc:
                raise server_error(
                    502, f"Backend {self.base_url} failed: {exc!r}", "bad_gateway"
                ) from exc
            status = response.status
            if status == 200:
                return response
            body_bytes = await self._read(response)
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

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        try:
            return await response.read()
        except TimeoutError as exc:
            raise self._timeout(exc) from exc
        except aiohttp.ClientError as exc:
            raise server_error(
                502,
                f"Backend {self.base_url} dropped the connection mid-answer: {exc!r}",
                "bad_gateway",
            ) from exc
        finally:
            response.release()

    async def read_json(self, response: aiohttp.ClientResponse) -> dict[str, Any]:
        """Read, release and decode a response from `open`."""
        raw = await self._read(response)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise server_error(502, f"Backend {self.base_url} sent invalid JSON") from exc
        if not isinstance(parsed, dict):
            raise server_error(502, f"Backend {self.base_url} sent a non-object body")
        return parsed

    async def tokenize(self, body: Mapping[str, Any]) -> list[int]:
        """vLLM's `/tokenize` (served at the root, not under /v1)."""
        result = await self.read_json(await self.open(f"{self.root_url}/tokenize", body))
        tokens = result.get("tokens")
        if not isinstance(tokens, list):
            raise server_error(502, "Backend /tokenize returned no tokens")
        return tokens

    async def get_json(self, path: str, timeout_s: float) -> Any:
        async with self.session.get(
            f"{self.base_url}{path}",
            headers=self._headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())

    async def is_healthy(self, timeout_s: float = 2.0) -> bool:
        try:
            async with self.session.get(
                f"{self.root_url}/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def _timeout(self, exc: BaseException) -> GatewayError:
        return server_error(
            504, f"Backend {self.base_url} timed out: {type(exc).__name__}", "timeout"
        )
