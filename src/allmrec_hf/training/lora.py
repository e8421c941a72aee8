"""Optional LoRA on the frozen LM (off by default: the paper keeps the LM frozen). Uses peft's model-level API
(`inject_adapter_in_model`), so the LM stays a plain transformers model; `save_pretrained` writes the adapter in
PEFT's format (`lm_adapter/adapter_config.json` + `adapter_model.safetensors`, also loadable with
`peft.PeftModel.from_pretrained`) and `from_pretrained` puts it back on the base LM. Needs `pip install peft`."""

from __future__ import annotations

import logging

from ..modeling_allmrec import import_peft, lm_adapter_layers, upcast_lm_adapter

logger = logging.getLogger(__name__)


def apply_lora(model, r: int, alpha: int = 16, target_modules: list[str] | None = None, dropout: float = 0.0):
    """Add a LoRA adapter of rank `r` to `model.language_model`; only the adapter (and the projectors) train."""
    peft = import_peft("LoRA")
    if r <= 0:
        raise ValueError(f"the LoRA rank must be positive, got {r}.")
    language_model = model.language_model
    if lm_adapter_layers(language_model):
        raise ValueError("the language model already carries a PEFT adapter: apply LoRA once, to a plain LM.")
    targets = [t.strip() for t in (target_modules or ["q_proj", "v_proj"]) if t.strip()]
    names = {name.rsplit(".", 1)[-1] for name, _ in language_model.named_modules()}
    unknown = sorted(set(targets) - names)
    if unknown:
        raise ValueError(
            f"LoRA target modules {unknown} are not in {type(language_model).__name__}; "
            f"linear layers there include {sorted(n for n in names if 'proj' in n or 'fc' in n)[:12]}."
        )
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, lora_dropout=dropout, bias="none")
    language_model.requires_grad_(False)  # the LM's own weights stay frozen; peft marks the adapter trainable
    peft.inject_adapter_in_model(config, language_model)
    upcast_lm_adapter(language_model)  # float32 adapter weights on a half-precision LM
    trainable = sum(p.numel() for p in language_model.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on %s: %d trainable LM parameters.", r, targets, trainable)
    return model
