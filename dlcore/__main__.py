"""`python -m dlcore ...`: see dlcore.cli.main."""

import sys

try:
    from dlcore.cli.main import main
except KeyboardInterrupt:  # Ctrl-C while the modules load: the one line dlcore.cli.main's main() prints
    print("python -m dlcore: error: interrupted", file=sys.stderr)
    sys.exit(1)

sys.exit(main())
