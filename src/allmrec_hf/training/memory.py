"""Handing memory that the C allocator keeps after frees back to the operating system, on CPU.

A stage-2 step on CPU allocates and frees a few GB of activations whose sizes change with every batch (each batch
has its own prompt length). glibc's allocator keeps most freed blocks in its heap and, as the sizes shift, the heap
fragments: the process' resident memory grows step after step (with SmolLM2-135M, batch 4: from ~5 GB after 4
steps to ~14 GB after 60) although a step needs about 4 GB. `malloc_trim(0)` returns the free pages to the system;
it takes ~0.2 s and the next step touches fresh pages, so `ReleaseFreedMemoryCallback` does it every
`every_n_steps` optimizer steps, on CPU only, where the C library has it (glibc; elsewhere it does nothing).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

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


class ReleaseFreedMemoryCallback(TrainerCallback):
    """Calls `release_freed_memory()` after every `every_n_steps` optimizer steps of a run on CPU (a run on an
    accelerator allocates its activations there, and the host heap does not grow). `Stage2Trainer` adds it."""

    def __init__(self, every_n_steps: int = 1):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._warned = False

    def on_step_end(self, args, state, control, **kwargs):
        if args.device.type != "cpu" or state.global_step % self.every_n_steps:
            return
        if _malloc_trim() is None and not self._warned:
            logger.info("The C library has no malloc_trim: freed memory stays with the process.")
            self._warned = True
            return
        release_freed_memory()
