"""Stage 2 resumed after an interruption ends exactly where an uninterrupted run does; a finished run is skipped;
and a 2-process CPU (gloo) run matches a single process accumulating the same global batch."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from allmrec_hf.training.runs import RESULTS_FILE
from allmrec_hf.training.trainers import TRAINABLE_WEIGHTS_NAME
from training_helpers import COMMON_ARGS, REPO, InterruptAt, Interrupted, run_example, run_two_processes

# 8 training users in batches of 2: 4 steps an epoch, so 6 steps cross an epoch boundary. The default
# (length-grouped) sampling, a checkpoint every 2 steps.
RESUME_ARGS = ["--num_candidates", "3", "--prompt_history_length", "5", "--max_train_samples", "8"]
RESUME_ARGS += ["--per_device_train_batch_size", "2", "--learning_rate", "3e-2", "--max_steps", "6"]
RESUME_ARGS += ["--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "1"]


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
    # Fixed: train_loss averaged the resumed steps only; it is the whole run's, as uninterrupted.
    results = json.loads((output / RESULTS_FILE).read_text())
    assert results["resumed_from_step"] == checkpoint
    assert results["train_loss"] == pytest.approx(uninterrupted.results["train_loss"], rel=1e-6)

    # Once finished, the same command again is skipped: nothing is trained or rewritten.
    results_file = output / RESULTS_FILE
    before = (results_file.read_bytes(), results_file.stat().st_mtime_ns)
    again = run_example("train_stage2", stage2_command(output))
    assert again.trainer is None
    assert again.results == json.loads(before[0])
    assert (results_file.read_bytes(), results_file.stat().st_mtime_ns) == before


def test_resume_from_a_checkpoint_without_the_loss_record_names_its_train_loss(stage2_command, tmp_path, caplog):
    """A checkpoint written before the run's loss was recorded: train_loss covers the resumed steps, and says so."""
    output = tmp_path / "run"
    with pytest.raises(Interrupted):
        run_example("train_stage2", stage2_command(output), callbacks=[InterruptAt(5)])
    state_file = output / "checkpoint-4" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["stateful_callbacks"]["ALLMRecRunLoss"]
    state_file.write_text(json.dumps(state))
    with caplog.at_level("WARNING", logger="allmrec_hf"):
        resumed = run_example("train_stage2", stage2_command(output))
    assert resumed.results["resumed_from_step"] == 4 and resumed.results["train_loss_from_step"] == 5
    assert any("train_loss averages steps 5-6 only" in r.getMessage() for r in caplog.records)


def test_resume_skips_a_checkpoint_cut_short_while_saving(stage2_command, uninterrupted, tmp_path, caplog):
    """A kill while the Trainer writes `checkpoint-N` leaves it without `trainer_state.json` (and with a 0-byte
    `rng_state.pth`): the same command again resumes from the newest complete checkpoint, says it skipped the
    broken one, and ends where an uninterrupted run does."""
    import shutil

    output = tmp_path / "run"
    with pytest.raises(Interrupted):
        run_example("train_stage2", stage2_command(output), callbacks=[InterruptAt(5)])
    broken = output / "checkpoint-4"
    (broken / "trainer_state.json").unlink()
    (broken / "rng_state.pth").write_bytes(b"")
    shutil.copytree(broken, output / "checkpoint-5")  # a later one, just as broken

    with caplog.at_level("WARNING", logger="allmrec_hf"):
        resumed = run_example("train_stage2", stage2_command(output))
    skipped = [r.getMessage() for r in caplog.records if "incomplete" in r.getMessage()]
    assert len(skipped) == 2 and "checkpoint-5" in skipped[0] and "checkpoint-4" in skipped[1]
    assert resumed.trainer.state.global_step == 6
    got, expected = projector_weights(resumed.trainer.model), projector_weights(uninterrupted.trainer.model)
    assert all(torch.equal(got[name], expected[name]) for name in expected)


def test_resume_from_an_incomplete_checkpoint_given_by_name_is_refused(tmp_path):
    from types import SimpleNamespace

    from allmrec_hf.training.runs import checkpoint_to_resume

    broken = tmp_path / "checkpoint-4"
    broken.mkdir()
    (broken / "trainer_state.json").write_text('{"global_step": 4,')  # cut short mid-write
    args = SimpleNamespace(resume_from_checkpoint=str(broken), output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="checkpoint-4 is incomplete"):
        checkpoint_to_resume(args, overwrite=False)
    args.resume_from_checkpoint = None
    assert checkpoint_to_resume(args, overwrite=False) is None  # nothing complete to resume from: start over


def two_step_args(stage2_command, output_dir) -> list[str]:
    """4 optimizer steps of 2 rows per process, a checkpoint at the end, random (seeded) sampling."""
    args = stage2_command(output_dir)
    args[args.index("--max_steps") + 1] = "4"
    args[args.index("--save_steps") + 1] = "4"
    return args + ["--train_sampling_strategy", "random"]


@pytest.fixture(scope="module")
def accumulated_single_run(stage2_command, training_root):
    """The reference for the 2-process runs: 1 process with 2 rows x 2 accumulation steps."""
    output = training_root / "stage2_single_accumulated"
    run = run_example("train_stage2", two_step_args(stage2_command, output) + ["--gradient_accumulation_steps", "2"])
    assert run.trainer.state.global_step == 4
    return run, output


def test_end_distributed_run_tears_the_process_group_down(tmp_path):
    """The training scripts' last call: outside a distributed run it does nothing; inside one it destroys the
    process group (here a one-process gloo group) instead of leaving that to the interpreter's exit."""
    import torch.distributed as dist

    from allmrec_hf.training.runs import end_distributed_run

    end_distributed_run()  # no process group: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert dist.is_initialized()
        end_distributed_run()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def assert_projectors_match(got: dict, run, rtol=1e-5, atol=1e-6) -> None:
    expected = {name: value for name, value in run.trainer.model.state_dict().items() if "projector" in name}
    assert len(expected) == 12
    max_diff = max(float((got[name].float() - expected[name]).abs().max()) for name in expected)
    print(f"max abs difference of the projector weights, 2 processes vs 1: {max_diff:.3g}")
    assert all(torch.allclose(got[name].float(), expected[name], rtol=rtol, atol=atol) for name in expected), max_diff
    assert not all(torch.equal(expected[name], run.initial[name]) for name in expected)  # it did train


def test_two_cpu_processes_match_one_with_gradient_accumulation(stage2_command, accumulated_single_run, tmp_path):
    """DDP over 2 gloo processes with 2 rows each per step == 1 process with 2 rows x 2 accumulation steps: the
    same seeded data order (accelerate's seedable sampler, batches dealt to the processes in turn), the same
    candidate draws (seeded per example) and the same loss average."""
    distributed = tmp_path / "ddp"
    run_two_processes(two_step_args(stage2_command, distributed))
    run, _ = accumulated_single_run
    got = load_file(distributed / "model.safetensors")
    assert_projectors_match(got, run)

    # The logged losses (the mean over both processes) are the single process's.
    state = json.loads((distributed / "checkpoint-4" / "trainer_state.json").read_text())
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    assert losses == pytest.approx(run.losses(), rel=1e-5)
    names = [name for name in got if "projector" in name]
    assert set(load_file(distributed / "checkpoint-4" / TRAINABLE_WEIGHTS_NAME)) == set(names)


def accelerate_launch_environment(config_file: str) -> dict[str, str]:
    """The Accelerate and FSDP settings `accelerate launch --config_file config_file` hands each process, from
    Accelerate's own launcher code."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", config_file, "examples/train_stage2.py"])
    args = _validate_launch_command(args)[0]
    return {k: v for k, v in prepare_multi_gpu_env(args).items() if k.startswith(("ACCELERATE_", "FSDP_"))}


@pytest.mark.parametrize(("mixed_precision", "lora"), [("no", False), ("bf16", False), ("no", True)])
def test_fsdp2_config_trains_and_saves_a_loadable_recommender(
    mixed_precision, lora, stage2_command, accumulated_single_run, tmp_path
):
    """`examples/accelerate_configs/fsdp.yaml` (FSDP2: decoder layers sharded, the weights loaded on rank 0 and
    broadcast, the full state dict gathered to save) over 2 CPU processes, through Accelerate's and the Trainer's own
    FSDP code (`tests/accelerate_fsdp_on_cpu.py` only stops Accelerate from falling back to DDP on CPU).

    In float32 it trains exactly as 1 process accumulating the same global batch. It writes a recommender that
    `from_pretrained` and `trust_remote_code` load: full (gathered) weights, not each process's shard, and the
    model's own code and class in `auto_map` (not the class FSDP2 generates in torch's modules). With a LoRA on the
    LM, its adapter is saved whole too."""
    env = accelerate_launch_environment(str(REPO / "examples" / "accelerate_configs" / "fsdp.yaml"))
    assert env["ACCELERATE_USE_FSDP"] == "true" and env["FSDP_VERSION"] == "2"
    assert env["ACCELERATE_MIXED_PRECISION"] == "bf16"  # what the config says; the float32 run overrides it
    env["ACCELERATE_MIXED_PRECISION"] = mixed_precision
    output = tmp_path / "fsdp"
    args = two_step_args(stage2_command, output) + (["--lora_r", "4"] if lora else [])
    run_two_processes(args, [str(REPO / "tests" / "accelerate_fsdp_on_cpu.py")], env)

    files = set(os.listdir(output))
    assert {"modeling_allmrec.py", "modeling_sasrec.py", "candidate_tree.py"} <= files
    assert not any(name.startswith("_fsdp") for name in files), sorted(files)
    config = json.loads((output / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_allmrec.ALLMRecForConditionalGeneration"
    assert (output / "checkpoint-4" / "trainer_state.json").is_file()

    run, _ = accumulated_single_run
    from allmrec_hf import ALLMRecForConditionalGeneration

    loaded = ALLMRecForConditionalGeneration.from_pretrained(output)
    got = {name: value for name, value in loaded.state_dict().items() if "projector" in name}
    if lora:  # the adapter as trained: whole matrices (not one process's rows), lora_B moved from its zeros
        adapter = load_file(output / "lm_adapter" / "adapter_model.safetensors")
        modules = dict(loaded.language_model.named_parameters())
        assert len(adapter) == 8  # q_proj and v_proj, A and B, in each of the 2 layers
        for key, value in adapter.items():
            name = key.removeprefix("base_model.model.").replace(".weight", ".default.weight")
            assert value.shape == modules[name].shape, key
            assert torch.equal(value, modules[name].detach()), key
        assert all(bool(value.abs().sum() > 0) for key, value in adapter.items() if "lora_B" in key)
    elif mixed_precision == "no":
        assert_projectors_match(got, run)
    else:  # bf16 compute: the losses stay close to the float32 reference's; Adam at lr 3e-2 moves the weights apart
        state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
        losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
        assert losses == pytest.approx(run.losses(), rel=0.03)
        assert not all(torch.equal(got[name], run.initial[name]) for name in got)  # it did train
    # The frozen parts are what stage 1 and the LM gave, whole.
    reference = run.trainer.model.state_dict()
    frozen = [name for name in reference if "projector" not in name and not name.startswith("language_model.")]
    assert frozen and all(torch.equal(loaded.state_dict()[name], reference[name]) for name in frozen)


# Accelerate runs DeepSpeed only without `use_cpu` (on a machine without GPUs it then runs on the CPU anyway).
_USE_CPU = COMMON_ARGS.index("--use_cpu")
DEEPSPEED_COMMON_ARGS = COMMON_ARGS[:_USE_CPU] + COMMON_ARGS[_USE_CPU + 2 :]


def accelerate_deepspeed_environment(config_file: str) -> dict[str, str]:
    """The Accelerate and DeepSpeed settings `accelerate launch --config_file config_file` hands each process."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    args, defaults, _ = _validate_launch_command(
        launch_command_parser().parse_args(["--config_file", config_file, "x.py"])
    )
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    return {k: v for k, v in prepare_deepspeed_cmd_env(args)[1].items() if k.startswith("ACCELERATE_")}


def test_deepspeed_zero3_config_matches_one_process_and_saves_a_loadable_recommender(
    stage2_command, accumulated_single_run, tmp_path
):
    """`examples/accelerate_configs/deepspeed_zero3.yaml` over 2 CPU processes (DeepSpeed's CPU accelerator, gloo)
    in float32 (bf16 under DeepSpeed needs a GPU: transformers refuses `--bf16` on CPU without `--use_cpu`, which
    Accelerate refuses with DeepSpeed): the stage's model is built whole (`models_built_whole`: under ZeRO-3,
    transformers would create every part already partitioned and the builders would copy empty shards), ZeRO-3
    partitions it, it trains as 1 process accumulating the same global batch, and the main process saves the
    gathered weights (a plain `save_pretrained` there would write empty shards)."""
    pytest.importorskip("deepspeed")
    env = accelerate_deepspeed_environment(str(REPO / "examples" / "accelerate_configs" / "deepspeed_zero3.yaml"))
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == "3"
    assert env["ACCELERATE_DEEPSPEED_ZERO3_SAVE_16BIT_MODEL"] == "true"  # the final save needs it
    env |= {"ACCELERATE_MIXED_PRECISION": "no", "DS_ACCELERATOR": "cpu"}
    output = tmp_path / "zero3"
    run_two_processes(two_step_args(stage2_command, output), env=env, common_args=DEEPSPEED_COMMON_ARGS)

    run, _ = accumulated_single_run
    state = json.loads((output / "checkpoint-4" / "trainer_state.json").read_text())
    losses = {entry["step"]: entry["loss"] for entry in state["log_history"] if "loss" in entry}
    assert losses == pytest.approx(run.losses(), rel=1e-5)
    from allmrec_hf import ALLMRecForConditionalGeneration

    loaded = ALLMRecForConditionalGeneration.from_pretrained(output)
    got = {name: value for name, value in loaded.state_dict().items() if "projector" in name}
    assert_projectors_match(got, run, rtol=1e-4, atol=1e-5)  # DeepSpeed sums the gradients in another order
    reference = run.trainer.model.state_dict()
    frozen = [name for name in reference if "projector" not in name and not name.startswith("language_model.")]
    assert frozen and all(torch.equal(loaded.state_dict()[name], reference[name]) for name in frozen)


@pytest.mark.parametrize("zero3_init", [False, True])
def test_models_are_built_whole_under_zero3_and_zero3_init_is_refused(zero3_init, monkeypatch, tmp_path):
    """Under ZeRO-3 transformers creates models already partitioned; the scripts build theirs whole inside
    `models_built_whole` (and ZeRO-3 stays on outside it), and refuse `zero3_init_flag: true` before loading."""
    pytest.importorskip("deepspeed")
    from transformers import AutoModel, BertConfig, TrainingArguments
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled, unset_hf_deepspeed_config

    from allmrec_hf.training.runs import models_built_whole

    for name, value in {"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO3_INIT", str(zero3_init).lower())
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    try:
        args = TrainingArguments(output_dir=str(tmp_path), report_to="none")
        assert is_deepspeed_zero3_enabled()
        if zero3_init:
            with pytest.raises(ValueError, match="zero3_init_flag: true is not supported"):
                with models_built_whole(args):
                    pass
        else:
            with models_built_whole(args):
                assert not is_deepspeed_zero3_enabled()
                config = BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
                tiny = AutoModel.from_config(config)  # what zero.Init would partition
                assert tiny.embeddings.word_embeddings.weight.shape == (20, 8)  # whole, not a ZeRO-3 shard
            assert is_deepspeed_zero3_enabled()  # back on for the Trainer
    finally:
        unset_hf_deepspeed_config()


def test_deepspeed_zero3_config_runs_stage1(cf_run, stage1_run, tiny_dataset, text_encoder_dir, tmp_path):
    """Stage 1 under `deepspeed_zero3.yaml` over 2 CPU processes: the CF model and the sentence encoder load whole
    (not as the empty shards ZeRO-3 would create), the aligner trains, and the saved aligner holds whole weights: the
    frozen CF model exactly as pretrained."""
    pytest.importorskip("deepspeed")
    from allmrec_hf import ALLMRecAlignerModel

    env = accelerate_deepspeed_environment(str(REPO / "examples" / "accelerate_configs" / "deepspeed_zero3.yaml"))
    env |= {"ACCELERATE_MIXED_PRECISION": "no", "DS_ACCELERATOR": "cpu"}
    output = tmp_path / "stage1_zero3"
    args = ["--dataset_dir", tiny_dataset, "--output_dir", str(output), "--cf_model_path", cf_run.output_dir]
    args += ["--text_encoder", text_encoder_dir, "--latent_size", "16", "--item_text_max_length", "16"]
    args += [
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--learning_rate",
        "1e-3",
        "--save_strategy",
        "no",
    ]
    run_two_processes(args, env=env, common_args=DEEPSPEED_COMMON_ARGS, script="examples/train_stage1.py")

    saved = ALLMRecAlignerModel.from_pretrained(output).state_dict()
    initial = stage1_run.initial  # the aligner as built before its own stage-1 training (same seed and encoder)
    assert all(saved[name].shape == value.shape for name, value in initial.items())
    cf = {name: value for name, value in initial.items() if name.startswith("cf_model.")}
    assert cf and all(torch.equal(saved[name], value) for name, value in cf.items())
    # The latents' diversity, measured by the main process alone after saving (a ZeRO-3-partitioned reload there
    # hung the run), is the saved aligner's.
    results = json.loads((output / RESULTS_FILE).read_text())
    diversity = ALLMRecAlignerModel.from_pretrained(output).latent_diversity()
    assert results["latent_mean_pairwise_cosine"] == pytest.approx(diversity["mean_pairwise_cosine"])
    trained = [name for name in initial if name.startswith(("item_encoder", "text_latent_encoder"))]
    assert trained and not all(torch.equal(saved[name], initial[name]) for name in trained)


@pytest.mark.parametrize("config", ["fsdp", "deepspeed_zero3"])
def test_sharded_run_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(config, stage2_command, tmp_path):
    """Under FSDP2 and ZeRO-3 the Trainer writes its own sharded-state checkpoints; a run stopped after step 2 and
    started again with the same command resumes from checkpoint-2 (model and optimizer state) and ends with the
    uninterrupted run's weights (constant learning rate, so stopping early does not change the schedule)."""
    yaml = str(REPO / "examples" / "accelerate_configs" / f"{config}.yaml")
    extra = ["--lr_scheduler_type", "constant", "--save_steps", "2"]
    if config == "fsdp":
        env, launcher, common = (
            accelerate_launch_environment(yaml),
            [str(REPO / "tests" / "accelerate_fsdp_on_cpu.py")],
            COMMON_ARGS,
        )
    else:
        pytest.importorskip("deepspeed")
        env, launcher = accelerate_deepspeed_environment(yaml) | {"DS_ACCELERATOR": "cpu"}, []
        common = DEEPSPEED_COMMON_ARGS
    env["ACCELERATE_MIXED_PRECISION"] = "no"
    uninterrupted, stopped = tmp_path / "uninterrupted", tmp_path / "stopped"
    run_two_processes(two_step_args(stage2_command, uninterrupted) + extra, launcher, env, common)

    args = two_step_args(stage2_command, stopped) + extra
    args[args.index("--max_steps") + 1] = "2"
    run_two_processes(args, launcher, env, common)
    assert (stopped / "checkpoint-2" / "trainer_state.json").is_file()
    os.remove(stopped / RESULTS_FILE)  # as if the run had been killed after its checkpoint
    args[args.index("--max_steps") + 1] = "4"
    resumed = run_two_processes(args, launcher, env, common)
    assert resumed.stdout.count("{'loss':") == 2  # steps 3 and 4 only: it did resume

    expected, got = load_file(uninterrupted / "model.safetensors"), load_file(stopped / "model.safetensors")
    names = [name for name in expected if "projector" in name]
    assert len(names) == 12 and all(torch.equal(got[name], expected[name]) for name in names)
