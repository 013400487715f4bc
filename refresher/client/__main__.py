"""`python -m refresher.client …` runs the command-line client."""

import sys

from .cli import main

sys.exit(main())
