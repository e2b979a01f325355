"""Where the app keeps what it writes: `$DLLAB_HOME`, else `~/.dllab`."""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    """The app's home folder (run history, downloaded data, cached baselines); an empty
    DLLAB_HOME counts as unset."""
    return Path(os.environ.get("DLLAB_HOME") or "~/.dllab").expanduser()
