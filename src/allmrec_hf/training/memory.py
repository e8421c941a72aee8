"""Handing memory that the C allocator keeps after frees back to the operating system, on CPU.

A stage-2 step on CPU allocates and frees a few GB of activations whose sizes change with every batch (each batch
has its own prompt length). glibc's allocator keeps most freed blocks in its heap and, as the sizes shift, the heap
fragments: the process' resident memory grows step after step, to several times what a step needs (the figures
are in `docs/training.md`, "Memory on CPU"). `malloc_trim(0)` returns the free pages to the system; it takes a
moment and the next step pays for touching fresh pages (page faults), so `ReleaseFreedMemoryCallback` does it when
training begins and then only when the process has grown by more than a set amount since its first step, on CPU
only, where the C library has it (glibc; elsewhere it does nothing).
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
    >>> release_freed_memory()  # doctest: +SKIP
    True

    (`tests/unit/test_training_memory.py` checks the resident size falls in a fresh process.)
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
    """On CPU, calls `release_freed_memory()` when training begins (what earlier work in the process left behind
    goes back to the system) and then after any optimizer step that ends more than `max_growth_gb` above the
    resident size after the first step (the model, the optimizer and one step's working set). Releasing costs the
    next step its page faults, so it is done only once the heap has grown, not every step. A run on an accelerator
    keeps its activations there, and nothing is done. `Stage2Trainer` adds it."""

    def __init__(self, max_growth_gb: float = 2.0):
        if not max_growth_gb > 0:
            raise ValueError(f"max_growth_gb must be > 0, got {max_growth_gb}")
        self.max_growth = int(max_growth_gb * 2**30)
        self.limit: int | None = None
        self.releases = 0

    @staticmethod
    def _applies(args) -> bool:
        return args.device.type == "cpu" and _malloc_trim() is not None

    def on_train_begin(self, args, state, control, **kwargs):
        if self._applies(args):
            release_freed_memory()
            self.limit = None

    def on_step_end(self, args, state, control, **kwargs):
        resident = resident_bytes() if self._applies(args) else None
        if resident is None:
            return
        if self.limit is None:
            self.limit = resident + self.max_growth
            logger.debug("Freed memory goes back to the system above %.1f GB resident.", self.limit / 2**30)
        elif resident > self.limit:
            release_freed_memory()
            self.releases += 1
            logger.debug("Step %d: released freed memory (resident %.1f GB).", state.global_step, resident / 2**30)
