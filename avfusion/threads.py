"""torch's CPU thread count, set inside a block and restored after it (also when the block raises)."""
from __future__ import annotations

from contextlib import contextmanager

import torch


@contextmanager
def torch_threads(threads: int):
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
