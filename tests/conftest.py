import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n 2 (pyproject.toml): one thread per worker, for its subprocesses (dvc repro of tiny
    # pipelines) too, so two workers share two cores instead of each spinning two threads
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
