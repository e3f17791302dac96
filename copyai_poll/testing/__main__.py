"""``python -m copyai_poll.testing``: serve a fake Copy.ai API until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from ._serve import serve
from ._server import FakeCopyAI


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m copyai_poll.testing",
        description="Serve a fake Copy.ai Workflows API until Ctrl-C.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--port", type=_port, default=8080, help="port to bind (0: any free)")
    parser.add_argument("--api-key", default="test-key", help="the key clients must send")
    parser.add_argument("--seed", type=int, default=0, help="seeds run ids and faults")
    parser.add_argument(
        "--demo", action="store_true", help="varied runs of a few seconds, some flaky polls"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, serve until SIGINT or SIGTERM, and return the exit status."""
    args = _parser().parse_args(argv)
    options = {"host": args.host, "port": args.port, "api_key": args.api_key, "seed": args.seed}
    server = FakeCopyAI.demo(**options) if args.demo else FakeCopyAI(**options)
    try:
        asyncio.run(serve(server))
    except KeyboardInterrupt:  # where signal handlers cannot be installed (Windows)
        pass
    except OSError as exc:  # the port is taken, the address is not ours, stdout closed...
        print(f"python -m copyai_poll.testing: cannot serve: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
