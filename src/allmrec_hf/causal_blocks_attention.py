"""`attn_implementation="causal_blocks"`: eager attention that skips the key blocks a causal mask hides and does
not copy grouped key/value heads.

transformers' eager attention scores every query against every key and lets the mask hide the future, so nearly
half of a long prompt's score matrix (its softmax, and the backward of both) is wasted work; with grouped-query
attention it also copies each key/value head once per query head that shares it (`repeat_kv`). This
implementation splits the queries into up to `MAX_BLOCKS` blocks of at least `BLOCK_SIZE` positions and scores
each block only against the keys up to its last position, with the query heads that share a key/value head
stacked into one matrix product against that head. The result is the same attention: the skipped scores are
exactly the ones the mask gives zero weight (up to the rounding of a differently blocked product). With
SmolLM2-135M in bfloat16 on 2 CPU cores (stage-2 training, 4 prompts of ~450 tokens) a step was 5-10% faster than
with eager attention and the process peaked ~1.6 GB lower (fewer and smaller saved score matrices); see
`benchmarks/stage2_training_speed.py`. Under `torch.compile` it runs one block (still without copying key/value
heads): inductor compiled the unrolled blocks ~3 times slower than eager's attention (a 2-layer LM: 33 s, then 90 s
to recompile for dynamic prompt lengths, against 17 s and 24 s), while one block compiles as fast as eager (cold
inductor cache, 2 layers: 29 s + 26 s against 35 s + 32 s).

It needs a causal mask: no query may see a key after its own position (transformers' causal-LM masks, with or
without padding, sliding windows or a cache, and `score_candidates`' token trees all qualify). It refuses what
eager attention's variants add on top (logit soft-capping, attention sinks). Importing `allmrec_hf` registers it
with transformers' `AttentionInterface` and `AttentionMaskInterface` (it takes eager's 4D float mask).

Example:

>>> import torch
>>> from transformers import LlamaConfig, LlamaForCausalLM
>>> import allmrec_hf  # registers "causal_blocks"
>>> config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
...                      num_key_value_heads=2, vocab_size=100)
>>> blocks = LlamaForCausalLM._from_config(config, attn_implementation="causal_blocks").eval()
>>> eager = LlamaForCausalLM._from_config(config, attn_implementation="eager").eval()
>>> eager.load_state_dict(blocks.state_dict())
<All keys matched successfully>
>>> ids = torch.randint(0, 100, (2, 300))
>>> torch.allclose(blocks(ids).logits, eager(ids).logits, atol=1e-5)
True
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

CAUSAL_BLOCKS = "causal_blocks"
BLOCK_SIZE = 128
MAX_BLOCKS = 4


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:  # True: may attend
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    return mask


def causal_blocks_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    s_aux: torch.Tensor | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention over `query (batch, heads, q_len, head_dim)` and `key`/`value (batch, kv_heads, kv_len, dim)`
    under a causal `attention_mask` (additive float or boolean, `(batch, 1 or heads, q_len, >= kv_len)`; None
    means plain causal attention with the queries at the last `q_len` key positions). Returns the output as
    `(batch, q_len, heads, dim)` and no attention weights, like transformers' SDPA path."""
    if softcap is not None:
        raise ValueError(f"attn_implementation={CAUSAL_BLOCKS!r} does not do logit soft-capping; use 'eager'.")
    if s_aux is not None:
        raise ValueError(f"attn_implementation={CAUSAL_BLOCKS!r} does not do attention sinks; use 'eager'.")
    if getattr(module, "is_causal", True) is False:
        raise ValueError(
            f"attn_implementation={CAUSAL_BLOCKS!r} needs causal attention; {type(module).__name__} is not."
        )
    batch, heads, q_len, head_dim = query.shape
    kv_heads, kv_len = key.shape[1], key.shape[2]
    if heads % kv_heads:
        raise ValueError(f"{heads} query heads cannot share {kv_heads} key/value heads.")
    groups = heads // kv_heads
    scaling = head_dim**-0.5 if scaling is None else scaling
    offset = kv_len - q_len  # query i sits at key position offset + i (or earlier, with a static cache)
    if attention_mask is not None:
        attention_mask = _additive(attention_mask[..., :kv_len], query.dtype)
    if attention_mask is not None:
        if attention_mask.shape[1] != 1:  # per-head masks: (batch, kv_heads, groups, q_len, kv_len)
            attention_mask = attention_mask.reshape(-1, kv_heads, groups, q_len, kv_len)
        else:
            attention_mask = attention_mask[:, :, None]
    grouped = query.view(batch, kv_heads, groups, q_len, head_dim)
    outputs = []
    # Compiled, one block: inductor compiled the unrolled blocks ~3x slower.
    blocks = 1 if torch.compiler.is_compiling() else max(1, min(MAX_BLOCKS, q_len // BLOCK_SIZE))
    step = q_len // blocks
    for index in range(blocks):
        start, stop = index * step, q_len if index == blocks - 1 else (index + 1) * step
        rows, keys = stop - start, offset + stop
        block = grouped[:, :, :, start:stop].reshape(batch, kv_heads, groups * rows, head_dim)
        scores = torch.matmul(block, key[:, :, :keys].transpose(2, 3)) * scaling
        scores = scores.view(batch, kv_heads, groups, rows, keys)
        if attention_mask is not None:
            scores = scores + attention_mask[..., start:stop, :keys]
        else:
            future = torch.ones(rows, keys, dtype=torch.bool, device=query.device).triu_(offset + start + 1)
            scores = scores.masked_fill(future, torch.finfo(scores.dtype).min)
        weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        weights = nn.functional.dropout(weights, p=dropout, training=module.training)
        out = torch.matmul(weights.view(batch, kv_heads, groups * rows, keys), value[:, :, :keys])
        outputs.append(out.view(batch, kv_heads, groups, rows, value.shape[-1]))
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=3)
    output = output.view(batch, heads, q_len, value.shape[-1]).transpose(1, 2).contiguous()
    return output, None


AttentionInterface.register(CAUSAL_BLOCKS, causal_blocks_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(CAUSAL_BLOCKS, eager_mask)
