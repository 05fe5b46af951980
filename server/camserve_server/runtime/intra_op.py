"""How many intra-op threads a piece of CPU work computes with.

A batch answered wholly from the activation cache runs only the head after the
layer: a few dozen operations on tensors of a few hundred kilobytes. Handing
each of them to torch's intra-op thread team costs more than it saves: on a
2-core machine a Grad-CAM++ head ran 5.3 ms with the team and 3.3 ms without it,
from a worker thread. Such batches run on the calling thread alone; everything
else runs with the team.

``torch.set_num_threads`` sets the calling thread's team and also the count a
thread starts with when it first computes, so a thread born while a head-only
batch runs could keep one thread for good. Every piece of work therefore states
the count it wants, and leaves the process's team size behind (``after``).

``ThreadPolicy`` is the one place that says which work gets which count; the
service (decode, answer shaping) and the device workers (batches, steps) share it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

import torch

HEAD_ONLY_THREADS = 1


def team_size() -> int:
    """This thread's intra-op thread count now: read it once, at start-up, as the team."""
    return max(1, torch.get_num_threads())


@contextmanager
def intra_op_threads(count: int, *, after: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads on this thread, then set ``after``."""
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(after)


@dataclass(frozen=True)
class ThreadPolicy:
    """The intra-op thread count of each kind of CPU work, around one team size."""

    team: int = field(default_factory=team_size)

    def full(self) -> AbstractContextManager[None]:
        """Decoding, explanation batches and job steps: the whole team."""
        return intra_op_threads(self.team, after=self.team)

    def single(self) -> AbstractContextManager[None]:
        """A few small operations (a cached batch's head, a small answer): this thread."""
        return intra_op_threads(HEAD_ONLY_THREADS, after=self.team)
