"""Optional LoRA on the frozen LM (off by default: the paper keeps the LM frozen). Uses transformers' PEFT
integration (`add_adapter`), so the adapter is saved with the recommender (`lm_adapter/`, safetensors + JSON) and
loaded back by `from_pretrained`. Needs `pip install peft`."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def apply_lora(model, r: int, alpha: int = 16, target_modules: list[str] | None = None, dropout: float = 0.0):
    """Add a LoRA adapter of rank `r` to `model.language_model`; only the adapter (and the projectors) train."""
    try:
        from peft import LoraConfig
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the `peft` package: pip install peft") from err
    targets = [t.strip() for t in (target_modules or ["q_proj", "v_proj"]) if t.strip()]
    names = {name.rsplit(".", 1)[-1] for name, _ in model.language_model.named_modules()}
    unknown = sorted(set(targets) - names)
    if unknown:
        raise ValueError(
            f"LoRA target modules {unknown} are not in {type(model.language_model).__name__}; "
            f"linear layers there include {sorted(n for n in names if 'proj' in n or 'fc' in n)[:12]}."
        )
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, bias="none")
    model.language_model.add_adapter(config)
    trainable = sum(p.numel() for n, p in model.language_model.named_parameters() if p.requires_grad)
    logger.info("LoRA r=%d on %s: %d trainable LM parameters.", r, targets, trainable)
    return model
