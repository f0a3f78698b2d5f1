"""``python -m bqnet_model.train``: the ``bqnet-train`` command."""

import sys

from .loop import main

sys.exit(main())
