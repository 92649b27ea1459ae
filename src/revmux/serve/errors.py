"""Serving errors, each with the HTTP status and TEI-style `error_type` a front answers with.

What it is: the typed error enum of the server (TEI maps `Overloaded` to 429, `Validation` to 422).
The engine raises these; http.py (and a Ray front) only translate them to responses.
What it is not: the general RevmuxError hierarchy (revmux.errors), which it extends.
"""

from __future__ import annotations

from revmux.errors import InputError, RevmuxError


class ServeError(RevmuxError):
    """An error answered to one request; `status` and `error_type` say how."""

    status: int = 500
    error_type: str = "Backend"


class TokenizationError(ServeError, InputError):
    """The tokenizer failed on this input (the request fails alone)."""

    status = 422
    error_type = "Tokenizer"


class PayloadTooLarge(ServeError):
    """The body or the batch is over max_payload_bytes / max_batch_size."""

    status = 413
    error_type = "Validation"

    def __init__(self, message: str, reason: str = "payload_too_large") -> None:
        super().__init__(message)
        self.reason = reason  # revmux_rejected_total label: payload_too_large | batch_too_large


class QueueFull(ServeError):
    """The queue holds max_queue_size requests; retry after `retry_after_s`."""

    status = 429
    error_type = "Overloaded"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(ServeError):
    """The request's deadline (request_timeout_ms) passed before its answer was ready."""

    status = 504
    error_type = "Timeout"


class Draining(ServeError):
    """The server is shutting down and accepts no new work."""

    status = 503
    error_type = "Unhealthy"


class Unauthorized(ServeError):
    """An API key is set and the request carries a wrong or no bearer token."""

    status = 401
    error_type = "Unauthorized"


class RunnerContractError(ServeError):
    """The runner returned no output (or not exactly one) for a request it was given."""

    status = 500
    error_type = "Backend"


def status_of(exc: BaseException) -> tuple[int, str]:
    """(HTTP status, error_type) for an exception raised while serving one request."""
    if isinstance(exc, ServeError):
        return exc.status, exc.error_type
    if isinstance(exc, InputError):
        return 422, "Validation"
    return 500, "Backend"
