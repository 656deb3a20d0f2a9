"""OpenAI-shaped errors: `{"error": {"message", "type", "param", "code"}}` with an HTTP status."""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    """An error the gateway answers with, in OpenAI's shape."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def invalid(message: str, param: str | None, code: str = "invalid_value") -> GatewayError:
    """A 400 for a client mistake, naming the offending field."""
    return GatewayError(400, message, param=param, code=code)


def unsupported(param: str, what: str | None = None) -> GatewayError:
    """A 400 for a field we understand but do not serve: never silently dropped."""
    return GatewayError(
        400,
        f"{what or param!s} is not supported by this gateway.",
        param=param,
        code="unsupported_parameter",
    )


def server_error(status: int, message: str, code: str = "server_error") -> GatewayError:
    return GatewayError(status, message, type="server_error", code=code)
