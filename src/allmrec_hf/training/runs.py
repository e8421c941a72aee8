"""What every training script does around its Trainer: parse arguments, set up logging, pick the training rows,
find the checkpoint to resume from, skip a stage that already finished, build its model whole and save it under
FSDP / DeepSpeed, write `all_results.json`, and end a distributed run cleanly."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np
import pyarrow.compute as pc
import transformers
from transformers import HfArgumentParser
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import sort_checkpoints

from ..data import PreparedDataset
from .trainers import write_json

logger = logging.getLogger(__name__)

RESULTS_FILE = "all_results.json"


@dataclass
class OutputArguments:
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start over in an output_dir that holds a finished run or checkpoints (default: resume)."},
    )


TRACEBACK_ENV_VAR = "ALLMREC_HF_TRACEBACK"


def user_error_types() -> tuple[type[BaseException], ...]:
    """Exceptions that report bad input (a file, a field, an id, a folder) rather than a bug: the scripts print
    their message as one line instead of a traceback."""
    from ..data.log import DataFormatError, DataPreparationError
    from ..modeling_allmrec import CheckpointError
    from ..offline_models import OfflineModelUnavailableError
    from .builders import CheckpointMismatchError

    return (
        CheckpointError,
        CheckpointMismatchError,
        DataFormatError,
        DataPreparationError,
        OfflineModelUnavailableError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        UnicodeDecodeError,
    )


def run_script(main, argv: list[str] | None = None):
    """Run a script's `main` as a command: a user error (`user_error_types`, or `SystemExit` with a message) is
    one line on stderr, `<script>: error: <message>`, and exit status 2, like argparse's own; anything else is a
    bug and keeps its traceback. `ALLMREC_HF_TRACEBACK=1` shows the traceback of user errors too."""
    prog = os.path.basename(sys.argv[0]) or "allmrec_hf"
    try:
        return main(argv) if argv is not None else main()
    except SystemExit as err:
        if isinstance(err.code, str):
            print(f"{prog}: error: {err.code}", file=sys.stderr)
            raise SystemExit(2) from None
        raise
    except user_error_types() as err:
        if os.environ.get(TRACEBACK_ENV_VAR, "").strip().upper() in {"1", "TRUE", "YES", "ON"}:
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2) from None


def parse_arguments(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """Parse the command line (or `argv`), or a single JSON file holding every argument."""
    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def setup_logging(training_args) -> None:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    level = training_args.get_process_log_level()
    logging.getLogger("allmrec_hf").setLevel(level)
    transformers.utils.logging.set_verbosity(level)
    datasets.utils.logging.set_verbosity(max(level, logging.WARNING))
    datasets.disable_progress_bars()


def finished_results(output_dir: str, overwrite: bool) -> dict | None:
    """The results of a run that already finished in `output_dir` (so the stage is skipped), else None."""
    path = os.path.join(output_dir, RESULTS_FILE)
    if overwrite or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as fh:
        results = json.load(fh)
    logger.info(
        "%s already holds a finished run (%s): skipping; pass --overwrite_output_dir to retrain.",
        output_dir,
        RESULTS_FILE,
    )
    return results


def checkpoint_is_complete(path: str) -> bool:
    """Whether a `checkpoint-N` folder was written to the end: the Trainer writes `trainer_state.json` after the
    weights, optimizer, scheduler and RNG state, so a readable one means nothing before it was cut short."""
    try:
        with open(os.path.join(path, TRAINER_STATE_NAME), encoding="utf-8") as fh:
            json.load(fh)
    except (OSError, ValueError):
        return False
    return True


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that was written to the end; newer ones a kill cut short are
    skipped with a warning naming them (they are left in place, and the resumed run writes over them)."""
    for path in reversed(sort_checkpoints(output_dir)):  # transformers' own order: by step, newest last
        if checkpoint_is_complete(path):
            return path
        logger.warning(
            "Skipping %s: it is incomplete (no readable %s; the run was stopped while saving it).",
            path,
            TRAINER_STATE_NAME,
        )
    return None


def checkpoint_to_resume(training_args, overwrite: bool) -> str | None:
    """`--resume_from_checkpoint` if given, else the newest complete `checkpoint-*` in output_dir (an interrupted
    run; incomplete ones are skipped)."""
    if training_args.resume_from_checkpoint:
        path = training_args.resume_from_checkpoint
        if os.path.isdir(path) and not checkpoint_is_complete(path):
            raise ValueError(
                f"--resume_from_checkpoint {path} is incomplete (no readable {TRAINER_STATE_NAME}): the run was "
                "stopped while saving it; pass an earlier checkpoint."
            )
        return path
    if overwrite or not os.path.isdir(training_args.output_dir):
        return None
    last = last_complete_checkpoint(training_args.output_dir)
    if last is not None:
        logger.info("Resuming the interrupted run from %s.", last)
    return last


def training_rows(data: PreparedDataset, data_args, require_history: bool = False) -> datasets.Dataset:
    """The training split, restricted to few-shot users or the first N users when asked. With
    `require_history`, users with a single training interaction (nothing to predict from) are left out, counted
    and logged."""
    rows = data.few_shot(data_args.few_shot_users) if data_args.few_shot_users else data.splits["train"]
    if data_args.max_train_samples is not None:
        rows = rows.select(range(min(data_args.max_train_samples, len(rows))))
    if require_history:
        lengths = pc.list_value_length(rows.with_format("arrow")["history"]).to_numpy(zero_copy_only=False)
        keep = np.flatnonzero(lengths > 0)
        if keep.size < len(rows):
            logger.info(
                "%d of %d training users have a single training interaction and nothing to learn from; left out.",
                len(rows) - keep.size,
                len(rows),
            )
            rows = rows.select(keep)
    if len(rows) == 0:
        raise ValueError(f"No training rows left in {data.name!r} (after few-shot / max_train_samples selection).")
    return rows


def cut_point_rows(rows: datasets.Dataset, cut_points: int, stride: int) -> datasets.Dataset:
    """Several (history, next item) rows per training user for the ranking head: the user's own row, then up to
    `cut_points - 1` earlier cuts `stride` items apart (a `cut` column numbers them, 0 = the last). Sequences too
    short for a cut give fewer rows (never an empty history).

    >>> rows = datasets.Dataset.from_dict({"user": [1], "history": [[1, 2, 3, 4, 5]], "target": [6]})
    >>> [(r["history"], r["target"], r["cut"]) for r in cut_point_rows(rows, 3, 2)]
    [([1, 2, 3, 4, 5], 6, 0), ([1, 2, 3], 4, 1), ([1], 2, 2)]
    """
    if cut_points < 1 or stride < 1:
        raise ValueError(f"cut_points and stride must be >= 1, got {cut_points} and {stride}.")
    if cut_points == 1:
        return rows.map(lambda batch: {"cut": [0] * len(batch["user"])}, batched=True)

    def expand(batch):
        out = {"user": [], "history": [], "target": [], "cut": []}
        for user, history, target in zip(batch["user"], batch["history"], batch["target"], strict=True):
            sequence = list(history) + [int(target)]
            for cut in range(cut_points):
                end = len(sequence) - cut * stride
                if end < 2:
                    break
                out["user"].append(user)
                out["history"].append(sequence[: end - 1])
                out["target"].append(sequence[end - 1])
                out["cut"].append(cut)
        return out

    return rows.map(expand, batched=True, remove_columns=rows.column_names, desc="cut points")


def evaluation_rows(data: PreparedDataset, data_args, split: str = "validation") -> datasets.Dataset:
    rows = data.splits[split]
    if data_args.max_eval_samples is not None:
        rows = rows.select(range(min(data_args.max_eval_samples, len(rows))))
    return rows


def write_results(output_dir: str, results: dict) -> None:
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, RESULTS_FILE), results)


def full_state_dict(trainer: transformers.Trainer) -> dict | None:
    """The trained model's full state dict when the Trainer sharded its parameters (FSDP, DeepSpeed ZeRO-3): a
    collective call that every process must make (the main process gets the gathered tensors). None when the
    parameters are not sharded (single process, DDP): `save_pretrained` then reads the model itself.

    A script that saves with `model.save_pretrained(...)` from the main process alone would otherwise write each
    sharded parameter's local shard (FSDP2's DTensors cannot be serialised at all)."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return trainer.accelerator.get_state_dict(trainer.model)
    if getattr(trainer, "is_deepspeed_enabled", False):
        # ZeRO-3 gathers 16-bit weights here only with `zero3_save_16bit_model: true` (our DeepSpeed config sets it).
        return trainer.accelerator.get_state_dict(trainer.deepspeed)
    return None


def save_trained_model(trainer: transformers.Trainer, model: transformers.PreTrainedModel, output_dir: str) -> bool:
    """`model.save_pretrained(output_dir)` at the end of a training script, from the main process, with the full
    state dict gathered first under FSDP / DeepSpeed (`full_state_dict`; every process must call this). Returns
    whether this process is the one that wrote."""
    state_dict = full_state_dict(trainer)
    if not trainer.is_world_process_zero():
        return False
    model.save_pretrained(output_dir, **({"state_dict": state_dict} if state_dict is not None else {}))
    return True


@contextlib.contextmanager
def models_built_whole(training_args: transformers.TrainingArguments):
    """Build the stage's model inside this context: under DeepSpeed ZeRO-3, transformers would otherwise create
    every model (`from_pretrained`, `from_config`) already partitioned by `deepspeed.zero.Init`, and the builders,
    which assemble a stage's model from checkpoints by copying weights, would copy empty shards. The model is built
    whole (on CPU first) and ZeRO-3 partitions it when training starts (`deepspeed.initialize`). Nothing changes
    without ZeRO-3.

    `zero3_init_flag: true` in an Accelerate DeepSpeed config asks for the partitioned construction explicitly; that
    is refused here, with the fix, before anything is loaded."""
    from transformers.integrations.deepspeed import (
        is_deepspeed_zero3_enabled,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    if not is_deepspeed_zero3_enabled():
        yield
        return
    plugin = getattr(training_args, "deepspeed_plugin", None)
    if plugin is not None and plugin.zero3_init_flag:
        raise ValueError(
            "DeepSpeed ZeRO-3 with zero3_init_flag: true is not supported: each stage assembles its model from "
            "checkpoints by copying weights, which deepspeed.zero.Init would create as empty shards. Set "
            "zero3_init_flag: false in the Accelerate config (examples/accelerate_configs/deepspeed_zero3.yaml "
            "does); ZeRO-3 still partitions the model when training starts."
        )
    holder = getattr(plugin, "dschf", None) or getattr(training_args, "hf_deepspeed_config", None)
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if holder is not None:
            set_hf_deepspeed_config(holder)


def end_distributed_run() -> None:
    """The last call of a training script run by `accelerate launch` or `torchrun`: wait for every process, then
    tear the process group down (`torch.distributed.destroy_process_group`, which PyTorch asks of every distributed
    program) rather than leave it to the interpreter's exit, where one process of a 2-process DeepSpeed ZeRO-3 run
    on CPU once aborted after its work was saved ("terminate called without an active exception", exit code -6,
    so the launcher reported the run failed). Nothing happens outside a distributed run."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
