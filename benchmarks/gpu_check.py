#!/usr/bin/env python
"""GPU check (issue 22): speed and memory of the ranking head and of the paper's model on one accelerator, in one
run, with one summary table. Run by `benchmarks/gpu_check.sh` on a lent GPU machine; `--smoke` runs it on the CPU
at toy sizes (what the test suite does).

The LM has SmolLM2-135M's architecture (30 layers, hidden 576, 9 heads / 3 KV heads, vocabulary 49,152) with random
weights: the real weights cannot travel to the GPU machine (its working-tree limit is 64 MiB and it reaches no Hub),
and speed depends on the shapes alone. Everything runs in bf16 with SDPA attention.

Measured:
- `peak`: the best bf16 matrix-product rate (8192^3, ten timed products after warm-ups) on this GPU, now;
- `ranking-head training`: AdamW steps of `ALLMRecForItemRanking` (frozen LM, trainable projectors, output token
  and heads; full-catalog cross-entropy over every shown prefix): samples/s, FLOP per step counted with
  `torch.utils.flop_counter` (forward and backward), achieved FLOP/s and its share of the peak;
- `stage-2 training`: the same for `ALLMRecForConditionalGeneration` (the paper's prompt with 20 candidate titles,
  cross-entropy on the answer);
- `ranking head, whole catalog`: users/s of `score_candidates` over the whole catalog (one forward per user);
- `generation`: users/s of the paper's greedy `generate` (answer up to `--max_new_tokens`);
- peak GPU memory of each; the 2-GPU configurations are skipped with a line when only one GPU exists.
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch

SMOLLM2_135M = dict(
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    vocab_size=49152,
    max_position_embeddings=8192,
    tie_word_embeddings=True,
    rope_theta=100000.0,
)
SMOKE_LM = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=1024,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (for the test suite)")
    parser.add_argument("--num_items", type=int, default=1682, help="catalog size (ML-100k's)")
    parser.add_argument("--history_length", type=int, default=20, help="items shown per user")
    parser.add_argument("--train_batch_size", type=int, default=32)
    parser.add_argument("--eval_batch_size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per model (after 3 warm-ups)")
    parser.add_argument("--max_new_tokens", type=int, default=24)
    parser.add_argument("--output_json", default=None)
    return parser.parse_args(argv)


# ============================================================================================== building
def build_processor(num_items: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from allmrec_hf import ALLMRecProcessor, ItemCatalog

    words = "red blue green dark night river stone city love war star road king moon time game house".split()
    titles = [
        f"{words[i % 17].title()} {words[(3 * i + 1) % 17]} {words[(7 * i + 2) % 17]} {1950 + i % 70}"
        for i in range(num_items)
    ]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<pad>", "<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    prompt = (
        "is a user representation. This user has watched in the previous. Recommend one next movie for this "
        'user to watch next from the following movie title set, . The recommendation is nothing yet " ,'
    )
    tok.train_from_iterator(titles[:500] + [prompt] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    catalog = ItemCatalog(titles, item_ids=[str(i) for i in range(1, num_items + 1)])
    return ALLMRecProcessor(tokenizer, tokenizer, catalog)


def model_configs(processor, smoke: bool, num_items: int):
    from transformers import BertConfig, LlamaConfig

    from allmrec_hf import ALLMRecAlignerConfig, ALLMRecConfig, ALLMRecRankingConfig, SASRecConfig

    lm = LlamaConfig(**(SMOKE_LM if smoke else SMOLLM2_135M), pad_token_id=0, bos_token_id=2, eos_token_id=3)
    aligner = ALLMRecAlignerConfig(
        cf_config=SASRecConfig(num_items=num_items, hidden_size=32 if smoke else 64),
        text_encoder_config=BertConfig(
            vocab_size=len(processor.text_encoder_tokenizer),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
        ),
        latent_size=16 if smoke else 128,
    )
    common = dict(
        aligner_config=aligner, text_config=lm, base_model_name_or_path=None, **processor.placeholder_token_ids
    )
    ranking = ALLMRecRankingConfig(
        **common, item_projector_input="cf_embedding", output_token_id=processor.output_token_id
    )
    return ALLMRecConfig(**common), ranking


def place(model, device, dtype):
    """The LM in `dtype` (frozen), everything else in float32 (it trains), all on `device`."""
    model.to(device)
    model.language_model.to(dtype)
    model.language_model.config._attn_implementation = "sdpa"
    return model


# ============================================================================================== measuring
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, smoke: bool) -> float:
    size = 256 if smoke else 8192
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(10):
        a @ b
    sync(device)
    return 10 * 2 * size**3 / (time.perf_counter() - start)


def flops_of(step) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return counter.get_total_flops()


def time_training(model, batches, steps: int, device) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step(batch):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    flops = flops_of(lambda: step(batches[0]))
    for batch in batches[:3]:
        step(batch)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    losses = [float(step(batches[i % len(batches)])) for i in range(steps)]
    sync(device)
    seconds = (time.perf_counter() - start) / steps
    model.eval()
    return {
        "samples_per_s": batches[0]["input_ids"].shape[0] / seconds,
        "seconds_per_step": seconds,
        "flop_per_step": flops,
        "flop_per_s": flops / seconds,
        "finite_loss": all(map(lambda x: x == x, losses)),
        "peak_memory_gib": peak_memory(device),
    }


def peak_memory(device) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None


@torch.no_grad()
def time_users(run, batches, device) -> dict:
    run(batches[0])
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    users = 0
    for batch in batches:
        run(batch)
        users += batch["input_ids"].shape[0]
    sync(device)
    return {"users_per_s": users / (time.perf_counter() - start), "peak_memory_gib": peak_memory(device)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    from allmrec_hf import ALLMRecForConditionalGeneration, ALLMRecForItemRanking

    device = torch.device("cpu" if args.smoke or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16
    num_items = 60 if args.smoke else args.num_items
    steps = 2 if args.smoke else args.steps
    train_batch, eval_batch = (4, 4) if args.smoke else (args.train_batch_size, args.eval_batch_size)
    rng = random.Random(0)
    processor = build_processor(num_items)
    generation_config, ranking_config = model_configs(processor, args.smoke, num_items)

    def histories(n):
        return [rng.sample(range(1, num_items + 1), args.history_length) for _ in range(n)]

    def to(batch):
        return {key: value.to(device) for key, value in batch.items()}

    result = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "attention": "sdpa",
        "lm": "SmolLM2-135M architecture, random weights" if not args.smoke else "toy",
    }
    result["peak_flop_per_s"] = matmul_peak(device, dtype, args.smoke)

    torch.manual_seed(0)
    ranking = place(ALLMRecForItemRanking(ranking_config), device, dtype)
    train = []
    for _ in range(4):
        rows = histories(train_batch)
        train.append(to(processor.ranking_inputs([r[:-1] for r in rows], targets=[r[-1] for r in rows])))
    result["ranking-head training"] = time_training(ranking, train, steps, device)
    scoring = [to(processor.ranking_inputs(histories(eval_batch))) for _ in range(3 if args.smoke else 8)]
    result["ranking head, whole catalog"] = time_users(
        lambda b, model=ranking: model.score_candidates(**b), scoring, device
    )
    del ranking, train, scoring

    torch.manual_seed(0)
    generation = place(ALLMRecForConditionalGeneration(generation_config), device, dtype)

    def stage2_batch(n):
        rows = histories(n)
        candidates = [rng.sample(range(1, num_items + 1), 20) for _ in rows]
        targets = [c[0] for c in candidates]
        return to(processor(histories=[r[:10] for r in rows], candidates=candidates, targets=targets))

    result["stage-2 training"] = time_training(generation, [stage2_batch(train_batch) for _ in range(4)], steps, device)
    prompts = []
    for _ in range(2 if args.smoke else 4):
        batch = stage2_batch(eval_batch)
        prompts.append(
            {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "cf_input_ids", "item_ids")}
        )
    new_tokens = 4 if args.smoke else args.max_new_tokens
    result["generation"] = time_users(
        lambda b: generation.generate(**b, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False),
        prompts,
        device,
    )
    result["ranking_vs_generation_users_per_s"] = (
        result["ranking head, whole catalog"]["users_per_s"] / result["generation"]["users_per_s"]
    )
    result["two_gpu"] = "skipped: only one GPU" if torch.cuda.device_count() < 2 else "not run by this script"
    print_table(result)
    if args.output_json:
        with open(args.output_json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return result


def print_table(result: dict) -> None:
    peak = result["peak_flop_per_s"]
    print(
        f"GPU check on {result['device']} ({result['gpus']} GPU), torch {result['torch']}, {result['lm']}, "
        f"bf16, SDPA; bf16 matmul peak measured now: {peak / 1e12:.1f} TFLOP/s"
    )
    print(f"| {'what':<28} | {'samples/s or users/s':>20} | {'TFLOP/s':>8} | {'of peak':>7} | {'peak GiB':>8} |")
    print(f"|{'-' * 30}|{'-' * 22}|{'-' * 10}|{'-' * 9}|{'-' * 10}|")
    for name in ("ranking-head training", "stage-2 training", "ranking head, whole catalog", "generation"):
        figures = result[name]
        rate = figures.get("samples_per_s", figures.get("users_per_s"))
        flops = figures.get("flop_per_s")
        memory = figures.get("peak_memory_gib")
        print(
            f"| {name:<28} | {rate:>20.1f} | {'' if flops is None else f'{flops / 1e12:.1f}':>8} | "
            f"{'' if flops is None else f'{100 * flops / peak:.1f}%':>7} | "
            f"{'' if memory is None else f'{memory:.2f}':>8} |"
        )
    print(
        f"ranking head vs generation, users/s: {result['ranking_vs_generation_users_per_s']:.1f}x; "
        f"2 GPUs: {result['two_gpu']}"
    )


if __name__ == "__main__":
    main()
