"""The aiohttp application: routes, authentication, faults and the request log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
from aiohttp import web

from ._faults import Fault, FaultPlan
from ._log import API_KEY_HEADER, RequestRecord, redact
from ._state import FakeState
from ._wire import ApiFailure, error_body, success, validation_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_HTML_PAGE = (
    "<html><head><title>{status} Bad Gateway</title></head><body>"
    "<center><h1>{status} Bad Gateway</h1></center><hr><center>nginx</center>"
    "</body></html>"
)


@attrs.define(kw_only=True)
class Backend:
    """What the handlers share: the state, the key, the fault plan and the log."""

    api_key: str
    state: FakeState
    faults: FaultPlan
    requests: list[RequestRecord] = attrs.field(factory=list)
    closing: asyncio.Event = attrs.field(factory=asyncio.Event)


BACKEND = web.AppKey("copyai_fake_backend", Backend)


def make_app(backend: Backend) -> web.Application:
    """Build the application serving the seven endpoints under ``/api``.

    Args:
        backend: The state, key, fault plan and log the handlers use.

    Returns:
        A new `aiohttp.web.Application`.
    """
    app = web.Application(middlewares=[_middleware])
    app[BACKEND] = backend
    add = app.router.add_route
    add("POST", "/api/workflow/{workflow_id}/run", _start_run, name="start_run")
    add("GET", "/api/workflow/{workflow_id}/run/{run_id}", _get_run, name="get_run")
    add("GET", "/api/workflow/{workflow_id}/run", _list_runs, name="list_runs")
    add("POST", "/api/webhook", _create_webhook, name="create_webhook")
    add("GET", "/api/webhook/{webhook_id}", _get_webhook, name="get_webhook")
    add("DELETE", "/api/webhook/{webhook_id}", _delete_webhook, name="delete_webhook")
    add("GET", "/api/webhook", _list_webhooks, name="list_webhooks")
    return app


_DIGITS = re.compile(r"[0-9]{1,9}")


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    backend = request.app[BACKEND]
    route = request.match_info.route.name
    try:
        await request.read()  # aiohttp keeps it for the handler
    except web.HTTPRequestEntityTooLarge:
        return web.json_response(error_body("PAYLOAD_TOO_LARGE"), status=413)
    index = await _record(request, backend, route)
    backend.state.check()
    if route == "get_run":
        backend.state.get_counts[request.match_info["run_id"]] += 1
    fault = backend.faults.pick(route) if route else None
    _update(backend, index, fault=fault)
    response, status = await _answer(request, handler, backend, fault)
    _update(backend, index, status=status)
    return response


async def _record(request: web.Request, backend: Backend, route: str | None) -> int:
    raw = await request.read()
    body: Any = None
    if raw:
        try:
            body = _decode(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
    backend.requests.append(
        RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=redact(request.headers),
            body=body,
            time=backend.state.clock(),
            route=route,
        )
    )
    return len(backend.requests) - 1


def _update(backend: Backend, index: int, **changes: Any) -> None:
    backend.requests[index] = attrs.evolve(backend.requests[index], **changes)


async def _answer(
    request: web.Request, handler: Handler, backend: Backend, fault: Fault | None
) -> tuple[web.StreamResponse, int | None]:
    """Answer normally, or as ``fault`` says; the status is None when nothing was sent."""
    if fault is not None and fault.kind in ("slow", "hang"):
        if await _closing_within(backend.closing, fault.delay if fault.kind == "slow" else None):
            return _drop(request)
        fault = None
    if fault is None:
        normal = await _handle(request, handler, backend)
        return normal, normal.status
    handled = None
    if fault.after_handling or fault.kind == "truncated":
        handled = await _handle(request, handler, backend)
    return _faulty(request, fault, handled)


def _faulty(
    request: web.Request, fault: Fault, normal: web.StreamResponse | None
) -> tuple[web.StreamResponse, int | None]:
    if fault.kind == "drop":
        return _drop(request)
    if fault.kind == "truncated":
        body = normal.body if isinstance(normal, web.Response) else b""
        raw = body if isinstance(body, bytes) else b"{}"
        cut = web.Response(status=200, body=raw[: len(raw) // 2], content_type="application/json")
        return cut, 200
    if fault.kind == "html":
        page = _HTML_PAGE.format(status=fault.status)
        return web.Response(status=fault.status, text=page, content_type="text/html"), fault.status
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    code = "TOO_MANY_REQUESTS" if fault.status == 429 else "INTERNAL_SERVER_ERROR"
    return web.json_response(error_body(code), status=fault.status, headers=headers), fault.status


async def _closing_within(closing: asyncio.Event, seconds: float | None) -> bool:
    """Wait up to ``seconds`` (None: for ever); True if the server began to close."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(closing.wait(), seconds)
    return closing.is_set()


def _drop(request: web.Request) -> tuple[web.StreamResponse, int | None]:
    if request.transport is not None:
        request.transport.close()
    return web.Response(), None


async def _handle(request: web.Request, handler: Handler, backend: Backend) -> web.StreamResponse:
    """Check the key, run the handler, and turn failures into Copy.ai error envelopes."""
    if request.headers.get(API_KEY_HEADER) != backend.api_key:
        return web.json_response(error_body("UNAUTHORIZED"), status=401)
    try:
        return await handler(request)
    except ApiFailure as failure:
        return web.json_response(failure.body(), status=failure.status)
    except web.HTTPException as exc:
        code = "NOT_FOUND" if exc.status == 404 else "METHOD_NOT_ALLOWED"
        return web.json_response(error_body(code), status=exc.status)


async def _json_body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return _decode(raw)
    except ValueError:
        raise validation_error("body", "Invalid JSON") from None


def _decode(raw: bytes) -> Any:
    """Strict JSON: NaN and Infinity are refused, and so is a hostile depth of nesting.

    Raises:
        ValueError: The body is not JSON.
    """
    try:
        return json.loads(raw, parse_constant=_refuse_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text):  # int() would also take "1_0", " 5" and "+5"
        raise validation_error(name, "Expected an integer")
    value = int(text)
    if not low <= value <= high:
        raise validation_error(name, f"Expected an integer from {low} to {high}")
    return value


def _page(request: web.Request, first: int) -> tuple[int, int]:
    size = _int_param(request, "size", 10, 1, 100)
    return size, _int_param(request, "page", first, first, 1_000_000)


def _state(request: web.Request) -> FakeState:
    return request.app[BACKEND].state


async def _start_run(request: web.Request) -> web.Response:
    run_id = _state(request).start_run(
        request.match_info["workflow_id"], await _json_body(request)
    )
    return web.json_response(success({"id": run_id}))


async def _get_run(request: web.Request) -> web.Response:
    info = request.match_info
    return web.json_response(success(_state(request).get_run(info["workflow_id"], info["run_id"])))


async def _list_runs(request: web.Request) -> web.Response:
    size, page = _page(request, first=1)
    data = _state(request).list_runs(request.match_info["workflow_id"], size, page)
    return web.json_response(success(data))


async def _create_webhook(request: web.Request) -> web.Response:
    hook = _state(request).create_webhook(await _json_body(request))
    return web.json_response(success(hook.to_api()))


async def _get_webhook(request: web.Request) -> web.Response:
    hook = _state(request).get_webhook(request.match_info["webhook_id"])
    return web.json_response(success(hook.to_api()))


async def _delete_webhook(request: web.Request) -> web.Response:
    hook = _state(request).delete_webhook(request.match_info["webhook_id"])
    return web.json_response(success(hook.to_api()))


async def _list_webhooks(request: web.Request) -> web.Response:
    size, page = _page(request, first=0)
    return web.json_response(_state(request).list_webhooks(size, page))
