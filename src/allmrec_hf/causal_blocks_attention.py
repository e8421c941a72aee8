"""`attn_implementation="causal_blocks"`: causal attention computed block by block, without the key blocks a
causal mask hides, without copying grouped key/value heads, and with a backward pass of its own.

transformers' eager attention scores every query against every key and lets the mask hide the future, so nearly
half of a long prompt's score matrix (its softmax, and the backward of both) is wasted work; with grouped-query
attention it copies each key/value head once per query head that shares it (`repeat_kv`); and autograd keeps the
softmax's weights twice (float32 and the LM's dtype) and runs the scaling, the mask and the casts as separate passes
over the score matrix. This implementation:

- splits the queries into up to `MAX_BLOCKS` blocks of at least `BLOCK_SIZE` positions and scores each block only
  against the keys up to its last position, with the query heads that share a key/value head stacked into one
  matrix product against that head (the skipped scores are exactly the ones the mask gives zero weight);
- keeps each block's attention weights once, in the LM's dtype, and computes the backward from them as flash
  attention does (dV = P^T dO, dS = P * (dP - rowsum(dP * P)), dQ = dS K, dK = dS^T Q), adding dK and dV up over
  the blocks in float32;
- runs as two custom operators (`torch.library.custom_op`, forward and backward), which `torch.compile` calls as
  they are: inductor's own compiled attention was slower per layer than these blocks, and compiling the blocks
  themselves took longer.

The results equal eager attention's up to rounding (in bfloat16 its gradients are as close to a float32 computation
as eager's). Its speed and memory against eager attention, compiled or not, are measured by
`benchmarks/stage2_training_speed.py` and recorded in `benchmarks/README.md`.

It needs a causal mask: no query may see a key after its own position (transformers' causal-LM masks, with or
without padding, sliding windows or a cache, and `score_candidates`' token trees all qualify). It refuses what
eager attention's variants add on top (logit soft-capping, attention sinks); with attention dropout in training it
runs the blocks through plain autograd. Importing `allmrec_hf` registers it with transformers' `AttentionInterface`
and `AttentionMaskInterface` (it takes eager's 4D float mask).

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

import hashlib
import math
import re
from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

CAUSAL_BLOCKS = "causal_blocks"
BLOCK_SIZE = 128
MAX_BLOCKS = 4

_OP_NAMESPACE = "allmrec_hf"


def _operator_name() -> str:
    """The module's name (the installed package's copy and any copy transformers' trust_remote_code loads from a
    checkpoint each register their own operators) and a digest of its source: inductor's on-disk caches key
    compiled graphs by operator name, so a changed implementation must not reuse graphs compiled for an old one
    (they had traced an earlier backward into the graph)."""
    name = re.sub(r"\W", "_", __name__)
    try:
        with open(__file__, "rb") as source:
            return f"{name}_{hashlib.sha256(source.read()).hexdigest()[:12]}"
    except (NameError, OSError):  # no source file to read
        return name


_OP_NAME = _operator_name()


def _blocks(q_len: int) -> list[tuple[int, int]]:
    """The query blocks, `(start, stop)`: up to `MAX_BLOCKS` of at least `BLOCK_SIZE` queries (one if shorter)."""
    count = max(1, min(MAX_BLOCKS, q_len // BLOCK_SIZE))
    step = q_len // count
    return [(index * step, q_len if index == count - 1 else (index + 1) * step) for index in range(count)]


class _QueryBlock(NamedTuple):
    """One block of queries, `start:stop`, which sees the first `keys` keys (those up to its last query)."""

    start: int
    stop: int
    keys: int
    query: torch.Tensor  # (batch, kv_heads, groups * rows, dim): the query heads that share a key/value head, stacked
    weights_shape: tuple[int, int, int, int, int]  # (batch, kv_heads, groups, rows, keys)

    @property
    def weights_size(self) -> int:
        return math.prod(self.weights_shape)


def _query_blocks(query: torch.Tensor, kv_heads: int, kv_len: int) -> Iterator[_QueryBlock]:
    """The blocks of `query (batch, heads, q_len, dim)`; query i sits at key position kv_len - q_len + i (or
    earlier, with a static cache)."""
    batch, heads, q_len, dim = query.shape
    groups = heads // kv_heads
    grouped = query.view(batch, kv_heads, groups, q_len, dim)
    for start, stop in _blocks(q_len):
        rows, keys = stop - start, kv_len - q_len + stop
        block = grouped[:, :, :, start:stop].reshape(batch, kv_heads, groups * rows, dim)
        yield _QueryBlock(start, stop, keys, block, (batch, kv_heads, groups, rows, keys))


def _scratch_size(query: torch.Tensor, kv_len: int) -> int:
    """Elements enough for the largest block's weights."""
    batch, heads, q_len, _ = query.shape
    return batch * heads * max(stop - start for start, stop in _blocks(q_len)) * kv_len


def _future(block: _QueryBlock) -> torch.Tensor:
    """Without a mask: which keys lie after each of the block's queries, `(rows, keys)` (its last query sits at key
    position keys - 1)."""
    rows = block.stop - block.start
    return torch.ones(rows, block.keys, dtype=torch.bool, device=block.query.device).triu_(block.keys - rows + 1)


def _blocked_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    weights_store: torch.Tensor | None = None,
) -> torch.Tensor:
    """The attention, block by block, as `(batch, q_len, heads, value_dim)`.

    With `weights_store` (a flat buffer of at least batch * heads * q_len * kv_len elements) each block's attention
    weights are computed in it, one contiguous block after another, for the backward pass; without it, in one
    scratch buffer the blocks share. Either way the scores are scaled, masked and turned into weights in place (each
    fresh score matrix would cost its pages' first touch)."""
    batch, heads, q_len, _ = query.shape
    kv_heads, kv_len, value_dim = key.shape[1], key.shape[2], value.shape[-1]
    output = query.new_empty(batch, q_len, kv_heads, heads // kv_heads, value_dim)
    reuse = weights_store is None
    if reuse:
        weights_store = query.new_empty(_scratch_size(query, kv_len))
    used = 0
    for block in _query_blocks(query, kv_heads, kv_len):
        scores = weights_store[used : used + block.weights_size].view(block.weights_shape)
        used = 0 if reuse else used + block.weights_size
        scores_2d = scores.view(batch, kv_heads, -1, block.keys)
        torch.matmul(block.query, key[:, :, : block.keys].transpose(2, 3), out=scores_2d)
        if mask is not None:
            torch.add(mask[..., block.start : block.stop, : block.keys], scores, alpha=scaling, out=scores)
        else:
            scores.mul_(scaling).masked_fill_(_future(block), torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=-1, out=scores)
        _write_output(output, block, weights, value)
    return output.view(batch, q_len, heads, value_dim)


def _blocked_attention_with_dropout(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    dropout: float,
) -> torch.Tensor:
    """`_blocked_attention` in plain autograd-able torch, dropping attention weights with probability `dropout`
    (training with attention dropout, where the weights change after the softmax)."""
    batch, heads, q_len, _ = query.shape
    kv_heads, kv_len, value_dim = key.shape[1], key.shape[2], value.shape[-1]
    output = query.new_empty(batch, q_len, kv_heads, heads // kv_heads, value_dim)
    for block in _query_blocks(query, kv_heads, kv_len):
        scores = torch.matmul(block.query, key[:, :, : block.keys].transpose(2, 3)).view(block.weights_shape)
        if mask is not None:
            scores = torch.add(mask[..., block.start : block.stop, : block.keys], scores, alpha=scaling)
        else:
            scores = (scores * scaling).masked_fill(_future(block), torch.finfo(scores.dtype).min)
        weights = nn.functional.dropout(torch.softmax(scores, dim=-1), p=dropout)
        _write_output(output, block, weights, value)
    return output.view(batch, q_len, heads, value_dim)


def _write_output(output: torch.Tensor, block: _QueryBlock, weights: torch.Tensor, value: torch.Tensor) -> None:
    """The block's output, weights @ values, into its rows of `output (batch, q_len, kv_heads, groups, dim)`."""
    batch, kv_heads, groups, rows, keys = block.weights_shape
    out = torch.matmul(weights.view(batch, kv_heads, groups * rows, keys), value[:, :, :keys])
    output[:, block.start : block.stop] = out.view(batch, kv_heads, groups, rows, -1).permute(0, 3, 1, 2, 4)


def _attention_op(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: torch.Tensor | None,
    scaling: float,
    keep_weights: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The custom operator's body: the output and, when `keep_weights`, the flat buffer of attention weights its
    backward reads (else an empty tensor)."""
    store = _weights_store(query, key, keep_weights)
    return _blocked_attention(query, key, value, mask, scaling, store if keep_weights else None), store


def _weights_store(query: torch.Tensor, key: torch.Tensor, keep_weights: bool) -> torch.Tensor:
    """An uninitialised buffer for every block's weights (batch * heads * q_len * kv_len bounds them), or an empty
    one."""
    batch, heads, q_len, _ = query.shape
    return query.new_empty(batch * heads * q_len * key.shape[2] if keep_weights else 0)


def _attention_op_fake(query, key, value, mask, scaling, keep_weights):
    batch, heads, q_len, _ = query.shape
    return query.new_empty(batch, q_len, heads, value.shape[-1]), _weights_store(query, key, keep_weights)


def _attention_op_setup_context(ctx, inputs, output) -> None:
    query, key, value, _, scaling, _ = inputs
    ctx.save_for_backward(query, key, value, output[1])
    ctx.scaling = scaling
    # The weights buffer is for the backward only: no gradient flows into it, and none is materialised (autograd
    # would otherwise fill a zero tensor of its size, batch * heads * q_len * kv_len, on every backward pass).
    ctx.mark_non_differentiable(output[1])
    ctx.set_materialize_grads(False)


def _attention_op_backward(ctx, grad_output: torch.Tensor | None, _grad_store: torch.Tensor | None):
    query, key, value, store = ctx.saved_tensors
    if grad_output is None:  # the output took no part in what is differentiated
        return None, None, None, None, None, None
    if store.numel() == 0:
        raise RuntimeError(f"{CAUSAL_BLOCKS} attention ran without keeping its weights; it cannot backpropagate.")
    grads = _BACKWARD_OP(grad_output, query, key, value, store, ctx.scaling)
    return *grads, None, None, None


def _attention_backward_op(
    grad_output: torch.Tensor,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    store: torch.Tensor,
    scaling: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flash attention's backward, block by block from the stored weights P: dV = P^T dO, dP = dO V^T,
    dS = P * (dP - rowsum(dP * P)), dQ = dS K * scaling, dK = dS^T Q * scaling; dK and dV add up over the blocks
    in float32. Its own operator, so that torch.compile calls it as it is rather than unrolling the blocks."""
    batch, heads, q_len, dim = query.shape
    kv_heads, kv_len, value_dim = key.shape[1], key.shape[2], value.shape[-1]
    groups = heads // kv_heads
    grad_grouped = grad_output.reshape(batch, q_len, kv_heads, groups, value_dim)
    grad_query = query.new_empty(batch, kv_heads, groups, q_len, dim)
    grad_key = torch.zeros(key.shape, dtype=torch.float32, device=key.device)
    grad_value = torch.zeros(value.shape, dtype=torch.float32, device=value.device)
    scratch = query.new_empty(_scratch_size(query, kv_len))
    used = 0
    for block in _query_blocks(query, kv_heads, kv_len):
        start, stop, keys, size = block.start, block.stop, block.keys, block.weights_size
        weights = store[used : used + size].view(batch, kv_heads, -1, keys)
        used += size
        grad_block = grad_grouped[:, start:stop].permute(0, 2, 3, 1, 4).reshape(batch, kv_heads, -1, value_dim)
        grad_value[:, :, :keys] += torch.matmul(weights.transpose(2, 3), grad_block)
        grad_scores = scratch[:size].view(weights.shape)  # dP, then dS in place
        torch.matmul(grad_block, value[:, :, :keys].transpose(2, 3), out=grad_scores)
        torch.ops.aten._softmax_backward_data.out(grad_scores, weights, -1, weights.dtype, grad_input=grad_scores)
        grad_query[:, :, :, start:stop] = torch.matmul(grad_scores, key[:, :, :keys]).view(
            batch, kv_heads, groups, stop - start, dim
        )
        grad_key[:, :, :keys] += torch.matmul(grad_scores.transpose(2, 3), block.query)
    grad_query = grad_query.mul_(scaling).view(batch, heads, q_len, dim)
    return grad_query, grad_key.mul_(scaling).to(key.dtype), grad_value.to(value.dtype)


def _attention_backward_op_fake(grad_output, query, key, value, store, scaling):
    return query.new_empty(query.shape), key.new_empty(key.shape), value.new_empty(value.shape)


def _registered_ops():
    """`torch.ops.allmrec_hf.<this module>` and `<this module>_backward`: operators torch.compile calls as they are
    (inductor compiled the unrolled blocks more slowly, and its own fused attention ran slower than these blocks:
    `benchmarks/README.md`)."""
    namespace = getattr(torch.ops, _OP_NAMESPACE)
    if not hasattr(namespace, _OP_NAME):  # a second import of the same module (importlib.reload) reuses them
        backward = torch.library.custom_op(
            f"{_OP_NAMESPACE}::{_OP_NAME}_backward", _attention_backward_op, mutates_args=()
        )
        backward.register_fake(_attention_backward_op_fake)
        op = torch.library.custom_op(f"{_OP_NAMESPACE}::{_OP_NAME}", _attention_op, mutates_args=())
        op.register_fake(_attention_op_fake)
        op.register_autograd(_attention_op_backward, setup_context=_attention_op_setup_context)
    return getattr(namespace, _OP_NAME), getattr(namespace, f"{_OP_NAME}_backward")


_OP, _BACKWARD_OP = _registered_ops()


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The mask as an additive one in the attention's dtype (a float32 mask under bf16 autocast, say), its hidden
    positions at that dtype's minimum rather than rounded to -inf (a fully hidden padding row would give NaN)."""
    if mask.dtype == torch.bool:  # True: may attend
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    if mask.dtype != dtype:
        return mask.clamp(min=torch.finfo(dtype).min, max=torch.finfo(dtype).max).to(dtype)
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
    if attention_mask is not None:
        attention_mask = _additive(attention_mask[..., :kv_len], query.dtype)
        if attention_mask.shape[1] != 1:  # per-head masks: (batch, kv_heads, groups, q_len, kv_len)
            attention_mask = attention_mask.reshape(-1, kv_heads, groups, q_len, kv_len)
        else:
            attention_mask = attention_mask[:, :, None]
    if dropout and module.training:  # the weights change after the softmax: plain autograd through the blocks
        return _blocked_attention_with_dropout(query, key, value, attention_mask, scaling, dropout), None
    keep_weights = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    output, _ = _OP(query, key, value, attention_mask, scaling, keep_weights)
    return output, None


AttentionInterface.register(CAUSAL_BLOCKS, causal_blocks_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(CAUSAL_BLOCKS, eager_mask)
