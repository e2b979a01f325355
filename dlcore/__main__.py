"""`python -m dlcore ...`: see dlcore.cli."""

import sys

from dlcore.cli import main

sys.exit(main())
