"""Start Copy.ai workflow runs and await them: backoff, deadlines, callbacks, typed errors."""

from ._errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    BadRequestError,
    CopyAIError,
    CreditLimitError,
    NotFoundError,
    PollTimeoutError,
    RateLimitError,
    ResponseFormatError,
    RunFailedError,
    ServerError,
)
from ._models import RunStatus, StatusChange, WorkflowRun
from ._policy import PollPolicy, RetryPolicy

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CopyAIError",
    "CreditLimitError",
    "NotFoundError",
    "PollPolicy",
    "PollTimeoutError",
    "RateLimitError",
    "ResponseFormatError",
    "RetryPolicy",
    "RunFailedError",
    "RunStatus",
    "ServerError",
    "StatusChange",
    "WorkflowRun",
]
