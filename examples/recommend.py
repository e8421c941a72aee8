#!/usr/bin/env python
"""Recommend for every user: the top `--k` items of the whole catalog, written as Parquet (or JSONL) shards, from
- a ranking-head checkpoint (`examples/train_ranking_head.py`): one LM forward per user scores every item;
- or the paper's model (`examples/train_stage2.py`, A-LLMRec or MLP-LLM) in ranking mode: the CF model retrieves
  each user's `--num_retrieved` best items from the catalog (seen and disallowed items left out first) and the LM
  reranks them by the likelihood of their titles (`score` is that log-likelihood). Far slower: the LM reads every
  retrieved title.

Histories come from one of:
- a prepared dataset (`--dataset_dir`): every user's whole known sequence;
- a raw log in any format `prepare_data.py` reads (`--format`, `--input_path`, `--column_mapping`, `--encoding`),
  each user's interactions in time order;
- a Parquet or JSONL file of `user, history` rows (`--histories_path`; `history` a list of external item ids).

External item ids are mapped through the checkpoint's catalog; interactions with items it does not have are
counted and logged (a user left with none is recommended for as a cold user), never silently dropped.

    python examples/recommend.py --model_path outputs/ranking_head --dataset_dir outputs/data/ml-100k \\
        --output_dir outputs/recommendations --k 10
    accelerate launch --num_processes 2 examples/recommend.py --model_path outputs/ranking_head \\
        --dataset_dir outputs/data/ml-100k --output_dir outputs/recommendations

Output: `shard-NNNNN.parquet` files with columns `user, rank, item_id, title, score` (rank 1 = best), one shard
per `--shard_size` users in a fixed order, and `manifest.json` (settings, shards, row counts) once every shard is
written. Items a user has seen are left out unless `--keep_seen`; `--allowed_items FILE` (one external item id per
line) restricts recommendations to those items. A user with fewer than `k` items left gets the ones there are
(counted and logged).

The shards do not depend on the number of processes: shard `i` holds the same users whoever writes it (process
`i % N`), and each is written to a temporary name and renamed when complete, so an interrupted run resumes with
the same command, writing only the shards that are missing. Deterministic: no sampling anywhere.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm

from allmrec_hf import ALLMRecForConditionalGeneration, ALLMRecForItemRanking, ALLMRecProcessor
from allmrec_hf.data import PreparedDataset
from allmrec_hf.data.readers import READER_FORMATS, check_encoding, read_log
from allmrec_hf.training.builders import checkpoint_model_type
from allmrec_hf.training.dtypes import dtype_name, resolve_lm_dtype
from allmrec_hf.training.runs import end_distributed_run, parse_arguments, run_script

logger = logging.getLogger("recommend")

SETTINGS_FILE = "recommend_settings.json"
MANIFEST_FILE = "manifest.json"
OUTPUT_FORMATS = ("parquet", "jsonl")
SCHEMA = pa.schema(
    [("user", pa.string()), ("rank", pa.int32()), ("item_id", pa.string()), ("title", pa.string()),
     ("score", pa.float32())]
)  # fmt: skip


@dataclass
class RecommendArguments:
    model_path: str = field(
        metadata={"help": "A ranking-head checkpoint (train_ranking_head.py) or the paper's model (train_stage2.py)."}
    )
    output_dir: str = field(metadata={"help": "Where the shards and manifest.json go."})
    dataset_dir: str | None = field(default=None, metadata={"help": "A prepared dataset: every user's sequence."})
    format: str | None = field(default=None, metadata={"help": f"A raw log's format: {', '.join(READER_FORMATS)}."})
    input_path: str | None = field(default=None, metadata={"help": "The raw log (file or folder) for --format."})
    column_mapping: str | None = field(
        default=None,
        metadata={"help": 'csv/parquet logs: JSON mapping of our columns to yours, e.g. {"user_id": "uid"}.'},
    )
    encoding: str | None = field(default=None, metadata={"help": "Text encoding of a csv/movielens/recbole log."})
    histories_path: str | None = field(
        default=None, metadata={"help": "A Parquet or JSONL file of user, history (external item ids) rows."}
    )
    k: int = field(default=10, metadata={"help": "Recommendations per user."})
    keep_seen: bool = field(default=False, metadata={"help": "Also recommend items in the user's history."})
    allowed_items: str | None = field(
        default=None, metadata={"help": "A file of external item ids (one per line): recommend only these."}
    )
    num_retrieved: int = field(
        default=20, metadata={"help": "The paper's model: items the CF model retrieves per user for the LM to rerank."}
    )
    batch_size: int = field(default=16, metadata={"help": "Users per LM forward."})
    shard_size: int = field(default=1024, metadata={"help": "Users per output shard."})
    output_format: str = field(default="parquet", metadata={"help": "parquet or jsonl."})
    lm_dtype: str | None = field(
        default=None, metadata={"help": "LM weights dtype: auto (bfloat16 where it runs natively), bfloat16, float32."}
    )
    attn_implementation: str | None = field(default=None, metadata={"help": "The LM's attention (default: its own)."})
    use_cpu: bool = field(default=False, metadata={"help": "Run on the CPU even when an accelerator is there."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Start over in an output_dir that holds another run's recommendations."}
    )

    def __post_init__(self):
        sources = [name for name in ("dataset_dir", "input_path", "histories_path") if getattr(self, name)]
        if len(sources) != 1:
            raise SystemExit(
                "Give the histories as exactly one of --dataset_dir, --input_path (with --format) or "
                f"--histories_path (got {', '.join('--' + s for s in sources) or 'none'})."
            )
        if self.input_path and not self.format:
            raise SystemExit("--input_path needs --format (one of " + ", ".join(READER_FORMATS) + ").")
        if self.format and not self.input_path:
            raise SystemExit("--format reads the log given by --input_path; give it.")
        for name in ("k", "batch_size", "shard_size", "num_retrieved"):
            value = getattr(self, name)
            if value < 1:
                raise SystemExit(f"--{name} must be a positive integer, got {value}.")
        if self.num_retrieved < self.k:
            raise SystemExit(f"--num_retrieved ({self.num_retrieved}) must be at least --k ({self.k}).")
        if self.output_format not in OUTPUT_FORMATS:
            raise SystemExit(f"--output_format must be one of {OUTPUT_FORMATS}, got {self.output_format!r}.")
        try:
            self.lm_dtype = dtype_name(resolve_lm_dtype(self.lm_dtype))  # auto: bfloat16 where it runs natively
        except ValueError as err:
            raise SystemExit(str(err)) from None
        if self.encoding:
            try:
                check_encoding(self.encoding)
            except ValueError as err:
                raise SystemExit(f"--encoding: {err}") from None


# ============================================================================================== histories
@dataclass
class Histories:
    users: list[str]  # external user ids, in output order
    items: list[list[int]]  # catalog indices, oldest first
    counts: dict  # what mapping through the catalog did


def map_through_catalog(users: list[str], item_ids: list[list[str]], catalog) -> Histories:
    """External item ids to catalog indices; unknown ones are counted (with examples) and left out."""
    lookup = {catalog.item_id(i): i for i in range(1, catalog.num_items + 1)}
    mapped, unknown, emptied = [], {}, 0
    for history in item_ids:
        row = []
        for item in history:
            index = lookup.get(str(item))
            if index is None:
                unknown[str(item)] = unknown.get(str(item), 0) + 1
            else:
                row.append(index)
        emptied += bool(history) and not row
        mapped.append(row)
    counts = {
        "users": len(users),
        "interactions": sum(len(h) for h in item_ids),
        "unknown_interactions": sum(unknown.values()),
        "unknown_items": len(unknown),
        "users_left_without_known_items": emptied,
        "users_without_history": sum(1 for h in mapped if not h),
    }
    if unknown:
        examples = ", ".join(repr(i) for i in list(unknown)[:5])
        logger.warning(
            "%d interactions (%d distinct items, e.g. %s) name items the checkpoint's catalog does not have: left out "
            "of the histories; %d users have no known item left and are recommended for as cold users.",
            counts["unknown_interactions"], len(unknown), examples, emptied,
        )  # fmt: skip
    return Histories(users, mapped, counts)


def histories_from_dataset(path: str, catalog) -> Histories:
    data = PreparedDataset.load(path)
    users, items, offsets = data.sequences()
    ids = [[data.catalog.item_id(int(i)) for i in items[offsets[u] : offsets[u + 1]]] for u in range(data.num_users)]
    return map_through_catalog(list(data.user_ids), ids, catalog)


def histories_from_log(args: RecommendArguments, catalog) -> Histories:
    kwargs = {}
    if args.column_mapping:
        try:
            kwargs["columns"] = json.loads(args.column_mapping)
        except json.JSONDecodeError as err:
            raise SystemExit(f"--column_mapping is not valid JSON: {err}") from None
    if args.encoding:
        kwargs["encoding"] = args.encoding
    try:
        log = read_log(args.format, args.input_path, **kwargs)
    except ValueError as err:
        if type(err) is not ValueError:  # DataFormatError / DataPreparationError keep their type and message
            raise
        raise SystemExit(str(err)) from None
    frame = log.interactions[["user_id", "item_id", "timestamp"]].copy()
    frame["row"] = np.arange(len(frame))
    frame = frame.sort_values(["user_id", "timestamp", "row"], kind="stable")  # equal times keep the file order
    users, ids = [], []
    for user, group in frame.groupby("user_id", sort=True):
        users.append(str(user))
        ids.append([str(i) for i in group["item_id"]])
    return map_through_catalog(users, ids, catalog)


def histories_from_file(path: str, catalog) -> Histories:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"histories file not found: {path}")
    if path.endswith((".parquet", ".pq")):
        table = pq.read_table(path)
        rows = table.to_pylist()
    else:
        rows = []
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise SystemExit(f"{path}, line {number}: not valid JSON ({err.msg}).") from None
    users, ids, seen = [], [], set()
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or "user" not in row or "history" not in row:
            raise SystemExit(f"{path}, row {number}: expected the fields 'user' and 'history'.")
        history = row["history"]
        if isinstance(history, str) or not isinstance(history, (list, tuple)):
            raise SystemExit(f"{path}, row {number}: 'history' must be a list of item ids, got {history!r}.")
        user = str(row["user"])
        if user in seen:
            raise SystemExit(f"{path}, row {number}: user {user!r} appears twice.")
        seen.add(user)
        users.append(user)
        ids.append([str(i) for i in history])
    return map_through_catalog(users, ids, catalog)


def read_allowed_items(path: str, catalog) -> list[int]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--allowed_items file not found: {path}")
    with open(path, encoding="utf-8") as handle:
        wanted = [line.strip() for line in handle if line.strip()]
    lookup = {catalog.item_id(i): i for i in range(1, catalog.num_items + 1)}
    unknown = [item for item in wanted if item not in lookup]
    if unknown:
        raise SystemExit(
            f"{path}: {len(unknown)} of {len(wanted)} allowed items are not in the checkpoint's catalog "
            f"(e.g. {', '.join(repr(i) for i in unknown[:5])})."
        )
    if not wanted:
        raise SystemExit(f"{path}: no item ids (one per line).")
    return sorted(set(lookup[item] for item in wanted))


# ============================================================================================== output
def settings_of(args: RecommendArguments, histories: Histories) -> dict:
    """What decides the shards' contents; a resumed run must match it."""
    digest = hashlib.sha256()
    for user, items in zip(histories.users, histories.items, strict=True):
        digest.update(f"{user}\t{','.join(map(str, items))}\n".encode())
    allowed = None
    if args.allowed_items:
        with open(args.allowed_items, "rb") as handle:
            allowed = hashlib.sha256(handle.read()).hexdigest()
    return {
        "model_path": os.path.abspath(args.model_path),
        "k": args.k,
        "keep_seen": args.keep_seen,
        "allowed_items_sha256": allowed,
        "shard_size": args.shard_size,
        "output_format": args.output_format,
        "batch_size": args.batch_size,
        "num_retrieved": args.num_retrieved,
        "lm_dtype": args.lm_dtype,
        "histories_sha256": digest.hexdigest(),
        "num_users": len(histories.users),
    }


def shard_name(index: int, output_format: str) -> str:
    return f"shard-{index:05d}.{output_format}"


def prepare_output_dir(args: RecommendArguments, settings: dict, state: PartialState) -> None:
    """Create `output_dir`, or resume in it when it holds a run with the same settings. Another run's output is
    refused unless --overwrite_output_dir (which removes only what this script wrote); anything else is refused."""
    out = args.output_dir
    settings_file = os.path.join(out, SETTINGS_FILE)
    if state.is_main_process:
        if os.path.isfile(out):
            raise SystemExit(f"--output_dir {out} is a file.")
        if os.path.isdir(out) and os.listdir(out):
            ours = {SETTINGS_FILE, MANIFEST_FILE}
            foreign = [
                name for name in os.listdir(out)
                if name not in ours and not name.startswith(("shard-", ".shard-"))
            ]  # fmt: skip
            if foreign or not os.path.isfile(settings_file):
                raise SystemExit(
                    f"--output_dir {out} holds files this script did not write ({', '.join(sorted(foreign)[:5])}): "
                    "choose an empty or new folder."
                )
            with open(settings_file, encoding="utf-8") as handle:
                previous = json.load(handle)
            if previous != settings:
                if not args.overwrite_output_dir:
                    changed = sorted(key for key in settings if previous.get(key) != settings[key])
                    raise SystemExit(
                        f"--output_dir {out} holds recommendations made with other settings ({', '.join(changed)}): "
                        "give --overwrite_output_dir to start over, or another folder."
                    )
                for name in os.listdir(out):
                    os.remove(os.path.join(out, name))
                logger.info("Removed the previous recommendations in %s (--overwrite_output_dir).", out)
            else:
                logger.info("Resuming in %s: shards already written are kept.", out)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):
            if name.startswith(".shard-"):  # a shard a kill cut short
                os.remove(os.path.join(out, name))
        with open(settings_file + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(settings, handle, indent=2, sort_keys=True)
        os.replace(settings_file + ".tmp", settings_file)
    state.wait_for_everyone()


def write_shard(path: str, rows: dict[str, list], output_format: str) -> None:
    """Write to a hidden temporary name, then rename: a shard is there whole or not at all."""
    folder, name = os.path.split(path)
    staging = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    table = pa.table(rows, schema=SCHEMA)
    if output_format == "parquet":
        pq.write_table(table, staging)
    else:
        with open(staging, "w", encoding="utf-8") as handle:
            for record in table.to_pylist():
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(staging, path)


# ============================================================================================== scoring
def candidate_mask(scores: torch.Tensor, histories: list[list[int]], keep_seen: bool,
                   allowed: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
    """`scores` `(users, num_items + 1)` with padding, disallowed and (unless `keep_seen`) seen items at `-inf`."""
    scores[:, 0] = float("-inf")  # padding
    if allowed is not None:
        scores[:, ~allowed.to(scores.device)] = float("-inf")
    if not keep_seen:
        for row, history in enumerate(histories):
            if history:
                scores[row, torch.tensor(sorted(set(history)), device=scores.device)] = float("-inf")
    return scores


def top_items(scores: torch.Tensor, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Each row's best `k` columns and scores, best first, leaving out `-inf` ones (fewer when fewer are left)."""
    top = scores.topk(min(k, scores.shape[1]), dim=1)
    items, values = [], []
    for row_items, row_scores in zip(top.indices.tolist(), top.values.tolist(), strict=True):
        kept = [(i, s) for i, s in zip(row_items, row_scores, strict=True) if s != float("-inf")]
        items.append([i for i, _ in kept])
        values.append([s for _, s in kept])
    return items, values


@torch.no_grad()
def recommend_batch(model, processor, histories: list[list[int]], k: int, keep_seen: bool,
                    allowed: torch.Tensor | None) -> tuple[list[list[int]], list[list[float]]]:  # fmt: skip
    """The ranking head: the top `k` catalog indices and scores of each history (fewer when fewer items are left)."""
    device = model.item_head.linear_1.weight.device
    batch = processor.ranking_inputs(histories)
    scores = model.score_candidates(**{key: value.to(device) for key, value in batch.items()}).float()
    return top_items(candidate_mask(scores, histories, keep_seen, allowed), k)


@torch.no_grad()
def retrieve_and_rerank_batch(model, processor, histories: list[list[int]], k: int, keep_seen: bool,
                              allowed: torch.Tensor | None, num_retrieved: int):  # fmt: skip
    """The paper's model: the CF model's best `num_retrieved` items of each history (seen and disallowed items left
    out), reranked by the LM's title likelihood; the top `k` catalog indices and log-likelihoods."""
    device = model.item_projector.linear_1.weight.device
    cf_input_ids = processor(histories=histories)["cf_input_ids"].to(device)
    cf_scores = candidate_mask(model.recommender.cf_model.score_all_items(cf_input_ids).float(), histories,
                               keep_seen, allowed)  # fmt: skip
    retrieved, _ = top_items(cf_scores, num_retrieved)
    items: list[list[int]] = [[] for _ in histories]
    values: list[list[float]] = [[] for _ in histories]
    rows = [row for row, candidates in enumerate(retrieved) if candidates]  # a user with nothing left gets nothing
    for width in sorted({len(retrieved[row]) for row in rows}):  # one candidate width per LM batch
        group = [row for row in rows if len(retrieved[row]) == width]
        ranked = model.rank_candidates(processor, [histories[r] for r in group], [retrieved[r] for r in group], k)
        for row, recs in zip(group, ranked, strict=True):
            items[row] = [rec["item"] for rec in recs]
            values[row] = [float(rec["score"]) for rec in recs]
    return items, values


def load_model(args: RecommendArguments, device):
    """The checkpoint's model (a ranking head, or the paper's model for retrieve-then-rerank) and its processor."""
    kind = checkpoint_model_type(args.model_path)
    if kind not in ("allmrec_ranking", "allmrec"):
        raise SystemExit(
            f"{args.model_path} is a {kind or 'unknown'!r} checkpoint: recommend.py takes a ranking head "
            "(train_ranking_head.py) or the paper's model (train_stage2.py)."
        )
    kwargs = {}
    if args.lm_dtype:
        kwargs["dtype"] = getattr(torch, args.lm_dtype)
    if args.attn_implementation:
        kwargs["attn_implementation"] = args.attn_implementation
    model_class = ALLMRecForItemRanking if kind == "allmrec_ranking" else ALLMRecForConditionalGeneration
    model = model_class.from_pretrained(args.model_path, **kwargs).to(device).eval()
    processor = ALLMRecProcessor.from_pretrained(args.model_path)
    if processor.catalog is None:
        raise SystemExit(f"{args.model_path} has no item catalog (item_catalog.jsonl) to recommend from.")
    model.check_processor(processor)
    if kind == "allmrec_ranking" and model.config.item_head_input == "text" and model.text_item_latents is None:
        model.compute_text_item_latents(processor)
    return model, processor


def main(argv: list[str] | None = None) -> dict:
    (args,) = parse_arguments((RecommendArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    # Without an accelerator, `torchrun` / `accelerate launch` processes form a CPU (gloo) group.
    state = PartialState(cpu=args.use_cpu or not torch.accelerator.is_available())
    if not state.is_main_process:
        logging.getLogger().setLevel(logging.WARNING)

    model, processor = load_model(args, state.device)
    catalog = processor.catalog
    if args.dataset_dir:
        histories = histories_from_dataset(args.dataset_dir, catalog)
    elif args.input_path:
        histories = histories_from_log(args, catalog)
    else:
        histories = histories_from_file(args.histories_path, catalog)
    allowed = None
    if args.allowed_items:
        allowed = torch.zeros(catalog.num_items + 1, dtype=torch.bool)
        allowed[read_allowed_items(args.allowed_items, catalog)] = True
    logger.info("Histories: %s", histories.counts)

    settings = settings_of(args, histories)
    prepare_output_dir(args, settings, state)
    num_shards = max(1, -(-len(histories.users) // args.shard_size))
    mine = [i for i in range(num_shards) if i % state.num_processes == state.process_index]
    todo = [i for i in mine if not os.path.isfile(os.path.join(args.output_dir, shard_name(i, args.output_format)))]
    if len(todo) < len(mine):
        logger.info("%d of this process's %d shards are already written: skipped.", len(mine) - len(todo), len(mine))

    start, done_users, short_users = time.perf_counter(), 0, 0
    bar = tqdm(total=sum(min(args.shard_size, len(histories.users) - i * args.shard_size) for i in todo),
               desc="users", unit="user", disable=not state.is_local_main_process)  # fmt: skip
    for shard in todo:
        users = range(shard * args.shard_size, min((shard + 1) * args.shard_size, len(histories.users)))
        rows: dict[str, list] = {name: [] for name in SCHEMA.names}
        for first in range(users.start, users.stop, args.batch_size):
            chunk = list(range(first, min(first + args.batch_size, users.stop)))
            chunk_histories = [histories.items[u] for u in chunk]
            if isinstance(model, ALLMRecForItemRanking):
                items, scores = recommend_batch(model, processor, chunk_histories, args.k, args.keep_seen, allowed)
            else:
                items, scores = retrieve_and_rerank_batch(
                    model, processor, chunk_histories, args.k, args.keep_seen, allowed, args.num_retrieved
                )
            for user, row_items, row_scores in zip(chunk, items, scores, strict=True):
                short_users += len(row_items) < args.k
                for rank, (item, score) in enumerate(zip(row_items, row_scores, strict=True), 1):
                    rows["user"].append(histories.users[user])
                    rows["rank"].append(rank)
                    rows["item_id"].append(catalog.item_id(item))
                    rows["title"].append(catalog.title(item))
                    rows["score"].append(score)
            bar.update(len(chunk))
            done_users += len(chunk)
        write_shard(os.path.join(args.output_dir, shard_name(shard, args.output_format)), rows, args.output_format)
    bar.close()
    elapsed = time.perf_counter() - start
    if done_users:
        logger.info("Process %d: %d users in %.1f s (%.1f users/s).", state.process_index, done_users, elapsed,
                    done_users / max(elapsed, 1e-9))  # fmt: skip
    if short_users:
        logger.warning("%d users had fewer than %d items left to recommend: they got the ones there were.",
                       short_users, args.k)  # fmt: skip
    timings = gather_object([(done_users, elapsed)]) if state.num_processes > 1 else [(done_users, elapsed)]

    manifest = {
        "settings": settings,
        "histories": histories.counts,
        "shards": [shard_name(i, args.output_format) for i in range(num_shards)],
        "columns": SCHEMA.names,
        "processes": state.num_processes,
        "this_run": {  # what this invocation scored (a resumed run skips the shards already written)
            "users": sum(users for users, _ in timings),
            "seconds": round(max(seconds for _, seconds in timings), 3),
            "users_per_second": round(sum(u for u, _ in timings) / max(max(s for _, s in timings), 1e-9), 2),
        },
    }
    if state.is_main_process:
        missing = [name for name in manifest["shards"] if not os.path.isfile(os.path.join(args.output_dir, name))]
        if missing:
            raise RuntimeError(f"shards missing after every process finished: {missing[:5]}")
        manifest["rows"] = sum(
            count_rows(os.path.join(args.output_dir, n), args.output_format) for n in manifest["shards"]
        )
        path = os.path.join(args.output_dir, MANIFEST_FILE)
        with open(path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(manifest, handle, indent=2)
        os.replace(path + ".tmp", path)
        logger.info("Recommendations for %d users written to %s (%d shards).", len(histories.users),
                    args.output_dir, num_shards)  # fmt: skip
    end_distributed_run()
    return manifest


def count_rows(path: str, output_format: str) -> int:
    if output_format == "parquet":
        return pq.read_metadata(path).num_rows
    with open(path, encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def read_recommendations(output_dir: str) -> pa.Table:
    """Every shard of a finished run (its manifest's list), as one table in shard order."""
    with open(os.path.join(output_dir, MANIFEST_FILE), encoding="utf-8") as handle:
        manifest = json.load(handle)
    tables = []
    for name in manifest["shards"]:
        path = os.path.join(output_dir, name)
        if name.endswith(".parquet"):
            tables.append(pq.read_table(path, schema=SCHEMA))
        else:
            with open(path, encoding="utf-8") as handle:
                tables.append(pa.Table.from_pylist([json.loads(line) for line in handle if line.strip()], SCHEMA))
    return pa.concat_tables(tables)


if __name__ == "__main__":
    run_script(main)
