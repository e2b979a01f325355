"""`python -m dlcore ...`: see dlcore.cli."""

import sys

try:
    from dlcore.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: the one line dlcore.cli.main prints
    print("python -m dlcore: error: interrupted", file=sys.stderr)
    sys.exit(1)

sys.exit(main())
