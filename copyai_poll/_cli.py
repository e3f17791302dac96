"""``copyai-poll``: start, inspect and watch Copy.ai workflow runs from a shell.

A thin layer over the public API: `CopyAIClient` does the requests and `poll_until_done`
the waiting. The CLI's modules import downward only:

    _cli          the entry point: commands, logging, Ctrl-C, exit codes of errors
    _cli_demo     the ``demo`` command
    _cli_options  the parser and `Options`
    _cli_watch    `Watcher`, and the exit codes of runs
    _cli_display  what the user sees: the live table, plain lines, JSON
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import CopyAIError
from ._cli_demo import demo
from ._cli_display import DisplayLogHandler, Output, describe, point_at_devnull
from ._cli_options import Options, UsageError
from ._cli_watch import EXIT_API, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from .testing import FakeCopyAI

#: Seconds a Ctrl-C leaves the command to sum up and close before it exits regardless.
INTERRUPT_GRACE = 10.0

Command = Callable[[Options, DisplayLogHandler, Output], Coroutine[Any, Any, int]]


def main(argv: list[str] | None = None) -> int:
    """Run ``copyai-poll`` and return its exit code."""
    try:
        options = Options.parse(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        _flush_stdout()
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    out = Output(sys.stdout)
    with _logging(options.verbose) as log_handler:
        try:
            code = asyncio.run(_run(options, log_handler, out))
        except UsageError as exc:
            return _fail(f"error: {exc}", EXIT_USAGE)
        except CopyAIError as exc:
            return _fail(describe(exc, hint=options.base_url_hint()), EXIT_API)
        except KeyboardInterrupt:  # before or after the loop's own handler
            return _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:  # `get` or `runs` whose reader left: stop quietly
            point_at_devnull(sys.stdout)
            return EXIT_OK
    if code == EXIT_INTERRUPTED:
        _fail("interrupted", EXIT_INTERRUPTED)
    _flush_stdout()
    return code


async def _run(options: Options, log_handler: DisplayLogHandler, out: Output) -> int:
    """Run the command; a Ctrl-C cancels it, so that it sums up where each run stood.

    A second Ctrl-C, or a first one the command does not answer within
    `INTERRUPT_GRACE` seconds, exits at once.
    """
    command = _COMMANDS[options.args.command]
    if options.args.command == "fake-server":  # it stops on Ctrl-C by itself, exit 0
        return await command(options, log_handler, out)
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupts = 0

    def interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            _exit_now()
        task.cancel()
        loop.call_later(INTERRUPT_GRACE, _exit_now)

    with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: KeyboardInterrupt
        loop.add_signal_handler(signal.SIGINT, interrupt)
    try:
        return await command(options, log_handler, out)
    except asyncio.CancelledError:
        if not interrupts:
            raise
        task.uncancel()
        return EXIT_INTERRUPTED
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)


def _exit_now() -> None:
    """Leave at once with 130, whatever is still running (a stuck shutdown included)."""
    _flush_stdout()
    with contextlib.suppress(Exception):
        sys.stderr.write("copyai-poll: interrupted\n")
        sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)


def _flush_stdout() -> None:
    """Flush stdout; if its reader left (``--help | head -1``), point it at devnull."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        point_at_devnull(sys.stdout)
    except (OSError, ValueError):
        pass


def _fail(message: str, code: int) -> int:
    print(f"copyai-poll: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _logging(verbose: int) -> Iterator[DisplayLogHandler]:
    """Log records reach the screen only with -v (INFO) or -vv (DEBUG).

    Without -v the handler takes every record and shows none, so Python's last-resort
    handler cannot print them either: retries and failed polls show in the display.
    """
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else None
    handler = DisplayLogHandler(logging.CRITICAL + 1 if level is None else level)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level or logging.WARNING)
    # The embedded fake server logs every request at INFO; only -vv wants that.
    access = logging.getLogger("aiohttp.access")
    access.setLevel(logging.DEBUG if verbose >= 2 else logging.WARNING)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        access.setLevel(logging.NOTSET)


# -- commands ------------------------------------------------------------------------


async def _start(options: Options, log_handler: DisplayLogHandler, out: Output) -> int:
    args = options.args
    metadata = dict(args.metadata) or None
    if not args.wait:
        async with options.client() as client:
            run = await client.start_run(args.workflow_id, dict(args.input), metadata=metadata)
        if options.json:
            event = {"event": "start", "workflow_id": args.workflow_id, "run_id": run.id}
            print(json.dumps(event))
        else:
            print(run.id)
        return EXIT_OK
    watcher = options.watcher(out, log_handler)
    async with options.watching_client(watcher) as client:
        run = await client.start_run(args.workflow_id, dict(args.input), metadata=metadata)
        if not options.json:
            out.write(run.id + "\n")
        return await watcher.watch(client, [(args.workflow_id, run.id)])


async def _get(options: Options, _log: DisplayLogHandler, _out: Output) -> int:
    async with options.client() as client:
        run = await client.get_run(options.args.workflow_id, options.args.run_id)
    print(json.dumps(dict(run.raw), indent=None if options.json else 2, default=str))
    return EXIT_OK


async def _runs(options: Options, _log: DisplayLogHandler, _out: Output) -> int:
    args = options.args
    async with options.client() as client:
        runs = client.list_runs(args.workflow_id, page_size=min(args.limit, 100))
        count = 0
        async with contextlib.aclosing(runs):  # stop paging at once
            async for run in runs:
                print(_run_line(options, run.raw, run.id, run.raw_status), flush=True)
                count += 1
                if count >= args.limit:
                    break
    return EXIT_OK


def _run_line(options: Options, raw: Mapping[str, Any], run_id: str, status: str) -> str:
    if options.json:
        return json.dumps(dict(raw), default=str)
    return f"{run_id}  {status or '-':<11} {raw.get('createdAt') or '-'}"


async def _watch(options: Options, log_handler: DisplayLogHandler, out: Output) -> int:
    args = options.args
    pairs = [(args.workflow_id, run_id) for run_id in dict.fromkeys(args.run_ids)]
    watcher = options.watcher(out, log_handler)
    async with options.watching_client(watcher) as client:
        return await watcher.watch(client, pairs)


async def _fake_server(options: Options, _log: DisplayLogHandler, _out: Output) -> int:
    from .testing import FakeCopyAI, serve

    args = options.args
    settings: dict[str, Any] = {"host": args.host, "port": args.port}
    if args.api_key:
        settings["api_key"] = args.api_key
    server = FakeCopyAI.demo(**settings) if args.demo else FakeCopyAI(**settings)
    try:
        if options.json:
            await serve(server, announce=None, on_ready=_announce_json)
        else:
            await serve(server)
    except OSError as exc:  # the port is taken, the host is not ours, ...
        raise UsageError(
            f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}"
        ) from None
    return EXIT_OK


def _announce_json(server: FakeCopyAI) -> None:
    event = {"event": "serving", "base_url": server.base_url, "api_key": server.api_key}
    print(json.dumps(event), flush=True)


_COMMANDS: dict[str, Command] = {
    "start": _start,
    "get": _get,
    "runs": _runs,
    "watch": _watch,
    "fake-server": _fake_server,
    "demo": demo,
}
