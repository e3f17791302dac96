"""Every exception `copyai_poll` raises, in one tree.

    CopyAIError
    ├── APIError                  an HTTP error answer: .status, .error_code, .body
    │   ├── BadRequestError       400, 422
    │   │   └── CreditLimitError  WORKFLOW_CREDIT_LIMIT_REACHED
    │   ├── AuthenticationError   401, 403
    │   ├── NotFoundError         404
    │   ├── RateLimitError        429, after retries
    │   └── ServerError           5xx, after retries
    ├── APIConnectionError        unreachable, or no answer in time, after retries
    ├── ResponseFormatError       a body that is not the JSON Copy.ai documents
    ├── RunFailedError            the run reached FAILED: .run, .history
    └── PollTimeoutError          (also a TimeoutError) the deadline passed: .last_run, .history

Messages never contain the API key: nothing here is ever handed request headers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import StatusChange, WorkflowRun

CREDIT_LIMIT_CODE = "WORKFLOW_CREDIT_LIMIT_REACHED"


class CopyAIError(Exception):
    """Base class of every error this library raises."""


class APIError(CopyAIError):
    """The API answered with an HTTP error.

    Args:
        message: Human-readable summary.
        status: The HTTP status code.
        error_code: Copy.ai's ``errorCode`` (``"NOT_FOUND"``, ...), if the body had one.
        body: The decoded JSON body, or the body's text when it was not JSON.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int,
        error_code: str | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_code = error_code
        self.body = body
        #: Seconds the server asked us to wait (``Retry-After``), if it said.
        self.retry_after = retry_after

    def __reduce__(self) -> Any:
        # Keyword-only arguments need help to survive pickling (multiprocessing, caches).
        kwargs = {
            "status": self.status,
            "error_code": self.error_code,
            "body": self.body,
            "retry_after": self.retry_after,
        }
        return (_rebuild_api_error, (type(self), self.message, kwargs))

    def __repr__(self) -> str:
        code = f", error_code={self.error_code!r}" if self.error_code else ""
        return f"{type(self).__name__}({self.message!r}, status={self.status}{code})"


def _rebuild_api_error(cls: type[APIError], message: str, kwargs: dict[str, Any]) -> APIError:
    return cls(message, **kwargs)


class BadRequestError(APIError):
    """The request was rejected as invalid (400, 422)."""


class CreditLimitError(BadRequestError):
    """The workspace has run out of credits (``WORKFLOW_CREDIT_LIMIT_REACHED``)."""


class AuthenticationError(APIError):
    """The API key is missing, wrong or not allowed to do this (401, 403)."""


class NotFoundError(APIError):
    """The workflow or run does not exist, or is not visible yet (404)."""


class RateLimitError(APIError):
    """Too many requests (429), still so after the configured retries."""


class ServerError(APIError):
    """The server failed (5xx), still so after the configured retries."""


class APIConnectionError(CopyAIError):
    """The server could not be reached, or did not answer in time, after retries."""

    # Set by the HTTP layer on the errors it raises; a user's own fetcher may leave them.
    #: False when the request surely never reached the server (so even a POST may retry).
    _request_sent: bool = True
    #: True for failures that asking again cannot mend: TLS, a body over the size limit.
    _final: bool = False
    #: True for a TLS or certificate failure: it ends a poll at once.
    _tls: bool = False


class ResponseFormatError(CopyAIError):
    """A response body was not the JSON that Copy.ai documents."""


class RunFailedError(CopyAIError):
    """The workflow run reached FAILED.

    Attributes:
        run: The failed `WorkflowRun`; ``run.error`` holds what the server said.
        history: Every `StatusChange` observed while polling, in order.
    """

    def __init__(
        self, message: str, *, run: WorkflowRun, history: Sequence[StatusChange] = ()
    ) -> None:
        super().__init__(message)
        self.run = run
        self.history = tuple(history)

    def __reduce__(self) -> Any:
        return (_rebuild_run_failed, (str(self), self.run, self.history))


def _rebuild_run_failed(
    message: str, run: WorkflowRun, history: tuple[StatusChange, ...]
) -> RunFailedError:
    return RunFailedError(message, run=run, history=history)


class PollTimeoutError(CopyAIError, TimeoutError):
    """The poll's deadline passed before the run finished.

    Attributes:
        last_run: The last `WorkflowRun` observed, or None if no poll succeeded.
        history: Every `StatusChange` observed while polling, in order.
    """

    def __init__(
        self,
        message: str,
        *,
        last_run: WorkflowRun | None = None,
        history: Sequence[StatusChange] = (),
    ) -> None:
        super().__init__(message)
        self.last_run = last_run
        self.history = tuple(history)

    def __reduce__(self) -> Any:
        return (_rebuild_poll_timeout, (str(self), self.last_run, self.history))


def _rebuild_poll_timeout(
    message: str, last_run: WorkflowRun | None, history: tuple[StatusChange, ...]
) -> PollTimeoutError:
    return PollTimeoutError(message, last_run=last_run, history=history)


_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: AuthenticationError,
    404: NotFoundError,
    422: BadRequestError,
    429: RateLimitError,
}

_CODE_ERRORS: dict[str, type[APIError]] = {
    "NOT_FOUND": NotFoundError,
    "UNAUTHORIZED": AuthenticationError,
    "FORBIDDEN": AuthenticationError,
}


def is_transient(error: BaseException) -> bool:
    """Whether a poll that failed with ``error`` may succeed when asked again later.

    Server trouble, throttling, a garbled answer and connection failures other than TLS
    may; everything else ends a wait at once.
    """
    if isinstance(error, APIConnectionError):
        return not error._tls
    return isinstance(error, ServerError | RateLimitError | ResponseFormatError)


def error_class_for(status: int, error_code: str | None) -> type[APIError]:
    """Pick the `APIError` subclass for an HTTP status and Copy.ai error code.

    The credit-limit code wins whatever the status; otherwise the status decides, and
    the code only matters for an error envelope that arrived with a 2xx status.
    """
    if error_code == CREDIT_LIMIT_CODE:
        return CreditLimitError
    if status in _STATUS_ERRORS:
        return _STATUS_ERRORS[status]
    if status >= 500:
        return ServerError
    return _CODE_ERRORS.get(error_code or "", APIError)
