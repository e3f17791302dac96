"""``python -m bench``: run every benchmark, print the tables and the headline ratios."""

import sys

from .run import main

sys.exit(main())
