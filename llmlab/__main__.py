"""``python -m llmlab ...`` is the ``llmlab`` command (useful under ``torchrun -m``)."""

from __future__ import annotations

import sys

from llmlab.cli import main

if __name__ == "__main__":
    sys.exit(main())
