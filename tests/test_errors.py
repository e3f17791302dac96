"""The exception tree, its attributes, pickling and the status-to-class mapping."""

from __future__ import annotations

import pickle

import pytest

from copyai_poll import (
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
    RunStatus,
    ServerError,
    StatusChange,
    WorkflowRun,
)
from copyai_poll._errors import error_class_for

API_ERRORS = [
    APIError,
    BadRequestError,
    CreditLimitError,
    AuthenticationError,
    NotFoundError,
    RateLimitError,
    ServerError,
]

CREDIT_LIMIT = "WORKFLOW_CREDIT_LIMIT_REACHED"


def failed_run() -> WorkflowRun:
    return WorkflowRun.from_api(
        {
            "id": "WRUN-1",
            "workflowId": "WCFG-1",
            "status": "FAILED",
            "error": "step 2 failed",
            "output": {"text": "partial"},
            "metadata": None,
            "createdAt": "2023-09-27T18:34:13.091Z",
            "credits": "3",
        }
    )


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (CopyAIError, Exception),
        (APIError, CopyAIError),
        (BadRequestError, APIError),
        (CreditLimitError, BadRequestError),
        (AuthenticationError, APIError),
        (NotFoundError, APIError),
        (RateLimitError, APIError),
        (ServerError, APIError),
        (APIConnectionError, CopyAIError),
        (ResponseFormatError, CopyAIError),
        (RunFailedError, CopyAIError),
        (PollTimeoutError, CopyAIError),
        (PollTimeoutError, TimeoutError),
    ],
)
def test_tree(child: type[BaseException], parent: type[BaseException]) -> None:
    """Places every error where the contract's tree says."""
    assert issubclass(child, parent)


@pytest.mark.parametrize(
    "cls", [APIConnectionError, ResponseFormatError, RunFailedError, PollTimeoutError]
)
def test_not_api_errors(cls: type[BaseException]) -> None:
    """Keeps the non-HTTP errors out of the APIError branch."""
    assert not issubclass(cls, APIError)


def test_poll_timeout_caught_as_timeout() -> None:
    """Lets ``except TimeoutError`` catch a PollTimeoutError."""
    with pytest.raises(TimeoutError) as info:
        raise PollTimeoutError("deadline passed")

    assert PollTimeoutError is type(info.value)
    assert "deadline passed" == str(info.value)


@pytest.mark.parametrize("cls", API_ERRORS)
def test_api_error_constructible(cls: type[APIError]) -> None:
    """Builds every APIError class from a message and keyword attributes."""
    error = cls("gone", status=404, error_code="NOT_FOUND", body={"status": "error"})

    assert ("gone", 404, "NOT_FOUND", {"status": "error"}) == (
        str(error),
        error.status,
        error.error_code,
        error.body,
    )


@pytest.mark.parametrize("cls", API_ERRORS)
def test_api_error_defaults(cls: type[APIError]) -> None:
    """Defaults error_code and body to None."""
    error = cls("boom", status=500)

    assert (500, None, None) == (error.status, error.error_code, error.body)


@pytest.mark.parametrize("cls", API_ERRORS)
def test_api_error_pickles(cls: type[APIError]) -> None:
    """Keeps class, message and attributes through a pickle round-trip."""
    error = cls("nope", status=422, error_code="INVALID", body={"details": ["x"]})

    clone = pickle.loads(pickle.dumps(error))

    assert cls is type(clone)
    assert ("nope", 422, "INVALID", {"details": ["x"]}) == (
        str(clone),
        clone.status,
        clone.error_code,
        clone.body,
    )


def test_api_error_repr() -> None:
    """Shows class, message, status and code in the repr."""
    error = NotFoundError("GET /x answered 404", status=404, error_code="NOT_FOUND")

    assert "NotFoundError('GET /x answered 404', status=404, error_code='NOT_FOUND')" == repr(
        error
    )


def test_run_failed_error() -> None:
    """Carries the failed run."""
    run = failed_run()

    error = RunFailedError("run failed", run=run)

    assert ("run failed", run) == (str(error), error.run)


def test_run_failed_error_pickles() -> None:
    """Keeps message and run through a pickle round-trip."""
    run = failed_run()
    error = RunFailedError("run failed", run=run)

    clone = pickle.loads(pickle.dumps(error))

    assert RunFailedError is type(clone)
    assert ("run failed", run) == (str(clone), clone.run)
    assert "step 2 failed" == clone.run.error


def test_run_failed_error_pickles_minimal_run() -> None:
    """Keeps a run built without a payload through a pickle round-trip."""
    run = WorkflowRun(id="WRUN-2", status=RunStatus.FAILED, raw_status="FAILED")
    history = [
        StatusChange(run=run, previous=None, current=RunStatus.FAILED, elapsed=1.0, polls=1)
    ]

    clone = pickle.loads(pickle.dumps(RunFailedError("x", run=run, history=history)))

    assert (run, tuple(history)) == (clone.run, clone.history)


@pytest.mark.parametrize("with_run", [False, True])
def test_poll_timeout_error_pickles(with_run: bool) -> None:
    """Keeps message and last run through a pickle round-trip."""
    last_run = failed_run() if with_run else None
    error = PollTimeoutError("timed out after 5s", last_run=last_run)

    clone = pickle.loads(pickle.dumps(error))

    assert PollTimeoutError is type(clone)
    assert ("timed out after 5s", last_run) == (str(clone), clone.last_run)


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (400, None, BadRequestError),
        (400, "INVALID_INPUT", BadRequestError),
        (422, None, BadRequestError),
        (400, CREDIT_LIMIT, CreditLimitError),
        (402, CREDIT_LIMIT, CreditLimitError),
        (403, CREDIT_LIMIT, CreditLimitError),
        (429, CREDIT_LIMIT, CreditLimitError),
        (200, CREDIT_LIMIT, CreditLimitError),
        (401, None, AuthenticationError),
        (403, None, AuthenticationError),
        (404, None, NotFoundError),
        (404, "NOT_FOUND", NotFoundError),
        (429, None, RateLimitError),
        (500, None, ServerError),
        (502, None, ServerError),
        (503, None, ServerError),
        (504, None, ServerError),
        (599, None, ServerError),
        (409, None, APIError),
        (418, None, APIError),
        (200, "NOT_FOUND", NotFoundError),
        (200, None, APIError),
        (200, "SOMETHING_NEW", APIError),
    ],
)
def test_error_class_for(status: int, code: str | None, expected: type[APIError]) -> None:
    """Picks the error class from the status, the credit-limit code winning over it."""
    assert expected is error_class_for(status, code)
