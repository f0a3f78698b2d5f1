#!/usr/bin/env python3
"""Train or evaluate BQNet, as the original's entry point: ``python tools/train.py config/res.yaml --gpu_id 0``.

Thin wrapper of ``bqnet_model.train`` (also installed as ``bqnet-train``); see its ``--help``.
Multi-GPU: ``torchrun --nproc_per_node 4 tools/train.py config/res.yaml``.
``--profile-steps N`` profiles N steps once the run is warm and writes ``<train.work_dir>/profile.txt``
(where a step's time goes: op calls, GPU kernel time, the regions of the step, the top ops).
"""

import sys
from pathlib import Path

try:
    from bqnet_model.train import main
except ModuleNotFoundError:  # run from a checkout that is not pip-installed: use the checkout itself
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bqnet_model.train import main

if __name__ == "__main__":
    sys.exit(main())
