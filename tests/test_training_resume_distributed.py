"""Stage 2 resumed after an interruption ends exactly where an uninterrupted run does; a finished run is skipped;
and a 2-process CPU (gloo) run matches a single process accumulating the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from allmrec_hf.training.runs import RESULTS_FILE
from allmrec_hf.training.trainers import TRAINABLE_WEIGHTS_NAME
from training_helpers import COMMON_ARGS, REPO, run_example

# 8 training users in batches of 2: 4 steps an epoch, so 6 steps cross an epoch boundary. The default
# (length-grouped) sampling, a checkpoint every 2 steps.
RESUME_ARGS = ["--num_candidates", "3", "--prompt_history_length", "5", "--max_train_samples", "8"]
RESUME_ARGS += ["--per_device_train_batch_size", "2", "--learning_rate", "3e-2", "--max_steps", "6"]
RESUME_ARGS += ["--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1"]


class Interrupted(Exception):
    pass


class InterruptAt(TrainerCallback):
    """Stops the run (as a crash would) at the end of optimizer step `step`, before it is logged or saved."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise Interrupted(f"interrupted at step {self.step}")


def projector_weights(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def stage2_command(stage1_run, tiny_dataset, lm_dir):
    def command(output_dir) -> list[str]:
        return ["--dataset_dir", tiny_dataset, "--stage1_model_path", stage1_run.output_dir, "--llm", lm_dir()] + [
            "--output_dir",
            str(output_dir),
            *RESUME_ARGS,
        ]

    return command


@pytest.fixture(scope="module")
def uninterrupted(stage2_command, training_root):
    return run_example("train_stage2", stage2_command(training_root / "stage2_uninterrupted"))


@pytest.mark.parametrize(("stop_at", "checkpoint"), [(3, 2), (5, 4)], ids=["mid_epoch", "epoch_boundary"])
def test_resume_matches_an_uninterrupted_run(stop_at, checkpoint, stage2_command, uninterrupted, tmp_path):
    output = tmp_path / "run"
    with pytest.raises(Interrupted):
        run_example("train_stage2", stage2_command(output), callbacks=[InterruptAt(stop_at)])
    assert sorted(os.listdir(output)) == [f"checkpoint-{step}" for step in sorted({checkpoint - 2, checkpoint} - {0})]
    saved = output / f"checkpoint-{checkpoint}"
    # The checkpoint holds the projectors only (besides the optimizer, scheduler, RNG and trainer state).
    assert set(load_file(saved / TRAINABLE_WEIGHTS_NAME)) == set(projector_weights(uninterrupted.trainer.model))
    assert not (saved / "model.safetensors").exists()
    assert {"optimizer.pt", "scheduler.pt", "trainer_state.json"} <= set(os.listdir(saved))

    resumed = run_example("train_stage2", stage2_command(output))  # the same command again
    assert resumed.trainer.state.global_step == 6
    expected_losses = uninterrupted.losses()
    losses = resumed.losses()
    assert sorted(losses) == list(range(1, 7))
    after = [step for step in losses if step > checkpoint]
    assert [losses[step] for step in after] == [expected_losses[step] for step in after]
    got, expected = projector_weights(resumed.trainer.model), projector_weights(uninterrupted.trainer.model)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    saved_model = load_file(output / "model.safetensors")
    assert all(torch.equal(saved_model[name], expected[name]) for name in expected)

    # Once finished, the same command again is skipped: nothing is trained or rewritten.
    results_file = output / RESULTS_FILE
    before = (results_file.read_bytes(), results_file.stat().st_mtime_ns)
    again = run_example("train_stage2", stage2_command(output))
    assert again.trainer is None
    assert again.results == json.loads(before[0])
    assert (results_file.read_bytes(), results_file.stat().st_mtime_ns) == before


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_cpu_processes_match_one_with_gradient_accumulation(stage2_command, tmp_path):
    """DDP over 2 gloo processes with 2 rows each per step == 1 process with 2 rows x 2 accumulation steps: the
    same seeded data order (accelerate's seedable sampler, batches dealt to the processes in turn), the same
    candidate draws (seeded per example) and the same loss average."""
    distributed, single = tmp_path / "ddp", tmp_path / "single"
    args = stage2_command(distributed)
    args[args.index("--max_steps") + 1] = "4"
    args[args.index("--save_steps") + 1] = "4"
    args += ["--train_sampling_strategy", "random", *COMMON_ARGS]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
    ]
    command += ["examples/train_stage2.py", *args, "--ddp_backend", "gloo"]
    process = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]

    single_args = [str(single) if a == str(distributed) else a for a in args[: -len(COMMON_ARGS)]]
    run = run_example("train_stage2", single_args + ["--gradient_accumulation_steps", "2"])
    assert run.trainer.state.global_step == 4

    got, expected = load_file(distributed / "model.safetensors"), load_file(single / "model.safetensors")
    names = [name for name in expected if "projector" in name]
    assert len(names) == 12
    max_diff = max(float((got[name] - expected[name]).abs().max()) for name in names)
    print(f"max abs difference of the projector weights, 2 processes vs 1: {max_diff:.3g}")
    assert all(torch.allclose(got[name], expected[name], rtol=1e-5, atol=1e-6) for name in names), max_diff
    assert not all(torch.equal(expected[name], run.initial[name]) for name in names)  # it did train

    # The logged losses (the mean over both processes) are the single process's.
    state = json.loads((distributed / "checkpoint-4" / "trainer_state.json").read_text())
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    assert losses == pytest.approx(run.losses(), rel=1e-5)
    assert set(load_file(distributed / "checkpoint-4" / TRAINABLE_WEIGHTS_NAME)) == set(names)
