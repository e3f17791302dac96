"""``python -m copyai_poll``: the ``copyai-poll`` command."""

from ._cli import main

raise SystemExit(main())
