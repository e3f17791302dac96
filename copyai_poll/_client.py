"""`CopyAIClient`: start, fetch and list workflow runs over one shared aiohttp session."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import inspect
import json
import logging
import math
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from importlib.metadata import PackageNotFoundError, version
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import aiohttp
import attrs
import yarl
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from . import _otel
from ._config import path_of, resolve_base_url, resolve_key
from ._deadline import time_left
from ._errors import CopyAIError, NotFoundError, ResponseFormatError
from ._events import RetryEvent
from ._http import (
    Answer,
    OwnConnector,
    install_tracing,
    parse_page,
    read_answer,
    send,
    worth_retrying,
)
from ._limiter import RateLimiter
from ._models import StatusChange, WorkflowRun, describe, opaque_id, run_from_owned
from ._policy import PollPolicy, RetryPolicy
from ._pool import Slots

if TYPE_CHECKING:
    from ._poll import Clock, Sleep
    from ._webhooks import WebhookReceiver

logger = logging.getLogger("copyai_poll")

API_KEY_HEADER = "x-copy-ai-api-key"
MAX_PAGE_SIZE = 100
#: Connections the client's own session keeps open at most (aiohttp's default limit).
POOL_SIZE = 100

T = TypeVar("T")

try:
    _USER_AGENT = f"copyai-poll/{version('copyai-poll')}"
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    _USER_AGENT = "copyai-poll"


def _unchanged(value: Any) -> Any:
    return value


class _State(enum.Enum):
    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class CopyAIClient:
    """An async client for the Copy.ai Workflows API.

    One client is meant to be shared by every task in an app; it is safe to use from many
    concurrent tasks. Use it as an ``async with`` block, or call `close` when done.

    Args:
        api_key: The Copy.ai API key; defaults to ``$COPYAI_API_KEY``.
        base_url: The API's base URL; defaults to ``$COPYAI_BASE_URL``, else
            ``https://api.copy.ai/api``.
        session: An `aiohttp.ClientSession` to use; the client never closes it. Without
            one the client creates its own and closes it in `close`.
        retry: How transient failures of one request are retried.
        request_timeout: Seconds one try of one request may take, answer included.
        max_requests_per_second: Space the starts of all requests of this client at
            least ``1/N`` seconds apart, whichever tasks send them.
        on_retry: Called (sync or async) with a `RetryEvent` before each retry's wait;
            the way to count or show retries. An exception it raises propagates.
        allow_insecure_http: Allow sending the key over plain ``http://`` to a host that
            is not loopback. Off by default: the key would cross the network in clear.

    Raises:
        CopyAIError: No API key was found, or the base URL is unusable.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        session: aiohttp.ClientSession | None = None,
        retry: RetryPolicy = RetryPolicy(),  # noqa: B008 - frozen, so sharing it is safe
        request_timeout: float = 30.0,
        max_requests_per_second: float | None = None,
        on_retry: Callable[[RetryEvent], Any] | None = None,
        allow_insecure_http: bool = False,
    ) -> None:
        self._api_key = resolve_key(api_key)
        self._base_url = resolve_base_url(base_url, allow_insecure_http)
        self._base = str(self._base_url)
        self._headers = {API_KEY_HEADER: self._api_key, "User-Agent": _USER_AGENT}
        if not (0 < request_timeout < math.inf):
            raise ValueError(
                f"request_timeout must be a finite number > 0, got {request_timeout!r}"
            )
        self._session = session
        self._owns_session = session is None
        self._retry = retry
        self._on_retry = on_retry
        self._request_timeout = request_timeout
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._limiter = (
            None
            if max_requests_per_second is None
            else RateLimiter(max_requests_per_second, time.monotonic, self._sleep_hook)
        )
        self._pool: Slots | None = None  # the own session's connection limit
        self._state = _State.UNOPENED
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<CopyAIClient base_url={str(self._base_url)!r} state={self._state.value}>"

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return str(self._base_url)

    async def __aenter__(self) -> Self:
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the client, and its session if the client created it. Idempotent."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._owns_session and self._session is not None:
            await self._session.close()

    async def start_run(
        self,
        workflow_id: str,
        start_variables: Mapping[str, Any],
        *,
        metadata: Mapping[str, Any] | None = None,
    ) -> WorkflowRun:
        """Start a run of a workflow.

        The request spends credits and carries no idempotency key, so it is never retried
        once it may have been acted on: a 5xx, a garbled answer or a timeout after the
        request was written is final. A 429 (refused before acting) and a failure before
        the request was written are retried like any other request.

        Args:
            workflow_id: The workflow to run.
            start_variables: The workflow's inputs, by name.
            metadata: Free-form data kept with the run.

        Returns:
            The new run: its ``id``, with ``input`` and ``metadata`` as sent; its status
            is unknown (None) until it is fetched.
        """
        body: dict[str, Any] = {"startVariables": dict(start_variables)}
        if metadata is not None:
            body["metadata"] = dict(metadata)
        path = path_of("workflow", workflow_id, "run")
        parse = functools.partial(WorkflowRun.from_api, workflow_id=workflow_id)
        ids = {"workflow_id": workflow_id}
        run = await self._call(
            "POST", path, json_body=body, idempotent=False, parse=parse, log_ids=ids
        )
        return attrs.evolve(
            run,
            input=MappingProxyType(body["startVariables"]),
            metadata=MappingProxyType(body.get("metadata", {})),
        )

    async def get_run(self, workflow_id: str, run_id: str) -> WorkflowRun:
        """Fetch a run as it is now.

        Raises:
            NotFoundError: No such run (yet: a run can be invisible for a few seconds
                after it starts; `poll_until_done` allows for that).
            ResponseFormatError: The answer was garbled, or described another run, on
                every try.
        """
        path = path_of("workflow", workflow_id, "run", run_id)
        parse = functools.partial(_run_of, workflow_id, run_id)
        ids = {"workflow_id": workflow_id, "run_id": run_id}
        return await self._call("GET", path, parse=parse, log_ids=ids)

    async def list_runs(
        self, workflow_id: str, *, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncGenerator[WorkflowRun]:
        """Yield every run of a workflow, fetching page after page (pages start at 1).

        A run seen on an earlier page is not yielded again if new runs shift the pages.
        """
        path = path_of("workflow", workflow_id, "run")
        parse = functools.partial(WorkflowRun.from_api, workflow_id=workflow_id)
        pages = self._pages(
            path,
            first=1,
            page_size=page_size,
            answer="data",
            parse=parse,
            log_ids={"workflow_id": workflow_id},
        )
        async with contextlib.aclosing(pages):
            async for run in pages:
                yield run

    async def list_page(
        self, workflow_id: str, page: int, *, page_size: int = MAX_PAGE_SIZE
    ) -> tuple[int | None, list[Any]]:
        """Fetch one page of a workflow's runs, as the server sends it (pages start at 1).

        For `RunTracker`'s sweeps, which read pages from either end and parse each item
        on its own: an item that is not a run object must not spoil the page.

        Returns:
            The page's ``total`` (None if it sent none that reads as a number) and its
            items, undecoded.
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        path = path_of("workflow", workflow_id, "run")
        params = {"size": page_size, "page": page}
        return await self._call(
            "GET",
            path,
            params=params,
            answer="data",
            parse=parse_page,
            log_ids={"workflow_id": workflow_id},
        )

    async def register_webhook(
        self, url: str, event_type: str, *, workflow_id: str | None = None
    ) -> Mapping[str, Any]:
        """Ask Copy.ai to POST run events to ``url``.

        Deliveries carry the run object plus ``"type"`` (the event type) and are not
        signed: treat them as a hint and confirm with `get_run`.

        Args:
            url: Where to deliver events.
            event_type: ``"workflowRun.started"``, ``"workflowRun.completed"`` or
                ``"workflowRun.failed"``.
            workflow_id: Only this workflow's runs; None for every workflow.

        Returns:
            The webhook: ``id``, ``url``, ``eventType``, ``workflowId``.
        """
        body = {"url": url, "eventType": event_type}
        if workflow_id is not None:
            body["workflowId"] = workflow_id
        return await self._call(
            "POST", "/webhook", json_body=body, idempotent=False, parse=_webhook
        )

    async def get_webhook(self, webhook_id: str) -> Mapping[str, Any]:
        """Fetch a registered webhook."""
        return await self._call("GET", path_of("webhook", webhook_id), parse=_webhook)

    async def delete_webhook(self, webhook_id: str) -> None:
        """Delete a registered webhook (its answer's body is not documented)."""
        await self._call("DELETE", path_of("webhook", webhook_id), answer="ignored")

    async def list_webhooks(
        self, *, page_size: int = MAX_PAGE_SIZE
    ) -> AsyncGenerator[Mapping[str, Any]]:
        """Yield every registered webhook (this listing's pages start at 0)."""
        pages = self._pages(
            "/webhook", first=0, page_size=page_size, answer="bare", parse=_webhook
        )
        async with contextlib.aclosing(pages):
            async for webhook in pages:
                yield webhook

    async def poll_until_done(
        self,
        workflow_id: str,
        run_id: str,
        *,
        on_status_change: Callable[[StatusChange], Any] | None = None,
        on_poll: Callable[[WorkflowRun], Any] | None = None,
        policy: PollPolicy | None = None,
        timeout: float | None = 3600.0,
        webhooks: WebhookReceiver | None = None,
        sleep: Sleep | None = None,
        clock: Clock | None = None,
    ) -> WorkflowRun:
        """Wait for a run to finish: `copyai_poll.poll_until_done` on this client."""
        from ._poll import poll_until_done

        return await poll_until_done(
            self,
            workflow_id,
            run_id,
            on_status_change=on_status_change,
            on_poll=on_poll,
            policy=policy,
            timeout=timeout,
            webhooks=webhooks,
            sleep=sleep,
            clock=clock,
        )

    # -- webhook subscriptions -------------------------------------------------------

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        url: str,
        *,
        workflow_id: str | None = None,
        events: Iterable[str] = ("workflowRun.completed", "workflowRun.failed"),
    ) -> AsyncIterator[tuple[Mapping[str, Any], ...]]:
        """Register ``url`` for run events while the block runs; delete them after.

        One webhook is registered per event type. On exit (also when the block raises
        or is cancelled) each is deleted; a 404 means it was already gone. A deletion
        that fails otherwise is logged; it is raised only if the block itself ended
        normally, so it never hides the block's own exception.

        Args:
            url: Where Copy.ai is to POST, e.g. the URL `WebhookReceiver.serve` yields.
            workflow_id: Only this workflow's runs; None for every workflow.
            events: The event types to register.

        Yields:
            The webhooks registered (``id``, ``url``, ``eventType``, ``workflowId``).
        """
        hooks: list[Mapping[str, Any]] = []
        try:
            for event in events:
                hooks.append(await self.register_webhook(url, event, workflow_id=workflow_id))
            yield tuple(hooks)
        except BaseException:
            await self._unsubscribe(hooks, quiet=True)
            raise
        await self._unsubscribe(hooks, quiet=False)

    async def _unsubscribe(self, hooks: list[Mapping[str, Any]], *, quiet: bool) -> None:
        """Delete ``hooks``; raise the first failure unless ``quiet`` (a 404 is none)."""
        failure: CopyAIError | None = None
        for hook in hooks:
            try:
                await self.delete_webhook(str(hook["id"]))
            except NotFoundError:
                continue  # already gone: what we wanted
            except CopyAIError as exc:
                logger.warning("could not delete webhook %s: %s", hook["id"], exc)
                failure = failure or exc
        if failure is not None and not quiet:
            raise failure

    # -- the request path ------------------------------------------------------------

    async def _pages(
        self,
        path: str,
        *,
        first: int,
        page_size: int,
        answer: Answer,
        parse: Callable[[Any], T],
        log_ids: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[T]:
        """Yield the parsed items of page after page, each once.

        Stops once ``total`` items came, or a page brings nothing new: an empty page, or
        a server that ignores ``page`` and repeats itself (``total`` can lie).
        """
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be between 1 and {MAX_PAGE_SIZE}")
        seen: set[str] = set()
        page, count = first, 0
        while True:
            params = {"size": page_size, "page": page}
            total, items = await self._call(
                "GET", path, params=params, answer=answer, parse=parse_page, log_ids=log_ids
            )
            fresh = 0
            for parsed in map(parse, items):
                count += 1
                key = _identity(parsed)
                if key not in seen:
                    seen.add(key)
                    fresh += 1
                    yield parsed
            if not fresh or (total is not None and count >= total):
                return
            page += 1

    def _open(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._state is _State.OPEN and self._loop is loop and self._session is not None:
            return self._session
        if self._state is _State.CLOSED:
            raise RuntimeError("this CopyAIClient is closed; create a new one")
        if self._loop is not None and self._loop is not loop:
            raise RuntimeError(
                "this CopyAIClient was opened in another event loop; create one per loop"
            )
        if self._session is None:
            # No limit in the connector: `_pool` is its limit, so that waiting for a free
            # connection happens before a try's clock starts (see `send`).
            self._session = aiohttp.ClientSession(connector=OwnConnector(limit=0))
            self._pool = Slots(POOL_SIZE)
        elif self._session.closed:
            raise RuntimeError("the aiohttp session given to CopyAIClient is closed")
        else:
            install_tracing(self._session)
        self._state, self._loop = _State.OPEN, loop
        return self._session

    async def _sleep_hook(self, seconds: float) -> None:
        # Looked up at call time so that tests can swap `_sleep` after construction.
        await self._sleep(seconds)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, int] | None = None,
        idempotent: bool = True,
        answer: Answer = "data",
        parse: Callable[[Any], T] = _unchanged,
        log_ids: Mapping[str, str] | None = None,
    ) -> T:
        """Send a request, with retries, and return its answer, parsed.

        The first try runs bare; tenacity takes over only once a try failed.

        Args:
            idempotent: False for a request that must not be sent twice: it is then
                retried only when it was refused (429) or surely never reached the server.
            answer: How to read the answer's body (see `Answer`).
            parse: Turns the decoded answer into the result; a `ResponseFormatError` it
                raises counts as a garbled answer, retried like a 5xx for a GET.
            log_ids: The workflow and run ids, for the retry log records' ``extra``.
        """
        try_once: Callable[..., Awaitable[T]] = self._try_once
        if _otel.active is not None:  # off: not even a wrapper in the request's path
            try_once = _otel.active.wrap_request(self._try_once, method, path, log_ids)
        try:
            return await try_once(method, path, json_body, params, answer, parse)
        except CopyAIError as exc:
            if self._retry.attempts == 1 or not self._may_retry(exc, idempotent):
                raise
            failed: CopyAIError | None = exc
        hook = _RetryHook(method, path, log_ids or {}, self._on_retry, self._sleep_hook)
        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._retry_wait,
            retry=retry_if_exception(functools.partial(self._may_retry, idempotent=idempotent)),
            sleep=hook.sleep,
            before_sleep=hook.before_sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                if failed is not None:  # the first try's failure is tenacity's attempt 1
                    error, failed = failed, None
                    raise error
                return await try_once(method, path, json_body, params, answer, parse)
        raise AssertionError("unreachable: tenacity either returns or raises")

    async def _try_once(
        self,
        method: str,
        path: str,
        json_body: Any,
        params: Mapping[str, int] | None,
        answer: Answer,
        parse: Callable[[Any], T],
    ) -> T:
        session = self._open()
        if self._limiter is not None:
            await self._limiter.acquire()
        url = _url(self._base, path)
        if params:
            url = url.with_query(params)
        response = await send(
            session,
            method,
            url,
            headers=self._headers,
            json_body=json_body,
            request_timeout=self._request_timeout,
            secret=self._api_key,
            pool=self._pool,
        )
        result = parse(read_answer(response, method=method, path=path, answer=answer))
        logger.debug("%s %s -> %d", method, path, response.status)
        return result

    def _may_retry(self, exc: BaseException, idempotent: bool) -> bool:
        if not isinstance(exc, CopyAIError) or not worth_retrying(exc, idempotent=idempotent):
            return False
        retry_after = getattr(exc, "retry_after", None)
        return retry_after is None or retry_after <= self._retry.max_retry_after

    def _stop(self, state: RetryCallState) -> bool:
        """Stop after the last attempt, or before a wait that would outlast the deadline.

        Inside a poll with a deadline, the poll then decides what the error means for it.
        """
        if state.attempt_number >= self._retry.attempts:
            return True
        left = time_left.get()
        return left is not None and state.upcoming_sleep >= left()

    def _retry_wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return self._retry.wait(state.attempt_number - 1)


@functools.lru_cache(maxsize=4096)  # every poll of a run asks for the same URL
def _url(base: str, path: str) -> yarl.URL:
    return yarl.URL(base + path, encoded=True)


def _run_of(workflow_id: str, run_id: str, data: Any) -> WorkflowRun:
    """The run a get-run answer describes, which must be the run asked for."""
    if not isinstance(data, dict):
        raise ResponseFormatError(f"expected a run object, got {describe(data)}")
    run = run_from_owned(data, workflow_id=workflow_id, run_id=run_id)
    # `run.id` is the payload's `id`, else its `workflowRunId`: both must name this run.
    other = run.raw.get("workflowRunId")
    if run.id != run_id or (other is not None and opaque_id(other) not in (run_id, None)):
        named = {run.id, opaque_id(other)} - {run_id, None}
        others = ", ".join(sorted(repr(name)[:80] for name in named))
        raise ResponseFormatError(f"asked for run {run_id!r}, the answer describes {others}")
    return run


def _identity(item: Any) -> str:
    """What makes a listed item the same as one seen before: its id, else its content."""
    if isinstance(item, WorkflowRun):
        return item.id
    return json.dumps(item.get("id") or dict(item), sort_keys=True, default=str)


def _webhook(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ResponseFormatError(f"expected a webhook object, got {type(value).__name__}")
    hook_id = value.get("id")
    if isinstance(hook_id, bool) or not isinstance(hook_id, str | int) or hook_id == "":
        # Without an id a webhook cannot be deleted: `subscribe` would leave it behind.
        raise ResponseFormatError(f"expected a webhook with an id, got {describe(value)}")
    return MappingProxyType(dict(value))


class _RetryHook:
    """Tells the log, `on_retry` and telemetry about each retry of one request.

    tenacity's ``before_sleep`` notes the retry (and logs it); its ``sleep``, always
    awaited, then calls ``on_retry`` (awaiting it if async) before the wait itself, so
    an async callback works whatever tenacity version runs it.
    """

    __slots__ = ("_ids", "_method", "_on_retry", "_path", "_pending", "_sleep")

    def __init__(
        self,
        method: str,
        path: str,
        ids: Mapping[str, str],
        on_retry: Callable[[RetryEvent], Any] | None,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._method, self._path, self._ids = method, path, ids
        self._on_retry, self._sleep = on_retry, sleep
        self._pending: RetryEvent | None = None

    def before_sleep(self, state: RetryCallState) -> None:
        _log_retry(self._method, self._path, self._ids, state)
        exc = state.outcome.exception() if state.outcome else None
        assert isinstance(exc, CopyAIError), "only a CopyAIError is retried"
        self._pending = RetryEvent(
            method=self._method,
            path=self._path,
            workflow_id=self._ids.get("workflow_id"),
            run_id=self._ids.get("run_id"),
            attempt=state.attempt_number,
            wait=state.next_action.sleep if state.next_action else 0.0,
            error=exc,
        )

    async def sleep(self, seconds: float) -> None:
        event, self._pending = self._pending, None
        if event is not None:
            if _otel.active is not None:
                _otel.active.retried(event)
            if self._on_retry is not None:
                result = self._on_retry(event)
                if inspect.isawaitable(result):
                    await result
        await self._sleep(seconds)


def _log_retry(method: str, path: str, ids: Mapping[str, str], state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    # Errors raised for a response already name the request; say it once.
    reason = str(exc).removeprefix(f"{method} {path} ")
    logger.warning(
        "%s %s failed (%s); retry %d in %.2fs",
        method,
        path,
        reason,
        state.attempt_number,
        wait,
        extra={"method": method, "path": path, "attempt": state.attempt_number, **ids},
    )
