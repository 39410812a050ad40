"""``python -m boltzkit.cli`` (e.g. under ``torchrun -m boltzkit.cli train ...``)."""

import sys

from . import main

sys.exit(main())
