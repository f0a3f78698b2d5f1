"""``python -m bqnet_synth --out DIR --scenes N``: write a synthetic data set (``bqnet-synth``)."""

import sys

from bqnet_synth.dataset import main

if __name__ == "__main__":
    sys.exit(main())
