"""The reliability tests reuse the server and cluster helpers of their sibling folders."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).parent
for sibling in ("server", "cluster"):
    path = str(HERE.parent / sibling)
    if path not in sys.path:
        sys.path.append(path)
