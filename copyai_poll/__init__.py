"""Start Copy.ai workflow runs and await them: backoff, deadlines, callbacks, typed errors."""

import logging

from ._client import CopyAIClient
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
from ._events import RetryEvent
from ._models import RunStatus, StatusChange, WorkflowRun
from ._policy import PollPolicy, RetryPolicy
from ._poll import RunOutcome, poll_many, poll_until_done, watch
from ._tracker import RunHandle, RunTracker
from ._webhooks import WebhookReceiver

# An application that configures no logging sees nothing from the library.
logging.getLogger("copyai_poll").addHandler(logging.NullHandler())

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "CopyAIClient",
    "CopyAIError",
    "CreditLimitError",
    "NotFoundError",
    "PollPolicy",
    "PollTimeoutError",
    "RateLimitError",
    "ResponseFormatError",
    "RetryEvent",
    "RetryPolicy",
    "RunFailedError",
    "RunHandle",
    "RunOutcome",
    "RunStatus",
    "RunTracker",
    "ServerError",
    "StatusChange",
    "WebhookReceiver",
    "WorkflowRun",
    "poll_many",
    "poll_until_done",
    "watch",
]
