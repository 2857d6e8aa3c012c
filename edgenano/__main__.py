"""`python -m edgenano`: the `edgenano` command."""

import sys

from .cli import main

sys.exit(main())
