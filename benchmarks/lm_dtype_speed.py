#!/usr/bin/env python
"""Benchmark: one forward and backward of the frozen LM (gradients to its input embeddings only, as the ranking
head and stage 2 train) in float32 and in bfloat16 weights, on this machine, and what `--lm_dtype auto` picks.

On a CPU without native bf16 kernels (AVX2 only) bfloat16 falls back to a slow path; with AVX-512 BF16 / AMX, or on
a recent GPU, it is the faster one. Each dtype: one warm-up step, then `--steps` timed ones; the median is reported.

    python benchmarks/lm_dtype_speed.py --batch_size 8 --tokens 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from allmrec_hf.training.dtypes import dtype_name, native_bfloat16, resolve_lm_dtype


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llm", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=300, help="prompt length per row")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per dtype (after one warm-up)")
    parser.add_argument("--tiny", action="store_true", help="a tiny random Llama instead of --llm (smoke test)")
    parser.add_argument("--output_json", default=None)
    return parser.parse_args(argv)


def language_model(args, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    if args.tiny:
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2)  # fmt: skip
        return LlamaForCausalLM(config).to(dtype)
    from allmrec_hf.offline_models import resolve_model_path

    return AutoModelForCausalLM.from_pretrained(resolve_model_path(args.llm), dtype=dtype)


def step_seconds(model, args, dtype: torch.dtype) -> list[float]:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    hidden = model.config.hidden_size
    generator = torch.Generator().manual_seed(0)
    embeds = torch.randn(args.batch_size, args.tokens, hidden, generator=generator).to(dtype).requires_grad_(True)
    times = []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        model.model(inputs_embeds=embeds).last_hidden_state.float().sum().backward()
        times.append(time.perf_counter() - start)
        embeds.grad = None
    return times[1:]


def main(argv=None) -> dict:
    args = parse_args(argv)
    result = {
        "device": "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bfloat16": native_bfloat16("cpu"),
        "auto_picks": dtype_name(resolve_lm_dtype("auto")) if not torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "tokens": args.tokens,
        "seconds_per_step": {},
    }
    for dtype in (torch.float32, torch.bfloat16):
        model = language_model(args, dtype)
        result["seconds_per_step"][dtype_name(dtype)] = round(statistics.median(step_seconds(model, args, dtype)), 3)
        del model
    seconds = result["seconds_per_step"]
    result["bfloat16_over_float32"] = round(seconds["bfloat16"] / max(seconds["float32"], 1e-9), 2)
    print(json.dumps(result, indent=2))
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
