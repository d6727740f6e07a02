"""The one error hierarchy. Services raise these; the gateway renders them in the client's envelope.

Each error knows its HTTP status, its OpenAI-style `type` and `code`, and the Anthropic error type,
so no route ever builds an error body by hand. Errors cross NATS as `ErrorInfo`.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel


class ErrorInfo(BaseModel):
    """An error as it travels between services (and the shape the envelopes are built from)."""

    status: int
    type: str
    code: str
    message: str
    param: str | None = None
    retry_after: int | None = None


class LexoraError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal_error"
    code: ClassVar[str] = "internal_error"
    anthropic_type: ClassVar[str] = "api_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, param: str | None = None, retry_after: int | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        if retry_after is not None:
            self.retry_after = retry_after

    def info(self) -> ErrorInfo:
        return ErrorInfo(
            status=self.status,
            type=self.type,
            code=self.code,
            message=self.message,
            param=self.param,
            retry_after=self.retry_after,
        )


class InvalidRequest(LexoraError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    anthropic_type = "invalid_request_error"


class PayloadTooLarge(InvalidRequest):
    """The request body (or the job made of it) is larger than the gateway takes. Anthropic names
    this error type `request_too_large`."""

    status = 413
    code = "request_too_large"
    anthropic_type = "request_too_large"


class HeadersTooLarge(InvalidRequest):
    """The request line and headers together are larger than the gateway reads."""

    status = 431
    code = "request_header_fields_too_large"
    anthropic_type = "request_too_large"


class RequestTimeout(InvalidRequest):
    """The client sent its request too slowly: the headers did not arrive in time, or the body
    stopped arriving. The connection is closed (a slow client cannot hold it open)."""

    status = 408
    code = "request_timeout"


class ContextLengthExceeded(InvalidRequest):
    """The prompt alone does not fit in the model's context. Its message is Anthropic's words
    ("prompt is too long: N tokens > M maximum"), which is what crosses NATS; the OpenAI envelope
    says it OpenAI's way, code context_length_exceeded (`openai_message`)."""

    code = "context_length_exceeded"
    _WORDS = re.compile(r"prompt is too long: (\d+) tokens > (\d+) maximum")

    @classmethod
    def of(cls, prompt_tokens: int, maximum: int) -> ContextLengthExceeded:
        """`maximum`: the most prompt tokens that still leave room for one token of answer."""
        return cls(f"prompt is too long: {prompt_tokens} tokens > {maximum} maximum", param="messages")

    @classmethod
    def from_engine(cls, message: str) -> ContextLengthExceeded | None:
        """The error an engine's refusal means, when it is this one."""
        found = cls._WORDS.search(message)
        return cls.of(int(found[1]), int(found[2])) if found else None

    @property
    def openai_message(self) -> str:
        found = self._WORDS.search(self.message)
        if not found:
            return self.message
        return (
            f"This model's maximum context length is {int(found[2]) + 1} tokens. However, your messages "
            f"resulted in {found[1]} tokens. Please reduce the length of the messages."
        )


class Unauthorized(LexoraError):
    status = 401
    type = "authentication_error"
    code = "unauthorized"
    anthropic_type = "authentication_error"


class Forbidden(LexoraError):
    """Signed in, but not allowed: an admin's route for a user, a form without its CSRF token,
    sign-up while it is closed."""

    status = 403
    type = "permission_error"
    code = "forbidden"
    anthropic_type = "permission_error"


class Conflict(LexoraError):
    """The request clashes with what exists (an email already registered)."""

    status = 409
    type = "invalid_request_error"
    code = "conflict"
    anthropic_type = "invalid_request_error"


class InsufficientCredits(LexoraError):
    status = 402
    type = "insufficient_credits"
    code = "insufficient_credits"
    anthropic_type = "billing_error"


class ModelNotFound(LexoraError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    anthropic_type = "not_found_error"


class NotFound(LexoraError):
    """A resource other than a model (an account, a key) does not exist."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"
    anthropic_type = "not_found_error"


class RouteNotFound(NotFound):
    """The HTTP route itself does not exist."""


class RateLimitExceeded(LexoraError):
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"
    anthropic_type = "rate_limit_error"


class InternalError(LexoraError):
    pass


class ModelUnavailable(LexoraError):
    status = 503
    type = "model_unavailable"
    code = "model_unavailable"
    anthropic_type = "overloaded_error"
    retry_after = 30


class ServiceUnavailable(LexoraError):
    """Something the request depends on cannot be reached right now: a service (auth, billing, the
    router's bus), NATS itself, or a database. Nothing was done for the request and nothing is
    charged; a client should retry after `Retry-After`. Never a 401 (the key was not judged) and
    never served without its credit hold (docs/reliability.md, "Dependency outages")."""

    status = 503
    type = "service_unavailable"
    code = "service_unavailable"
    anthropic_type = "overloaded_error"
    retry_after = 5


class EngineFailure(LexoraError):
    """The engine broke while serving the request (its process died, it answered INTERNAL, or the
    stream was cut). The server's fault, never the client's: not charged, and worth retrying."""

    status = 502
    type = "engine_error"
    code = "engine_error"
    anthropic_type = "api_error"


class JobTimeout(LexoraError):
    status = 504
    type = "timeout"
    code = "timeout"
    anthropic_type = "api_error"


class PaymentsNotConfigured(LexoraError):
    """This installation takes no card payments (no Stripe keys): credit comes from admin grants."""

    status = 501
    type = "payments_not_configured"
    code = "payments_not_configured"
    anthropic_type = "api_error"


class PaymentProviderError(LexoraError):
    """Stripe could not be reached or refused the request (details are in billing's log)."""

    status = 502
    type = "payment_provider_error"
    code = "payment_provider_error"
    anthropic_type = "api_error"


_BY_CODE: dict[str, type[LexoraError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        ContextLengthExceeded,
        Unauthorized,
        Forbidden,
        Conflict,
        InsufficientCredits,
        ModelNotFound,
        NotFound,
        RateLimitExceeded,
        InternalError,
        ModelUnavailable,
        ServiceUnavailable,
        EngineFailure,
        JobTimeout,
        PaymentsNotConfigured,
        PaymentProviderError,
    )
}


def error_from_info(info: ErrorInfo) -> LexoraError:
    """Rebuild the typed error a remote service raised."""
    cls = _BY_CODE.get(info.code, InternalError)
    return cls(info.message, param=info.param, retry_after=info.retry_after)
