"""The public names of `copyai_poll` are exactly the contract's."""

from __future__ import annotations

import importlib.resources

import copyai_poll

CONTRACT_NAMES = [
    "CopyAIClient",
    "WorkflowRun",
    "RunStatus",
    "StatusChange",
    "PollPolicy",
    "RetryPolicy",
    "poll_until_done",
    "watch",
    "poll_many",
    "RunOutcome",
    "CopyAIError",
    "APIError",
    "BadRequestError",
    "AuthenticationError",
    "NotFoundError",
    "RateLimitError",
    "ServerError",
    "APIConnectionError",
    "ResponseFormatError",
    "RunFailedError",
    "PollTimeoutError",
    "CreditLimitError",
    "RetryEvent",
    "WebhookReceiver",
    "RunTracker",
    "RunHandle",
]


def test_all_is_the_contract() -> None:
    """Exports exactly the names the contract lists, each once."""
    assert sorted(CONTRACT_NAMES) == sorted(copyai_poll.__all__)
    assert len(set(copyai_poll.__all__)) == len(copyai_poll.__all__)


def test_all_sorted() -> None:
    """Keeps ``__all__`` sorted."""
    assert sorted(copyai_poll.__all__) == copyai_poll.__all__


def test_every_name_importable() -> None:
    """Makes every exported name an attribute of the package."""
    missing = [name for name in CONTRACT_NAMES if not hasattr(copyai_poll, name)]

    assert [] == missing


def test_star_import() -> None:
    """Gives exactly the contract's names to ``from copyai_poll import *``."""
    namespace: dict[str, object] = {}
    exec("from copyai_poll import *", namespace)
    namespace.pop("__builtins__")

    assert sorted(CONTRACT_NAMES) == sorted(namespace)


def test_exported_objects_claim_the_package() -> None:
    """Exports objects defined inside copyai_poll, not re-exported third-party ones."""
    foreign = [
        name
        for name in CONTRACT_NAMES
        if not getattr(copyai_poll, name).__module__.startswith("copyai_poll")
    ]

    assert [] == foreign


def test_py_typed_ships() -> None:
    """Ships the py.typed marker inside the package."""
    assert (importlib.resources.files("copyai_poll") / "py.typed").is_file()


def test_library_logger_has_a_null_handler() -> None:
    """The copyai_poll logger carries a NullHandler, so unconfigured apps see no output."""
    import logging

    handlers = logging.getLogger("copyai_poll").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
