"""Helpers for the training tests: a tiny synthetic prepared dataset, tiny text-encoder and LM folders, and
running the example scripts in-process (`main()` with a patched `sys.argv`) while keeping hold of their Trainer.

The session-scoped fixtures built from these live at the end of `tests/conftest.py`."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, BertModel, TrainerCallback

from allmrec_hf.data import InteractionLog, prepare_dataset

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

NUM_ITEMS = 40
NUM_USERS = 16
TITLE_WORDS = "red blue green dark night river stone city love war star road king moon time game house".split()

# Shared by every script run: tiny models, no progress bars, no reporting, CPU.
COMMON_ARGS = ["--disable_tqdm", "true", "--report_to", "none", "--use_cpu", "true", "--dataloader_num_workers", "0"]
CF_ARGS = ["--hidden_size", "32", "--max_length", "20", "--num_attention_heads", "2", "--dropout", "0.1"]


def item_titles(n: int = NUM_ITEMS) -> list[str]:
    return [f"{TITLE_WORDS[i % 17].title()} {TITLE_WORDS[(3 * i + 1) % 17]} {1980 + i}" for i in range(n)]


def make_log(num_items: int = NUM_ITEMS, num_users: int = NUM_USERS, id_prefix: str = "i", seed: int = 0):
    """A synthetic log: `num_users` users with 6-12 interactions each over `num_items` titled items (with a
    description on two items out of three). Users follow loose item "chains" so there is something to learn."""
    rng = np.random.default_rng(seed)
    users, items = [], []
    for user in range(num_users):
        length = int(rng.integers(6, 13))
        start = int(rng.integers(0, num_items))
        step = 1 + user % 3
        chosen: list[int] = []
        position = start
        while len(chosen) < length:
            if position % num_items not in chosen:
                chosen.append(position % num_items)
            position += step
        users += [f"u{user}"] * length
        items += [f"{id_prefix}{i}" for i in chosen]
    interactions = pd.DataFrame({"user_id": users, "item_id": items})
    titles = item_titles(num_items)
    metadata = pd.DataFrame(
        {
            "item_id": [f"{id_prefix}{i}" for i in range(num_items)],
            "title": titles,
            "description": [f"a film about {TITLE_WORDS[i % 17]}" if i % 3 else None for i in range(num_items)],
        }
    )
    return InteractionLog.from_frames(interactions, metadata, source="synthetic")


def write_dataset(path: Path, **log_kwargs) -> str:
    data = prepare_dataset(make_log(**log_kwargs), num_negatives=5, seed=0, name="tiny")
    return data.save(path)


def write_text_encoder(path: Path, tokenizer) -> str:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def write_language_model(path: Path, family: str, tokenizer, lm_config) -> str:
    """A tiny random causal LM. Initialised with a larger spread than usual (0.2) so that its output depends on
    its input enough for the projectors to lower the loss visibly within a few steps."""
    torch.manual_seed(0)
    config = lm_config(family, len(tokenizer))
    config.initializer_range = 0.2
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


_MODULES: dict[str, object] = {}


def example_module(name: str):
    """`examples/<name>.py` imported as a module (once)."""
    if name not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"allmrec_example_{name}", EXAMPLES / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses defined in the script look their module up there
        spec.loader.exec_module(module)
        _MODULES[name] = module
    return _MODULES[name]


TRAINER_CLASS = {
    "pretrain_cf": "CFTrainer",
    "train_stage1": "Stage1Trainer",
    "train_stage2": "Stage2Trainer",
    "train_ranking_head": "RankingTrainer",
}


class Interrupted(Exception):
    pass


class InterruptAt(TrainerCallback):
    """Stops the run (as a crash would) at the end of optimizer step `step`, before it is logged or saved."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"interrupted at step {self.step}")


class Run:
    """What one script run left behind: its results, its Trainer (or None) and the model's initial weights."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.results: dict | None = None
        self.trainer = None
        self.initial: dict[str, torch.Tensor] = {}

    @property
    def log_history(self) -> list[dict]:
        return self.trainer.state.log_history

    def losses(self) -> dict[int, float]:
        """The logged training losses by step."""
        return {entry["step"]: entry["loss"] for entry in self.log_history if "loss" in entry}


def run_example(name: str, args: list[str], callbacks: list | None = None) -> Run:
    """Run `examples/<name>.py` through `main()` with `sys.argv` patched, recording its Trainer (and the model's
    weights when the Trainer was built) through a subclass put in the script's namespace."""
    module = example_module(name)
    base = getattr(module, TRAINER_CLASS[name])
    run = Run(args[args.index("--output_dir") + 1])

    class Recording(base):
        def __init__(self, *a, **kw):
            model = kw["model"]
            run.initial = {n: p.detach().clone() for n, p in model.named_parameters()}
            if callbacks:
                kw["callbacks"] = list(kw.get("callbacks") or []) + list(callbacks)
            super().__init__(*a, **kw)
            run.trainer = self

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # also when called from a session fixture (set up before the autouse one)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(module, TRAINER_CLASS[name], Recording)
            mp.setattr(sys, "argv", [f"{name}.py", *args, *COMMON_ARGS])
            run.results = module.main()
    finally:
        torch.set_num_threads(threads)
    return run


def files_in(path: str | os.PathLike) -> dict[str, bytes]:
    """Every file under `path` with its bytes (to check that nothing changed)."""
    out = {}
    for root, _, names in os.walk(path):
        for file_name in names:
            full = os.path.join(root, file_name)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = fh.read()
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_processes(
    args: list[str],
    launcher: list[str] | None = None,
    env: dict | None = None,
    common_args=COMMON_ARGS,
    script: str = "examples/train_stage2.py",
    ddp_backend_arg: bool = True,
) -> subprocess.CompletedProcess:
    """`script args` in 2 CPU processes (torchrun, gloo; `--ddp_backend gloo` is passed to Trainer scripts)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"} | (env or {})
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port())]
    command += [*(launcher or []), script, *args, *common_args, *(["--ddp_backend", "gloo"] if ddp_backend_arg else [])]
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    return process


# ranking-head runs on the tiny data (tests/test_training_ranking.py, tests/test_recommend_batch.py)
RANKING_ARGS = ["--ranking_history_length", "5", "--max_history_length", "20", "--ranking_hidden_size", "16"]
RANKING_ARGS += ["--per_device_train_batch_size", "4", "--learning_rate", "3e-2", "--num_train_epochs", "4"]
RANKING_ARGS += ["--logging_steps", "1", "--bf16", "false", "--early_stopping_patience", "10"]
RANKING_ARGS += ["--cut_points", "1", "--lr_scheduler_type", "constant"]  # 4 steps per epoch, a steady rate


def ranking_command(dataset_dir: str, lm: str, output, source: list[str], *extra: str) -> list[str]:
    return ["--dataset_dir", dataset_dir, "--llm", lm, "--output_dir", str(output), *source, *RANKING_ARGS, *extra]
