"""How many intra-op threads a batch computes with, on the CPU.

A batch answered wholly from the activation cache runs only the head after the
layer: a few dozen operations on tensors of a few hundred kilobytes. Handing
each of them to torch's intra-op thread team costs more than it saves: on a
2-core machine a Grad-CAM++ head ran 5.3 ms with the team and 3.3 ms without it,
from a worker thread. Such batches run on the calling thread alone; everything
else keeps the configured team. ``torch.set_num_threads`` acts on the calling
thread's team (and becomes the count new threads start with), so the previous
count is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

HEAD_ONLY_THREADS = 1


@contextmanager
def intra_op_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads on this thread, then restore the count."""
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
