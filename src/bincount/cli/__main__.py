"""`python -m bincount.cli ...`: the `bincount` command."""

import sys

from bincount.cli import main

sys.exit(main())
