"""The frozen LM's weight dtype from a script's `--lm_dtype`, with `auto`: bfloat16 only where the hardware computes
it natively. On a CPU without bf16 kernels (AVX2 only, e.g. many AMD EPYC and older Intel parts) oneDNN falls back
to a slow path, far slower than float32 (`benchmarks/lm_dtype_speed.py`, figures in `benchmarks/README.md`), while
CPUs with AVX-512 BF16 / AMX and recent GPUs run bfloat16 faster than float32."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

AUTO = "auto"


def native_bfloat16(device_type: str | None = None) -> bool:
    """Whether `device_type` (default: CUDA when there is a GPU, else the CPU) computes bfloat16 natively.

    >>> native_bfloat16("cpu") in (True, False) and native_bfloat16("meta") is False
    True
    """
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:  # oneDNN's own check (AVX-512 BW/BF16 or AMX); private, so guarded
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_lm_dtype(name: str | None, option: str = "--lm_dtype") -> torch.dtype | None:
    """`name` as a torch dtype (None: keep the LM's own). `auto` is bfloat16 where the device computes it natively
    and float32 elsewhere; an explicit bfloat16 on a CPU without native support is kept, with a warning.

    >>> resolve_lm_dtype("float32"), resolve_lm_dtype(None)
    (torch.float32, None)
    >>> resolve_lm_dtype("auto") in (torch.bfloat16, torch.float32)
    True
    """
    if not name:
        return None
    if name == AUTO:
        dtype = torch.bfloat16 if native_bfloat16() else torch.float32
        logger.info("%s auto: %s (bfloat16 %s natively here).", option, str(dtype).removeprefix("torch."),
                    "runs" if dtype == torch.bfloat16 else "does not run")  # fmt: skip
        return dtype
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{option} {name!r} is not a torch dtype (auto, bfloat16, float16 or float32).")
    if dtype == torch.bfloat16 and not torch.cuda.is_available() and not native_bfloat16("cpu"):
        logger.warning(
            "%s bfloat16 on a CPU without native bfloat16 kernels runs far slower than float32 (about 20x measured "
            "on an AVX2-only CPU): %s auto picks float32 here.",
            option,
            option,
        )
    return dtype


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """`torch.bfloat16` -> `"bfloat16"` (None stays None), as the scripts record it."""
    return None if dtype is None else str(dtype).removeprefix("torch.")


__all__ = ["AUTO", "dtype_name", "native_bfloat16", "resolve_lm_dtype"]
