"""Freed CPU memory handed back to the system during stage 2 (`allmrec_hf.training.memory`)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest

from allmrec_hf.training import memory
from allmrec_hf.training.memory import ReleaseFreedMemoryCallback


@pytest.mark.skipif(memory._malloc_trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_release_freed_memory_lowers_the_resident_size():
    """Blocks of 1-7 MB freed after use stay in glibc's heap (resident) until released; in a fresh process."""
    script = textwrap.dedent(
        """
        import torch
        from allmrec_hf.training.memory import release_freed_memory

        def resident_mb():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 >> 20

        big = torch.ones(30 << 18)  # 30 MB freed: glibc's mmap threshold rises, the blocks below use the heap
        del big
        blocks = [torch.ones((1 + i % 7) << 18) for i in range(400)]  # ~1.6 GB
        last = blocks[-1]  # the heap's top block stays in use, so plain trimming of the top cannot release it
        del blocks
        before = resident_mb()
        released = release_freed_memory()
        print(before, resident_mb(), released)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2]
    assert released == "True"
    assert before - after > 1000, (before, after)


def test_callback_releases_on_cpu_only_after_the_set_growth(monkeypatch):
    """A release when training begins; the first step's resident size plus `max_growth_gb` is the limit; a release
    follows each step that ends above it; on an accelerator nothing is measured or released."""
    calls, resident = [], {"bytes": 0}
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(state.global_step) or True)
    monkeypatch.setattr(memory, "resident_bytes", lambda: resident["bytes"])
    monkeypatch.setattr(memory, "_malloc_trim", lambda: object())
    gb = 2**30
    callback = ReleaseFreedMemoryCallback(max_growth_gb=2.0)
    cpu, state = SimpleNamespace(device=SimpleNamespace(type="cpu")), SimpleNamespace(global_step=0)
    callback.on_train_begin(cpu, state, control=None)
    assert calls == [0]
    for step, size in enumerate([5, 6, 7, 7.5, 1, 5, 8], start=1):
        state.global_step, resident["bytes"] = step, int(size * gb)
        callback.on_step_end(cpu, state, control=None)
    assert callback.limit == 7 * gb
    assert calls == [0, 4, 7] and callback.releases == 2

    on_gpu = ReleaseFreedMemoryCallback(max_growth_gb=0.5)
    gpu = SimpleNamespace(device=SimpleNamespace(type="cuda"))
    on_gpu.on_train_begin(gpu, state, control=None)
    for step, size in enumerate([1, 9, 9], start=1):
        state.global_step, resident["bytes"] = step, int(size * gb)
        on_gpu.on_step_end(gpu, state, control=None)
    assert calls == [0, 4, 7] and on_gpu.limit is None


def test_resident_bytes_reads_this_process():
    resident = memory.resident_bytes()
    assert resident is None or 10 * 2**20 < resident < 1000 * 2**30


def test_callback_refuses_a_growth_that_is_not_positive():
    with pytest.raises(ValueError, match="max_growth_gb must be > 0, got 0"):
        ReleaseFreedMemoryCallback(0)
