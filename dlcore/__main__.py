"""`python -m dlcore ...`: see dlcore.cli.main."""

import sys

from dlcore.cli.main import main

sys.exit(main())
