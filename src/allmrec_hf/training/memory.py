"""Handing memory that the C allocator keeps after frees back to the operating system, on CPU.

A stage-2 step on CPU allocates and frees a few GB of activations whose sizes change with every batch (each batch
has its own prompt length). glibc's allocator keeps most freed blocks in its heap and, as the sizes shift, the heap
can fragment: the process' resident memory then grows step after step (with SmolLM2-135M, batch 4, and a
contiguous LM-head input: from ~5 GB after 4 steps to ~14 GB after 60) although a step needs about 4 GB.
`malloc_trim(0)` returns the free pages to the system; it takes ~0.2 s and the next step touches fresh pages
(~1.5 s of page faults for that step), so `ReleaseFreedMemoryCallback` does it only when the process has grown by
more than a set amount since its first step, on CPU only, where the C library has it (glibc; elsewhere it does
nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

from transformers import TrainerCallback

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the pages glibc's allocator holds in free blocks to the system (`malloc_trim(0)`); True when it
    released some, False when nothing was released or the C library has no `malloc_trim`.

    Example:

    >>> from allmrec_hf.training.memory import release_freed_memory
    >>> release_freed_memory() in (True, False)
    True
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


def resident_bytes() -> int | None:
    """The process' current resident memory in bytes (Linux `/proc/self/statm`), None where unavailable."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class ReleaseFreedMemoryCallback(TrainerCallback):
    """On CPU, calls `release_freed_memory()` after an optimizer step whenever the process' resident memory has
    grown by more than `max_growth_gb` over what it was after the first step (which holds the model and one step's
    working set). Releasing costs the next step its page faults (~1.5 s for a SmolLM2 stage-2 step on 2 cores), so
    it is done only when the heap has grown, not every step: with the default, every few steps in the quickstart.
    A run on an accelerator keeps its activations there, and nothing is done. `Stage2Trainer` adds it."""

    def __init__(self, max_growth_gb: float = 4.0):
        if not max_growth_gb > 0:
            raise ValueError(f"max_growth_gb must be > 0, got {max_growth_gb}")
        self.max_growth = int(max_growth_gb * 2**30)
        self.baseline: int | None = None
        self.releases = 0

    def on_step_end(self, args, state, control, **kwargs):
        if args.device.type != "cpu" or _malloc_trim() is None:
            return
        resident = resident_bytes()
        if resident is None:
            return
        if self.baseline is None:
            self.baseline = resident
        elif resident > self.baseline + self.max_growth:
            release_freed_memory()
            self.releases += 1
            logger.debug("Step %d: released freed memory (resident %.1f GB).", state.global_step, resident / 2**30)
