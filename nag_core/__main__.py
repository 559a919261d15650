"""``python -m nag_core ...``: the command line (see nag_core.cli)."""

import sys

from .cli import main

sys.exit(main())
