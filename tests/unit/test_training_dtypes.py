"""`--lm_dtype auto`: bfloat16 only where the device computes it natively (on an AVX2-only CPU bfloat16 runs about
20 times slower than float32), and a warning for an explicit bfloat16 there."""

from __future__ import annotations

import logging

import pytest
import torch

from allmrec_hf.training import dtypes


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_takes_bfloat16_only_where_it_runs_natively(monkeypatch, caplog, native, expected):
    monkeypatch.setattr(dtypes, "native_bfloat16", lambda device_type=None: native)
    with caplog.at_level(logging.INFO, logger=dtypes.__name__):
        assert dtypes.resolve_lm_dtype("auto") == expected
    assert f"--lm_dtype auto: {dtypes.dtype_name(expected)}" in caplog.text


def test_explicit_dtypes_are_kept_and_bfloat16_on_a_cpu_without_it_is_warned_about(monkeypatch, caplog):
    assert dtypes.resolve_lm_dtype(None) is None and dtypes.resolve_lm_dtype("") is None
    assert dtypes.resolve_lm_dtype("float16") == torch.float16
    monkeypatch.setattr(dtypes, "native_bfloat16", lambda device_type=None: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger=dtypes.__name__):
        assert dtypes.resolve_lm_dtype("bfloat16") == torch.bfloat16
    assert "runs far slower than float32" in caplog.text and "--lm_dtype auto picks float32 here" in caplog.text
    caplog.clear()
    monkeypatch.setattr(dtypes, "native_bfloat16", lambda device_type=None: True)
    with caplog.at_level(logging.WARNING, logger=dtypes.__name__):
        dtypes.resolve_lm_dtype("bfloat16")
    assert not caplog.text
    with pytest.raises(ValueError, match=r"--lm_dtype 'bfloat17' is not a torch dtype \(auto, bfloat16"):
        dtypes.resolve_lm_dtype("bfloat17")
    with pytest.raises(ValueError, match="--lm_dtype 'Tensor' is not a torch dtype"):
        dtypes.resolve_lm_dtype("Tensor")  # an attribute of torch that is not a dtype


def test_the_cpu_check_is_onednns_own(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dtypes.native_bfloat16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert dtypes.native_bfloat16("mps") is False
