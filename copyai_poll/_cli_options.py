"""The ``copyai-poll`` command line: its parser and `Options`, the parsed result.

Below `_cli` and `_cli_demo`, above `_cli_watch` (whose exit codes the help lists).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
from collections.abc import Callable
from typing import Any

import attrs

from . import CopyAIClient, CopyAIError, PollPolicy
from ._cli_display import DisplayLogHandler, Output, choose_display
from ._cli_watch import EXIT_CODES_HELP, Watcher, base_url_hint
from ._config import API_KEY_ENV, BASE_URL_ENV

#: The commands that wait for runs, so the only ones that take --timeout.
WAITING = ("watch", "start --wait", "demo")

_EPILOG = f"""\
{EXIT_CODES_HELP}
environment:
  {API_KEY_ENV}   the API key (or --api-key-file; a key is never taken as an argument)
  {BASE_URL_ENV}  the API's base URL (or --base-url)
  NO_COLOR         no colours in the live display
"""


class UsageError(Exception):
    """A configuration mistake, told in one sentence; exit code 2."""


# -- argument types --------------------------------------------------------------------


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


def _grace(text: str) -> float:
    """Seconds, 0 included."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return _seconds(text)


def _grace_or_none(text: str) -> float | None:
    """Seconds, 0 included, or ``none`` (bear failing polls until the deadline)."""
    return None if text.strip().lower() == "none" else _grace(text)


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


# -- the parser ------------------------------------------------------------------------


def _common_options(client: bool) -> argparse.ArgumentParser:
    """Options accepted before or after the subcommand (SUPPRESS keeps a later one)."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    common.add_argument(
        "-v", "--verbose", action="count", help="show log records on stderr: -v INFO, -vv DEBUG"
    )
    common.add_argument(
        "--timeout",
        type=_seconds,
        metavar="S",
        help=f"give up on a run after S seconds (commands that wait: {', '.join(WAITING)})",
    )
    common.add_argument(
        "--request-timeout",
        type=_seconds,
        metavar="S",
        help="seconds one try of one request may take (default 30)",
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
        common.add_argument(
            "--not-found-grace",
            type=_grace,
            metavar="S",
            help="poll a 404 again for S seconds after watching began (default 30)",
        )
        common.add_argument(
            "--outage-grace",
            type=_grace_or_none,
            metavar="S",
            help="bear failing polls for S seconds, or 'none' (default 120)",
        )
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


def _add_local_commands(add: Callable[..., argparse.ArgumentParser], parents: list[Any]) -> None:
    help_ = "serve the fake Copy.ai API (copyai_poll.testing) until Ctrl-C"
    fake = add("fake-server", parents=parents, help=help_)
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--port", type=_port, default=8080, help="0 picks a free port")
    fake.add_argument("--api-key", default=None, help="the key the fake accepts (not a secret)")
    fake.add_argument("--demo", action="store_true", help="serve the demo's runs and faults")
    help_ = "watch ~20 scripted runs on an embedded fake server (no key needed)"
    add("demo", parents=parents, help=help_)


def _waits(args: argparse.Namespace) -> bool:
    return args.command in ("watch", "demo") or (
        args.command == "start" and getattr(args, "wait", False)
    )


@attrs.frozen(kw_only=True)
class Options:
    """The parsed command line, defaults filled in."""

    args: argparse.Namespace
    json: bool
    verbose: int
    policy: PollPolicy
    timeout: float | None
    request_timeout: float | None

    @classmethod
    def parse(cls, argv: list[str] | None) -> Options:
        """Parse ``argv``; a usage error exits 2 with argparse's message (SystemExit)."""
        parser = build_parser()
        args = parser.parse_args(argv)
        timeout = getattr(args, "timeout", None)
        if timeout is not None and not _waits(args):
            what = "start without --wait" if args.command == "start" else args.command
            parser.error(
                f"--timeout: {what} does not wait for runs (only {', '.join(WAITING)} do); "
                "--request-timeout bounds each request"
            )
        initial = getattr(args, "poll_initial", None) or 1.0
        maximum = max(initial, getattr(args, "poll_max", None) or 10.0)
        graces: dict[str, Any] = {}
        if hasattr(args, "not_found_grace"):
            graces["not_found_grace"] = args.not_found_grace
        if hasattr(args, "outage_grace"):
            graces["outage_grace"] = args.outage_grace
        return cls(
            args=args,
            json=getattr(args, "json", False),
            verbose=getattr(args, "verbose", 0),
            policy=PollPolicy(initial=initial, maximum=maximum, **graces),
            timeout=timeout,
            request_timeout=getattr(args, "request_timeout", None),
        )

    def client(self, **overrides: Any) -> CopyAIClient:
        """A client from --base-url/--api-key-file, --request-timeout and the environment."""
        key = overrides.pop("api_key", None) or _read_key(getattr(self.args, "api_key_file", None))
        base_url = overrides.pop("base_url", None) or getattr(self.args, "base_url", None)
        overrides.setdefault(
            "allow_insecure_http", getattr(self.args, "allow_insecure_http", False)
        )
        if self.request_timeout is not None:
            overrides.setdefault("request_timeout", self.request_timeout)
        try:
            return CopyAIClient(api_key=key, base_url=base_url, **overrides)
        except CopyAIError as exc:
            message = str(exc).replace(
                "pass allow_insecure_http=True", "pass --allow-insecure-http"
            )
            raise UsageError(message) from None

    def base_url_hint(self) -> str:
        """What to add to a 404 about the base URL the client will use (see `base_url_hint`)."""
        base_url = getattr(self.args, "base_url", None) or os.environ.get(BASE_URL_ENV)
        return base_url_hint(base_url.strip().rstrip("/")) if base_url else ""

    def watcher(self, out: Output, log_handler: DisplayLogHandler) -> Watcher:
        """A `Watcher` with the display these options and stdout call for."""
        display = choose_display(json_mode=self.json, out=out, err=sys.stderr)
        return Watcher(display, self.policy, self.timeout, log_handler=log_handler)

    def watching_client(self, watcher: Watcher, **overrides: Any) -> CopyAIClient:
        """A client (see `client`) whose retries ``watcher`` counts and shows."""
        client = self.client(on_retry=watcher.retried, **overrides)
        watcher.hint = base_url_hint(client.base_url)
        return client


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
