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


@pytest.mark.parametrize(
    ("device", "every", "expected_steps"), [("cpu", 1, [1, 2, 3, 4]), ("cpu", 2, [2, 4]), ("cuda", 1, [])]
)
def test_callback_releases_every_n_steps_on_cpu_only(monkeypatch, device, every, expected_steps):
    calls = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: calls.append(state.global_step) or True)
    callback = ReleaseFreedMemoryCallback(every)
    args, state = SimpleNamespace(device=SimpleNamespace(type=device)), SimpleNamespace(global_step=0)
    for step in range(1, 5):
        state.global_step = step
        callback.on_step_end(args, state, control=None)
    assert calls == expected_steps


def test_callback_refuses_a_step_count_below_one():
    with pytest.raises(ValueError, match="every_n_steps must be >= 1, got 0"):
        ReleaseFreedMemoryCallback(0)
