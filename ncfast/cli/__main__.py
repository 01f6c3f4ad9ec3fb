"""``python -m ncfast.cli ...``: the ``ncfast`` command (for torchrun, which runs modules)."""

import sys

from .main import main

sys.exit(main())
