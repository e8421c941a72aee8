"""Run recommenders over the persisted candidate sets of a prepared dataset and collect per-user outputs.

Every method sees the same users, histories and candidate lists, so their figures are comparable:

- a CF model alone (`cf_candidate_scores`, `cf_full_catalog_ranks`),
- the popularity ranking (`training_item_counts`: how often each item occurs in the training sequences),
- the ranking head (`ALLMRecForItemRanking`): one LM forward per user scores the candidates and the whole catalog
  (`ranking_head_outputs`, `ranking_head_variants` for the head with and without the CF score),
- an LM-based recommender (A-LLMRec, MLP-LLM or LLM-only) in the paper's generation mode and in ranking mode
  (`lm_candidate_outputs`), and retrieve-then-rerank over the whole catalog (`lm_full_catalog_ranks`).

`scenario_metrics` turns the per-user outputs into metrics for each scenario's users.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .metrics import generation_metrics, ranking_metrics, target_ranks

logger = logging.getLogger(__name__)

DEFAULT_SCENARIOS = ("test", "cold_items", "warm_items", "cold_users")
MODES = ("generation", "ranking")
MISSED = float("inf")  # the rank of a target a retrieve-then-rerank list does not contain


@dataclass
class EvaluationRows:
    """The evaluated users, one row each (a user appears once even when several scenarios include them).

    `scenarios` maps each scenario to the indices of its rows."""

    splits: list[str]
    users: list[int]
    histories: list[list[int]]
    targets: list[int]
    candidates: list[list[int]]
    scenarios: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.users)

    def subset(self, max_users: int | None, seed: int = 0) -> EvaluationRows:
        """At most `max_users` rows of each scenario, drawn under `seed` (all of them when None)."""
        if max_users is None:
            return self
        chosen = {}
        for name, index in self.scenarios.items():
            if len(index) > max_users:
                rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 1])
                index = np.sort(rng.choice(index, size=max_users, replace=False))
            chosen[name] = index
        keep = np.unique(np.concatenate([np.zeros(0, np.int64), *chosen.values()]))
        new_index = np.full(len(self), -1)
        new_index[keep] = np.arange(keep.size)
        pick = lambda values: [values[i] for i in keep]  # noqa: E731
        return EvaluationRows(
            pick(self.splits), pick(self.users), pick(self.histories), pick(self.targets), pick(self.candidates),
            {name: new_index[index] for name, index in chosen.items()},
        )  # fmt: skip

    @property
    def target_positions(self) -> np.ndarray:
        """The column of each row's target in its candidate list."""
        return np.array([row.index(target) for row, target in zip(self.candidates, self.targets, strict=True)])


def select_rows(
    data, scenarios: Sequence[str] | None = None, max_users: int | None = None, seed: int = 0
) -> EvaluationRows:
    """The rows of each scenario of a prepared dataset (`PreparedDataset`), at most `max_users` per scenario
    drawn under `seed` (the draw for one scenario does not depend on which other scenarios are asked for).

    `scenarios=None` takes every scenario the dataset has (cold users only when it was prepared with them)."""
    if not data.has_candidates:
        raise ValueError(f"the prepared dataset {data.name!r} has no persisted candidate sets to evaluate on.")
    if scenarios is None:
        scenarios = [s for s in DEFAULT_SCENARIOS if s != "cold_users" or "cold_users" in data.splits]
    scenarios = list(dict.fromkeys(scenarios))
    rows = EvaluationRows([], [], [], [], [])
    index: dict[tuple[str, int], int] = {}
    for name in scenarios:
        table = data.scenario(name)  # raises a KeyError naming the scenarios for an unknown one
        split = "cold_users" if name == "cold_users" else "test"
        chosen = np.arange(len(table))
        if max_users is not None and len(table) > max_users:
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            chosen = np.sort(rng.choice(len(table), size=max_users, replace=False))
        if len(chosen) == 0:
            logger.warning("Scenario %r of %s has no users; its metrics will be NaN.", name, data.name)
        subset = table.select(chosen).to_dict()
        positions = []
        for user, history, target, candidates in zip(
            subset["user"], subset["history"], subset["target"], subset["candidates"], strict=True
        ):
            key = (split, int(user))
            if key not in index:
                index[key] = len(rows.users)
                rows.splits.append(split)
                rows.users.append(int(user))
                rows.histories.append([int(i) for i in history])
                rows.targets.append(int(target))
                rows.candidates.append([int(i) for i in candidates])
            positions.append(index[key])
        rows.scenarios[name] = np.array(positions, dtype=np.int64)
        logger.info("Scenario %r: %d of %d users.", name, len(chosen), len(table))
    return rows


def _batches(n: int, batch_size: int, desc: str, disable: bool):
    starts = range(0, n, batch_size)
    return tqdm(starts, desc=desc, total=len(starts), disable=disable, unit="batch")


def _cf_inputs(cf_model, histories: Sequence[Sequence[int]], device) -> torch.Tensor:
    """Left-padded CF input ids, the most recent `max_seq_length` items of each history."""
    max_length = cf_model.config.max_seq_length
    return _left_pad([list(h)[-max_length:] for h in histories]).to(device)


@torch.no_grad()
def cf_candidate_scores(cf_model, rows: EvaluationRows, batch_size: int = 256, disable_tqdm: bool = False):
    """The CF model's scores of each row's candidates, `(rows, candidates)`."""
    device = next(cf_model.parameters()).device
    scores = np.zeros((len(rows), max(len(c) for c in rows.candidates)), dtype=np.float64)
    for start in _batches(len(rows), batch_size, "CF scores", disable_tqdm):
        stop = min(start + batch_size, len(rows))
        inputs = _cf_inputs(cf_model, rows.histories[start:stop], device)
        items = torch.tensor(rows.candidates[start:stop], device=device)
        scores[start:stop] = cf_model.score_items(inputs, items).float().cpu().numpy()
    return scores


@torch.no_grad()
def cf_full_catalog_ranks(cf_model, rows: EvaluationRows, batch_size: int = 256, disable_tqdm: bool = False):
    """The target's rank among every catalog item the user has not interacted with (the history is excluded;
    a target that is also in the history ranks below everything)."""
    device = next(cf_model.parameters()).device
    ranks = np.zeros(len(rows), dtype=np.float64)
    for start in _batches(len(rows), batch_size, "CF full catalog", disable_tqdm):
        stop = min(start + batch_size, len(rows))
        scores = cf_model.score_all_items(_cf_inputs(cf_model, rows.histories[start:stop], device)).float()
        histories, targets = rows.histories[start:stop], rows.targets[start:stop]
        ranks[start:stop] = full_catalog_ranks(scores.cpu().numpy(), histories, targets)
    return ranks


def full_catalog_ranks(scores: np.ndarray, histories: Sequence[Sequence[int]], targets: Sequence[int]) -> np.ndarray:
    """The target's rank among every catalog item of `scores` (`(rows, num_items + 1)`, column 0 padding) that is
    finite and not in the user's history; a target that is in the history ranks below everything (`MISSED`)."""
    valid = np.isfinite(scores)
    for row, history in enumerate(histories):
        if len(history):
            valid[row, sorted(set(history))] = False
    targets = np.asarray(targets)
    ranks = target_ranks(scores, targets, valid).astype(np.float64)
    ranks[~valid[np.arange(len(targets)), targets]] = MISSED
    return ranks


def training_item_counts(data) -> np.ndarray:
    """How often each catalog item occurs in the training sequences (history and target) of a prepared dataset,
    `(num_items + 1,)`: the popularity ranking's scores (index 0, padding, is 0)."""
    counts = np.zeros(data.num_items + 1, dtype=np.float64)
    for column in ("history", "target"):
        values = data.splits["train"][column]
        flat = np.concatenate([np.asarray(v, dtype=np.int64) for v in values]) if column == "history" else values
        np.add.at(counts, np.asarray(flat, dtype=np.int64), 1)
    counts[0] = 0
    return counts


@torch.no_grad()
def ranking_head_outputs(
    model, processor, rows: EvaluationRows, batch_size: int = 16, disable_tqdm: bool = False, desc: str = "ranking head"
) -> tuple[np.ndarray, np.ndarray]:
    """The ranking head's candidate scores `(rows, candidates)` and full-catalog ranks `(rows,)` (the target among
    every unseen item), both from one LM forward per user over the whole catalog, as the model scores them (its
    `config.cf_score_weight` included)."""
    weight = float(model.config.cf_score_weight)
    return ranking_head_variants(model, processor, rows, (weight,), batch_size, disable_tqdm, desc)[weight]


@torch.no_grad()
def ranking_head_variants(
    model,
    processor,
    rows: EvaluationRows,
    cf_score_weights: Sequence[float],
    batch_size: int = 16,
    disable_tqdm: bool = False,
    desc: str = "ranking head",
) -> dict[float, tuple[np.ndarray, np.ndarray]]:
    """For each of `cf_score_weights` (0: the pure head), the candidate scores and full-catalog ranks of
    `head + weight * CF score` (see `ranking_head_outputs`), all from the same one LM forward per user."""
    device = model.item_head.linear_1.weight.device
    width = max(len(c) for c in rows.candidates)
    weights = list(dict.fromkeys(float(w) for w in cf_score_weights))
    out = {w: (np.full((len(rows), width), -np.inf), np.zeros(len(rows), dtype=np.float64)) for w in weights}
    for start in _batches(len(rows), batch_size, desc, disable_tqdm):
        stop = min(start + batch_size, len(rows))
        batch = {k: v.to(device) for k, v in processor.ranking_inputs(rows.histories[start:stop]).items()}
        outputs = model(**batch, cf_score_weight=0.0, output_cf_scores=any(weights))
        head = outputs.scores.float()
        for weight, (candidate_scores, ranks) in out.items():
            scores = (head + weight * outputs.cf_scores.float() if weight else head).cpu().numpy()
            for row, candidates in enumerate(rows.candidates[start:stop]):
                candidate_scores[start + row, : len(candidates)] = scores[row, candidates]
            ranks[start:stop] = full_catalog_ranks(scores, rows.histories[start:stop], rows.targets[start:stop])
    return out


def _device(model) -> torch.device:
    return model.item_projector.linear_1.weight.device


def _batch(processor, rows: EvaluationRows, start: int, stop: int, cf_histories=None):
    batch = processor(histories=rows.histories[start:stop], candidates=rows.candidates[start:stop])
    if cf_histories is not None:
        batch["cf_input_ids"] = _left_pad([list(h)[-processor.max_history_length :] for h in cf_histories[start:stop]])
    return batch


def _left_pad(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    width = max([len(r) for r in rows] + [1])
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            out[i, width - len(row) :] = torch.tensor(list(row))
    return out


@torch.no_grad()
def lm_candidate_outputs(
    model,
    processor,
    rows: EvaluationRows,
    modes: Sequence[str] = MODES,
    batch_size: int = 8,
    max_new_tokens: int | None = None,
    item_embedding_source: str | None = None,
    candidate_batch_size: int | None = None,
    desc: str = "",
    disable_tqdm: bool = False,
    cf_histories: Sequence[Sequence[int]] | None = None,
) -> dict:
    """An LM recommender's outputs on each row's candidates.

    Returns `{"answers": [...], "scores": ndarray}` for the modes asked: `generation` decodes greedily and keeps
    the text (by default up to the longest candidate answer of the batch plus 8 tokens); `ranking` scores every
    candidate's answer by its log-likelihood (`score_candidates`, summed over the answer tokens).

    `cf_histories` (cross-domain use) replaces the histories the CF model reads: item indices of the model's own
    catalog, while the prompt shows the rows' items of `processor.catalog`."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {MODES}.")
    device = _device(model)
    out: dict = {}
    if "generation" in modes:
        answers: list[str] = []
        for start in _batches(len(rows), batch_size, f"{desc} generation".strip(), disable_tqdm):
            stop = min(start + batch_size, len(rows))
            batch = _batch(processor, rows, start, stop, cf_histories)
            longest = int(batch["candidate_attention_mask"].sum(-1).max())
            batch = batch.to(device)
            tokens = model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                cf_input_ids=batch["cf_input_ids"],
                item_ids=batch["item_ids"],
                item_embedding_source=item_embedding_source,
                max_new_tokens=max_new_tokens or longest + 8,
            )
            answers.extend(processor.batch_decode(tokens, skip_special_tokens=True))
        out["answers"] = answers
    if "ranking" in modes:
        width = max(len(c) for c in rows.candidates)
        scores = np.full((len(rows), width), -np.inf)
        for start in _batches(len(rows), batch_size, f"{desc} ranking".strip(), disable_tqdm):
            stop = min(start + batch_size, len(rows))
            batch = _batch(processor, rows, start, stop, cf_histories)
            batch_scores = model.score_candidates(
                **batch.to(device),
                candidate_batch_size=candidate_batch_size,
                item_embedding_source=item_embedding_source,
            )
            scores[start:stop, : batch_scores.shape[1]] = batch_scores.float().cpu().numpy()
        out["scores"] = scores
    return out


@torch.no_grad()
def lm_full_catalog_ranks(
    model,
    processor,
    rows: EvaluationRows,
    num_retrieved: int = 20,
    batch_size: int = 8,
    item_embedding_source: str | None = None,
    desc: str = "",
    disable_tqdm: bool = False,
) -> np.ndarray:
    """Retrieve-then-rerank over the whole catalog (`model.recommend`): the target's rank in the reranked top
    `num_retrieved`, or `MISSED` (infinity) when the CF model did not retrieve it."""
    ranks = np.full(len(rows), MISSED)
    for start in _batches(len(rows), batch_size, f"{desc} full catalog".strip(), disable_tqdm):
        stop = min(start + batch_size, len(rows))
        ranked = model.recommend(
            processor,
            rows.histories[start:stop],
            k=num_retrieved,
            num_retrieved=num_retrieved,
            item_embedding_source=item_embedding_source,
        )
        for offset, items in enumerate(ranked):
            order = [entry["item"] for entry in items]
            target = rows.targets[start + offset]
            if target in order:
                ranks[start + offset] = order.index(target)
    return ranks


def hit_curve(ranks: np.ndarray, max_k: int) -> list[float]:
    """Hit@K for K = 1..max_k."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if not ranks.size:
        return [float("nan")] * max_k
    return [float((ranks < k).mean()) for k in range(1, max_k + 1)]


def scenario_metrics(
    rows: EvaluationRows,
    catalog,
    answers: Sequence[str] | None = None,
    scores: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, dict]:
    """Per scenario: `generation` metrics of the answers (substring and strict Hit@1, valid-answer rate) and
    `ranking` metrics of the candidate scores (Hit@K, NDCG@K, MRR, and the Hit@K curve under `hit_curve`)."""
    positions = rows.target_positions if scores is not None else None
    results: dict[str, dict] = {}
    for name, index in rows.scenarios.items():
        entry: dict[str, dict] = {}
        if answers is not None:
            entry["generation"] = generation_metrics(
                [answers[i] for i in index],
                [catalog.title(rows.targets[i]) for i in index],
                [[catalog.title(c) for c in rows.candidates[i]] for i in index],
            )
        if scores is not None:
            valid = np.isfinite(scores[index])
            ranks = target_ranks(scores[index], positions[index], valid) if len(index) else np.zeros(0)
            entry["ranking"] = ranking_metrics(ranks, tuple(ks))
            entry["ranking"]["hit_curve"] = hit_curve(ranks, scores.shape[1])
        results[name] = entry
    return results


def full_catalog_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Hit@K, NDCG@K and MRR of full-catalog ranks (a missed target counts as a miss at every K)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return ranking_metrics(ranks, tuple(ks))


# ------------------------------------------------------------------------------------------ cross-domain
def map_items(rows: EvaluationRows, target_catalog, source_catalog) -> tuple[list[list[int]], list[list[int]], dict]:
    """Map the rows' items (indices of `target_catalog`) to `source_catalog` indices by external item id.

    Returns `(histories, candidates, counts)`: histories keep only the items the source catalog has (a user with
    none becomes a cold user for the CF model); candidates hold 0 where the source catalog lacks the item."""
    lookup = {source_catalog.item_id(i): i for i in range(1, source_catalog.num_items + 1)}

    def to_source(item: int) -> int:
        return lookup.get(target_catalog.item_id(item), 0)

    histories = [[m for m in map(to_source, h) if m] for h in rows.histories]
    candidates = [[to_source(i) for i in c] for c in rows.candidates]
    counts = {
        "history_items": sum(len(h) for h in rows.histories),
        "history_items_shared": sum(len(h) for h in histories),
        "candidates": sum(len(c) for c in candidates),
        "candidates_shared": sum(1 for c in candidates for i in c if i),
    }
    return histories, candidates, counts


@torch.no_grad()
def cf_mapped_candidate_scores(cf_model, histories, candidates, batch_size: int = 256) -> np.ndarray:
    """CF scores of candidates given as source-catalog indices; a candidate the CF model does not know (0) gets
    `-inf`, so it can only rank below every known one."""
    device = next(cf_model.parameters()).device
    width = max(len(c) for c in candidates)
    scores = np.full((len(candidates), width), -np.inf)
    for start in range(0, len(candidates), batch_size):
        stop = min(start + batch_size, len(candidates))
        items = torch.tensor([list(c) + [0] * (width - len(c)) for c in candidates[start:stop]], device=device)
        batch = cf_model.score_items(_cf_inputs(cf_model, histories[start:stop], device), items).float()
        scores[start:stop] = batch.masked_fill(items == 0, float("-inf")).cpu().numpy()
    return scores


def processor_for_catalog(processor, catalog, **prompt_overrides):
    """A copy of `processor` (same tokenizers and settings) showing another catalog's items, with optional prompt
    template changes such as `noun="game", verb="play", past_verb="played"`."""
    other = copy.copy(processor)
    other.catalog = catalog
    overrides = {k: v for k, v in prompt_overrides.items() if v is not None}
    if overrides:
        other.prompt_template = dataclasses.replace(processor.prompt_template, **overrides)
    return other


@contextmanager
def text_item_latents(model, latents: torch.Tensor) -> Iterator[None]:
    """Use another catalog's text-side item latents (`compute_text_item_latents(..., store=False)`) inside the
    block: item ids then index that catalog."""
    saved = model.text_item_latents
    model.text_item_latents = latents
    try:
        yield
    finally:
        model.text_item_latents = saved
