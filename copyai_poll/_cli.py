"""``copyai-poll``: start, inspect and watch Copy.ai workflow runs from a shell.

A thin layer over the public API: `CopyAIClient` does the requests and `poll_until_done`
the waiting; this module only parses arguments and turns outcomes into exit codes.
`_cli_watch` feeds the polls' callbacks to a display (`_cli_display`); `_cli_demo` is the
``demo`` command.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from . import CopyAIClient, CopyAIError, PollPolicy
from ._cli_demo import demo
from ._cli_display import (
    EXIT_API,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    DisplayLogHandler,
    describe,
)
from ._cli_watch import watch_runs
from ._config import API_KEY_ENV, BASE_URL_ENV

if TYPE_CHECKING:
    from .testing import FakeCopyAI


_EPILOG = f"""\
exit codes:
  0    every run COMPLETE (or the command succeeded)
  1    a run FAILED
  2    usage or configuration error (bad arguments, no API key, unreadable key file)
  3    a run did not finish before --timeout
  4    API or connection error (wrong key, unknown run, server unreachable, ...)
  130  interrupted (Ctrl-C); where each run stood is printed first
When several runs end differently, the highest code of 4, 3, 1, 0 wins.
'demo' exits 0 when every run ended as its script says (some are scripted to fail),
1 when one did not, 4 on an API error.

environment:
  {API_KEY_ENV}   the API key (or --api-key-file; a key is never taken as an argument)
  {BASE_URL_ENV}  the API's base URL (or --base-url)
  NO_COLOR         no colours in the live display
"""


class UsageError(Exception):
    """A configuration mistake, told in one sentence; exit code 2."""


# -- arguments -----------------------------------------------------------------------


def _pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _id(text: str) -> str:
    """A workflow or run id: opaque, but not empty and sendable as UTF-8."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise argparse.ArgumentTypeError(f"not a valid id: {text!r}") from None
    if not text:
        raise argparse.ArgumentTypeError("an id must not be empty")
    return text


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


class _NoKeyOnCommandLine(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *_: Any, **__: Any) -> None:
        parser.error(
            "the API key is never taken as an argument (it would show in ps and shell "
            f"history): use --api-key-file PATH or set {API_KEY_ENV}"
        )


def _common_options(client: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (SUPPRESS keeps a later one)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    common.add_argument(
        "-v", "--verbose", action="count", help="log to stderr: -v INFO, -vv DEBUG"
    )
    if client:
        common.add_argument("--base-url", help=f"API base URL (default ${BASE_URL_ENV})")
        common.add_argument(
            "--api-key-file", metavar="PATH", help=f"read the key from PATH (else ${API_KEY_ENV})"
        )
        common.add_argument(
            "--api-key", nargs="?", action=_NoKeyOnCommandLine, help=argparse.SUPPRESS
        )
        common.add_argument(
            "--allow-insecure-http",
            action="store_true",
            help="allow sending the key over plain http to a host that is not loopback",
        )
        common.add_argument("--poll-initial", type=_seconds, help="first wait between polls (s)")
        common.add_argument("--poll-max", type=_seconds, help="longest wait between polls (s)")
    return common


def build_parser() -> argparse.ArgumentParser:
    """The ``copyai-poll`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="copyai-poll",
        description="Start, inspect and watch Copy.ai workflow runs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[_common_options(client=True)],
    )
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = functools.partial(
        subs.add_parser, epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_start(
        add("start", parents=[_common_options(client=True)], help="start a run, print its id")
    )
    _add_api_commands(add, [_common_options(client=True)])
    _add_local_commands(add, [_common_options(client=False)])
    return parser


def _add_start(start: argparse.ArgumentParser) -> None:
    start.add_argument("workflow_id", type=_id)
    repeat: dict[str, Any] = {"type": _pair, "action": "append", "default": []}
    start.add_argument(
        "-i", "--input", metavar="NAME=VALUE", help="a start variable (repeatable)", **repeat
    )
    start.add_argument(
        "-m", "--metadata", metavar="KEY=VALUE", help="a metadata entry (repeatable)", **repeat
    )
    start.add_argument("--wait", action="store_true", help="then watch it until it ends")
    start.add_argument("--timeout", type=_seconds, help="with --wait: give up after S seconds")


def _add_api_commands(add: Callable[..., argparse.ArgumentParser], parents: list[Any]) -> None:
    get = add("get", parents=parents, help="print a run as JSON")
    get.add_argument("workflow_id", type=_id)
    get.add_argument("run_id", type=_id)
    runs = add("runs", parents=parents, help="list a workflow's runs")
    runs.add_argument("workflow_id", type=_id)
    runs.add_argument("--limit", type=_positive_int, default=20, help="at most N (default 20)")
    watch = add("watch", parents=parents, help="wait for runs, showing their progress")
    watch.add_argument("workflow_id", type=_id)
    watch.add_argument("run_ids", nargs="+", metavar="RUN_ID", type=_id)
    watch.add_argument("--timeout", type=_seconds, help="give up on a run after S seconds")


def _add_local_commands(add: Callable[..., argparse.ArgumentParser], parents: list[Any]) -> None:
    help_ = "serve the fake Copy.ai API (copyai_poll.testing) until Ctrl-C"
    fake = add("fake-server", parents=parents, help=help_)
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=_port, default=8080, help="0 picks a free port")
    fake.add_argument("--api-key", default=None, help="the key the fake accepts (not a secret)")
    fake.add_argument("--demo", action="store_true", help="serve the demo's runs and faults")
    help_ = "watch ~20 scripted runs on an embedded fake server (no key needed)"
    add("demo", parents=parents, help=help_)


@attrs.frozen(kw_only=True)
class Options:
    """The parsed command line, defaults filled in."""

    args: argparse.Namespace
    json: bool
    verbose: int
    policy: PollPolicy

    @classmethod
    def parse(cls, argv: list[str] | None) -> Options:
        args = build_parser().parse_args(argv)
        initial = getattr(args, "poll_initial", None) or 1.0
        maximum = max(initial, getattr(args, "poll_max", None) or 10.0)
        return cls(
            args=args,
            json=getattr(args, "json", False),
            verbose=getattr(args, "verbose", 0),
            policy=PollPolicy(initial=initial, maximum=maximum),
        )

    def client(self, **overrides: Any) -> CopyAIClient:
        """A client from --base-url/--api-key-file and the environment."""
        key = overrides.pop("api_key", None) or _read_key(getattr(self.args, "api_key_file", None))
        base_url = overrides.pop("base_url", None) or getattr(self.args, "base_url", None)
        overrides.setdefault(
            "allow_insecure_http", getattr(self.args, "allow_insecure_http", False)
        )
        try:
            return CopyAIClient(api_key=key, base_url=base_url, **overrides)
        except CopyAIError as exc:
            message = str(exc).replace(
                "pass allow_insecure_http=True", "pass --allow-insecure-http"
            )
            raise UsageError(message) from None


def _read_key(path: str | None) -> str:
    if path is None:
        key = os.environ.get(API_KEY_ENV, "").strip()
        if not key:
            raise UsageError(f"no API key: set {API_KEY_ENV} or pass --api-key-file PATH")
        return key
    try:
        with open(path, encoding="utf-8-sig") as file:  # -sig: editors may add a BOM
            key = file.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read the API key file {path}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    if not key:
        raise UsageError(f"the API key file {path} is empty")
    return key


# -- entry point ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run ``copyai-poll`` and return its exit code."""
    try:
        options = Options.parse(argv)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    with _logging(options.verbose) as log_handler:
        try:
            return asyncio.run(_COMMANDS[options.args.command](options, log_handler))
        except UsageError as exc:
            return _fail(f"error: {exc}", EXIT_USAGE)
        except CopyAIError as exc:
            return _fail(describe(exc), EXIT_API)
        except KeyboardInterrupt:
            return _fail("interrupted", EXIT_INTERRUPTED)
        except BrokenPipeError:
            return _reader_left()
        except ExceptionGroup as group:  # from the TaskGroup of `watch`
            _, rest = group.split(BrokenPipeError)
            if rest is not None:
                raise
            return _reader_left()


def _reader_left() -> int:
    """Stdout's reader left (``| head``): stop quietly, as other tools do.

    Python's exit-time flush of stdout would raise again; point it at devnull (the recipe
    in the docs of the `signal` module).
    """
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_OK


def _fail(message: str, code: int) -> int:
    print(f"copyai-poll: {message}", file=sys.stderr)
    return code


@contextlib.contextmanager
def _logging(verbose: int) -> Iterator[DisplayLogHandler]:
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    handler = DisplayLogHandler(None, level)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(level)
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


Command = Callable[[Options, DisplayLogHandler], Coroutine[Any, Any, int]]


async def _start(options: Options, log_handler: DisplayLogHandler) -> int:
    args = options.args
    async with options.client() as client:
        run = await client.start_run(
            args.workflow_id, dict(args.input), metadata=dict(args.metadata) or None
        )
        if not args.wait:
            _print_start(options, args.workflow_id, run.id)
            return EXIT_OK
        if not options.json:
            print(run.id, flush=True)
        pairs = [(args.workflow_id, run.id)]
        _, code = await watch_runs(options, log_handler, client, pairs, timeout=args.timeout)
        return code


def _print_start(options: Options, workflow_id: str, run_id: str) -> None:
    if options.json:
        print(json.dumps({"event": "start", "workflow_id": workflow_id, "run_id": run_id}))
    else:
        print(run_id)


async def _get(options: Options, _log: DisplayLogHandler) -> int:
    async with options.client() as client:
        run = await client.get_run(options.args.workflow_id, options.args.run_id)
    print(json.dumps(dict(run.raw), indent=None if options.json else 2, default=str))
    return EXIT_OK


async def _runs(options: Options, _log: DisplayLogHandler) -> int:
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


async def _watch(options: Options, log_handler: DisplayLogHandler) -> int:
    args = options.args
    pairs = [(args.workflow_id, run_id) for run_id in dict.fromkeys(args.run_ids)]
    async with options.client() as client:
        _, code = await watch_runs(options, log_handler, client, pairs, timeout=args.timeout)
    return code


async def _fake_server(options: Options, _log: DisplayLogHandler) -> int:
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
