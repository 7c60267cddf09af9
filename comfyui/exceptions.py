"""The worker's error types. Each knows its HTTP status and its machine-readable code.

Every error leaves the API in one JSON shape (see `ComfyUIError.to_body`):
`{"error", "detail", "prompt_id", "node_errors", "timestamp"}`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


class ComfyUIError(Exception):
    """Base class: something the worker answers with an error body."""

    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        detail: str,
        *,
        prompt_id: str | None = None,
        node_errors: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.prompt_id = prompt_id
        self.node_errors: dict[str, Any] = node_errors or {}
        self.headers: dict[str, str] = headers or {}

    def to_body(self) -> dict[str, Any]:
        return error_body(self.code, self.detail, self.prompt_id, self.node_errors)


def error_body(
    code: str,
    detail: str,
    prompt_id: str | None = None,
    node_errors: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The one JSON shape of every error the worker answers."""
    return {
        "error": code,
        "detail": detail,
        "prompt_id": prompt_id,
        "node_errors": node_errors or {},
        "timestamp": datetime.now(UTC).isoformat(),
    }


class InvalidRequestError(ComfyUIError):
    """The caller's request is malformed (before anything reaches ComfyUI)."""

    status_code = 400
    code = "invalid_request"


class PromptValidationError(ComfyUIError):
    """ComfyUI rejected the graph; `node_errors` holds its per-node reasons."""

    status_code = 400
    code = "invalid_prompt"


class ExecutionError(ComfyUIError):
    """A node raised while the prompt ran."""

    status_code = 500
    code = "execution_error"

    def __init__(
        self,
        detail: str,
        *,
        prompt_id: str | None = None,
        node_id: str | None = None,
        node_type: str | None = None,
        exception_type: str | None = None,
        exception_message: str | None = None,
        node_errors: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail, prompt_id=prompt_id, node_errors=node_errors)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type
        self.exception_message = exception_message


class PromptInterruptedError(ComfyUIError):
    """The prompt was interrupted on ComfyUI by someone other than this request."""

    status_code = 409
    code = "interrupted"


class PromptDeletedError(ComfyUIError):
    """The prompt left ComfyUI's queue without running (someone deleted it)."""

    status_code = 409
    code = "prompt_deleted"


class PromptLostError(ComfyUIError):
    """ComfyUI forgot the prompt while the worker was cut off from it (it restarted)."""

    status_code = 503
    code = "prompt_lost"

    def __init__(self, detail: str, *, prompt_id: str | None = None, retry_after: int = 1) -> None:
        super().__init__(detail, prompt_id=prompt_id, headers={"Retry-After": str(retry_after)})


class PromptTimeoutError(ComfyUIError):
    """The deadline passed; the prompt was cancelled on ComfyUI."""

    status_code = 504
    code = "timeout"


class ComfyUIConnectionError(ComfyUIError):
    """ComfyUI cannot be reached."""

    status_code = 503
    code = "comfyui_unavailable"

    def __init__(self, detail: str, *, prompt_id: str | None = None, retry_after: int = 5) -> None:
        super().__init__(detail, prompt_id=prompt_id, headers={"Retry-After": str(retry_after)})


class ComfyUIProtocolError(ComfyUIError):
    """ComfyUI answered something the worker cannot understand."""

    status_code = 502
    code = "bad_gateway"


class OutputFetchError(ComfyUIError):
    """An output file named in history could not be read back from ComfyUI."""

    status_code = 502
    code = "output_unavailable"


class ClientDisconnectedError(ComfyUIError):
    """The caller went away before the answer; the prompt was cancelled."""

    status_code = 499
    code = "client_disconnected"


class UnauthorizedError(ComfyUIError):
    """No valid API key was presented."""

    status_code = 401
    code = "unauthorized"

    def __init__(self, detail: str = "A valid API key is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"})


class PayloadTooLargeError(ComfyUIError):
    """The request body or the graph is over the configured limit."""

    status_code = 413
    code = "payload_too_large"


class TooManyRequestsError(ComfyUIError):
    """Backpressure or rate limit: try again after `Retry-After` seconds."""

    status_code = 429
    code = "too_many_requests"

    def __init__(self, detail: str, *, retry_after: int = 1) -> None:
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class ShuttingDownError(ComfyUIError):
    """The worker is stopping and takes no new work."""

    status_code = 503
    code = "shutting_down"

    def __init__(self, detail: str = "The worker is shutting down") -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class InvalidInputError(ComfyUIError):
    """An input image of the request is unusable (bad name, bad base64, not an image)."""

    status_code = 400
    code = "invalid_input"


class InputTooLargeError(InvalidInputError):
    """An input image is over `INPUT_IMAGE_MAX_BYTES`."""

    status_code = 413
    code = "input_too_large"


class InputFetchError(InvalidInputError):
    """An input image URL could not be downloaded."""

    status_code = 400
    code = "input_download_failed"


class ForbiddenInputURLError(InvalidInputError):
    """An input URL (or one it redirects to) is not allowed: scheme, or a non-public address."""

    status_code = 400
    code = "input_url_forbidden"


class DeliveryError(ComfyUIError):
    """The prompt succeeded but its outputs could not be delivered (S3 upload, local store)."""

    status_code = 502
    code = "delivery_failed"
