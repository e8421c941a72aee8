"""A-LLMRec with a ranking head: items scored from the frozen LM's hidden state instead of generated titles.

The base is A-LLMRec's (CF encoder, aligner, projectors, frozen LM, placeholder injection, adapter-sized
checkpoints); the head follows the authors' follow-up (LLM-SRec, KDD 2025): a learned output token's last-layer
hidden state through a user head, every item through an item head, and a dot product between them. One LM forward
per user scores a candidate list or the whole catalog; no logits over the vocabulary are computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput, logging

from .configuration_allmrec import ALLMRecRankingConfig
from .modeling_allmrec import (
    ALLMRecForConditionalGeneration,
    ALLMRecProjector,
    exclude_seen_items,
    positions_from_attention_mask,
    ranked_items,
    uniformity,
)
from .modeling_sasrec import check_item_ids

logger = logging.get_logger(__name__)


@dataclass
class ALLMRecRankingOutput(ModelOutput):
    r"""
    Output of [`ALLMRecForItemRanking`].

    Args:
        loss: The training loss (cross-entropy, plus the weighted distillation and uniformity terms).
        scores: `(batch, num_candidates)` for the last output token of each row when `candidate_ids` are given,
            else `(batch, num_items + 1)` over the whole catalog (column 0, the padding id, is `-inf`); they
            include `cf_score_weight` times the CF model's scores when that weight is not 0.
        cf_scores: The CF model's own scores of the same items (its user representation, the CF state at each
            row's last output token, dot the items' CF embeddings), when `output_cf_scores=True`.
        user_embeddings: `(num_output_tokens, ranking_hidden_size)`: the user vector at every output token, in
            row-major order.
        ranking_loss, distillation_loss, uniformity_loss: The loss parts, unweighted.
    """

    loss: torch.FloatTensor | None = None
    scores: torch.FloatTensor | None = None
    cf_scores: torch.FloatTensor | None = None
    user_embeddings: torch.FloatTensor | None = None
    ranking_loss: torch.FloatTensor | None = None
    distillation_loss: torch.FloatTensor | None = None
    uniformity_loss: torch.FloatTensor | None = None


class ALLMRecForItemRanking(ALLMRecForConditionalGeneration):
    r"""
    A-LLMRec with a ranking head. The prompt (from the processor) shows a user's history, each item as its title
    and item embedding (`[HistoryEmb]`) followed by an output token (`[RecOutput]`). The output token's input
    embedding is a learned vector plus the projected CF user state after that item (`F_U` of the CF encoder's
    output at that position, which sees no later item), so one forward over a history trains on every prefix at
    once, as SASRec does. The output token's last-layer hidden state goes through the user head, every item's CF
    embedding (or stage-1 joint / text latent: `config.item_head_input`) through the item head, and the score is
    their dot product. The LM stays frozen; only the projectors, the output vector and the heads train. A checkpoint
    whose `config.cf_score_weight` is not 0 adds that weight times the CF model's own item scores (a late fusion
    chosen on validation after training; the loss never sees it).

    It shares its base with [`ALLMRecForConditionalGeneration`] (it subclasses it for the injection and the
    adapter-sized `save_pretrained` / `from_pretrained`), but it never computes the LM's head over the vocabulary.

    Example:

    ```python
    >>> import torch
    >>> from transformers import LlamaConfig
    >>> from allmrec_hf import ALLMRecAlignerConfig, ALLMRecForItemRanking, ALLMRecRankingConfig, SASRecConfig
    >>> config = ALLMRecRankingConfig(
    ...     aligner_config=ALLMRecAlignerConfig(cf_config=SASRecConfig(num_items=30, hidden_size=32)),
    ...     text_config=LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
    ...                             num_attention_heads=4, num_key_value_heads=2),
    ...     item_projector_input="cf_embedding", history_token_id=100, output_token_id=102, ranking_hidden_size=16)
    >>> model = ALLMRecForItemRanking(config).eval()
    >>> input_ids = torch.tensor([[5, 6, 100, 102, 7, 100, 102]])  # two history items, each with its output token
    >>> out = model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
    ...             cf_input_ids=torch.tensor([[0, 3, 4]]), item_ids=torch.tensor([[3, 4]]),
    ...             candidate_ids=torch.tensor([[8, 9, 10]]))
    >>> out.scores.shape, out.user_embeddings.shape
    (torch.Size([1, 3]), torch.Size([2, 16]))
    ```
    """

    config_class = ALLMRecRankingConfig

    def __init__(self, config: ALLMRecRankingConfig, language_model=None):
        super().__init__(config, language_model=language_model)
        lm_hidden = config.text_config.hidden_size
        size = config.ranking_hidden_size
        self.output_embedding = nn.Parameter(torch.zeros(lm_hidden))
        self.user_head = ALLMRecProjector(lm_hidden, size, "leaky_relu")
        self.item_head = ALLMRecProjector(self._item_head_input_size(), size, "gelu")
        self.item_score_bias = nn.Parameter(torch.zeros(self.recommender.num_items + 1)) if config.item_bias else None
        cf_hidden = config.aligner_config.cf_config.hidden_size
        self.cf_user_head = nn.Linear(cf_hidden, size) if config.distillation_weight > 0 else None
        self.cf_skip = nn.Linear(cf_hidden, size) if config.cf_skip else None
        for module in (self.user_head, self.item_head, self.cf_user_head, self.cf_skip):
            if module is not None:
                module.apply(self._init_weights)
        with torch.no_grad():
            self.output_embedding.normal_(0.0, 0.02)

    def _item_head_input_size(self) -> int:
        if self.config.item_head_input == "cf":
            return self.config.aligner_config.cf_config.hidden_size
        return self.config.aligner_config.latent_size

    # ------------------------------------------------------------------------------------------ items
    def get_item_head_inputs(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """What the item head reads for `item_ids` (default: the whole catalog, row 0 = padding)."""
        if item_ids is None:
            item_ids = torch.arange(self.recommender.num_items + 1, device=self.item_head.linear_1.weight.device)
        source = self.config.item_head_input
        if source == "cf":
            return self.cf_model.get_item_embeddings(item_ids)
        if source == "joint":
            return self.recommender.encode_cf_items(item_ids)
        if self.text_item_latents is None:
            raise ValueError(
                "item_head_input='text' needs the text-side latents of the catalog: call "
                "`model.compute_text_item_latents(processor)` (or `set_text_item_latents`) first."
            )
        check_item_ids(item_ids, self.text_item_latents.shape[0] - 1)
        return self.text_item_latents.to(item_ids.device)[item_ids]

    def get_item_vectors(self, item_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The item head's vectors, `item_ids.shape + (ranking_hidden_size,)` (default: every catalog row)."""
        inputs = self.get_item_head_inputs(item_ids)
        return self.item_head(inputs.to(self.item_head.linear_1.weight.dtype))

    def _item_bias(self, item_ids: torch.Tensor | None = None) -> torch.Tensor | float:
        if self.item_score_bias is None:
            return 0.0
        return self.item_score_bias if item_ids is None else self.item_score_bias[item_ids]

    # ------------------------------------------------------------------------------------------ users
    def output_token_states(self, input_ids: torch.Tensor, cf_input_ids: torch.Tensor | None) -> torch.Tensor:
        """The CF encoder's state for every output token, `(num_output_tokens, cf_hidden)` in row-major order.

        The `k`-th of a row's `n` output tokens follows the `k`-th of its last `n` shown history items, which are
        the last `n` items of its left-padded `cf_input_ids`: its state is the CF output at that position. A row
        with an empty history has one output token and the cold-user state."""
        output_mask = input_ids == self.config.output_token_id
        counts = output_mask.sum(1)
        if cf_input_ids is None:
            raise ValueError("the ranking head needs cf_input_ids (the CF encoder's left-padded histories).")
        if cf_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"cf_input_ids has {cf_input_ids.shape[0]} rows for {input_ids.shape[0]} prompts.")
        states = self.cf_model.encode(cf_input_ids)  # (batch, width, hidden); width >= 1
        width = states.shape[1]
        if bool((counts > width).any()):
            row = int((counts > width).nonzero()[0, 0])
            raise ValueError(
                f"row {row} has {int(counts[row])} output tokens but its CF history holds only {width} positions: "
                "the prompt may not show more items than cf_input_ids hold."
            )
        order = output_mask.long().cumsum(1) - 1  # 0-based index of each output token within its row
        positions = (width - counts)[:, None] + order
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(order)
        return states[rows[output_mask], positions[output_mask]]

    def get_inputs_embeds(self, input_ids, cf_input_ids=None, item_ids=None, item_embedding_source=None):
        """The base model's injection, plus the output tokens: the learned vector and, unless
        `config.use_user_representation` is off, the projected CF user state after that item.

        Returns `(inputs_embeds, cf_states_at_output_tokens, item_features)`."""
        if self.config.output_token_id is None:
            raise ValueError("config.output_token_id is not set: take it from the processor (`output_token_id`).")
        output_mask = input_ids == self.config.output_token_id
        if not bool(output_mask.any(1).all()):
            row = int((~output_mask.any(1)).nonzero()[0, 0])
            raise ValueError(
                f"row {row} of input_ids has no output token ([RecOutput], id {self.config.output_token_id})."
            )
        token_ids = input_ids.masked_fill(output_mask, 0)
        inputs_embeds, _, item_features = super().get_inputs_embeds(
            token_ids, cf_input_ids, item_ids, item_embedding_source
        )
        states = self.output_token_states(input_ids, cf_input_ids)
        output_embeds = self.output_embedding.to(inputs_embeds.dtype).expand(states.shape[0], -1)
        if self.config.use_user_representation:
            output_embeds = output_embeds + self.user_projector(states.to(self.user_projector.linear_1.weight.dtype))
        scale = self._embedding_scale(inputs_embeds.dtype)
        inputs_embeds = inputs_embeds.masked_scatter(
            output_mask.unsqueeze(-1).expand_as(inputs_embeds), (output_embeds * scale).to(inputs_embeds.dtype)
        )
        return inputs_embeds, states, item_features

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cf_input_ids: torch.Tensor | None = None,
        item_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        candidate_ids: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        item_embedding_source: str | None = None,
        cf_score_weight: float | None = None,
        output_cf_scores: bool = False,
        return_dict: bool | None = None,
        **lm_kwargs,
    ) -> ALLMRecRankingOutput | tuple:
        r"""
        Args:
            input_ids, attention_mask, cf_input_ids, item_ids: The prompt from the processor (see
                [`ALLMRecForConditionalGeneration.forward`]); every row holds at least one output token.
            labels (`(batch, num_output_tokens)`, *optional*): The next item after each output token of a row, in
                order (0: no target there). Gives the cross-entropy loss over the whole catalog, or over the
                positive and `negative_ids` when those are given.
            candidate_ids (`(batch, num_candidates)`, *optional*): Score these items for the last output token of
                each row (0 = padding, scored `-inf`); without them the whole catalog is scored.
            negative_ids (`(batch, num_output_tokens, k)`, *optional*): Sampled negatives for each labelled output
                token (sampled softmax instead of the full catalog).
            cf_score_weight (`float`, *optional*): Overrides `config.cf_score_weight` for `scores` (0: the pure
                head). The loss is the head's alone either way.
            output_cf_scores (`bool`, defaults to `False`): Also return the CF model's scores of the same items.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        inputs_embeds, states, _ = self.get_inputs_embeds(input_ids, cf_input_ids, item_ids, item_embedding_source)
        position_ids = None if attention_mask is None else positions_from_attention_mask(attention_mask)
        decoder = self.language_model.get_decoder()
        hidden = decoder(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
            return_dict=True,
            **lm_kwargs,
        ).last_hidden_state
        output_mask = input_ids == self.config.output_token_id
        head_dtype = self.user_head.linear_1.weight.dtype
        users = self.user_head(hidden[output_mask].to(head_dtype))  # (num_output_tokens, size)
        if self.cf_skip is not None:  # states are in the same row-major output-token order
            users = users + self.cf_skip(states.to(head_dtype))
        last_users = users[output_mask.sum(1).cumsum(0) - 1]  # each row's last output token (row-major order)
        catalog_vectors = None  # the item head over the whole catalog, computed once when needed
        if candidate_ids is not None:
            check_item_ids(candidate_ids, self.recommender.num_items, what="candidate item id")
            scores = self.score_items(last_users, candidate_ids).masked_fill(candidate_ids == 0, float("-inf"))
        else:
            catalog_vectors = self.get_item_vectors()
            scores = self.score_users(last_users, catalog_vectors)
        weight = self.config.cf_score_weight if cf_score_weight is None else float(cf_score_weight)
        cf_scores = None
        if weight or output_cf_scores:
            cf_scores = self.cf_item_scores(states[output_mask.sum(1).cumsum(0) - 1], candidate_ids)
            if weight:
                scores = scores.float() + weight * cf_scores.float()

        loss = ranking_loss = distillation_loss = uniformity_loss = None
        if labels is not None:
            step_labels = self._step_labels(labels, output_mask)
            labelled = step_labels != 0
            if not bool(labelled.any()):
                raise ValueError("labels hold no target (every entry is 0).")
            if negative_ids is not None:
                step_negatives = self._step_values(negative_ids, output_mask)[labelled]
                pool = torch.cat([step_labels[labelled, None], step_negatives], dim=1)
                check_item_ids(pool, self.recommender.num_items, what="negative item id")
                logits = self.score_items(users[labelled], pool)
                ranking_loss = F.cross_entropy(logits.float(), torch.zeros_like(pool[:, 0]))
            else:
                logits = self.score_users(users[labelled], catalog_vectors)
                ranking_loss = F.cross_entropy(logits.float(), step_labels[labelled])
            loss = ranking_loss
            user_unit = F.normalize(users[labelled].float(), dim=-1)
            units = [user_unit]
            if self.cf_user_head is not None:
                cf_unit = F.normalize(self.cf_user_head(states[labelled].to(head_dtype)).float(), dim=-1)
                distillation_loss = (user_unit - cf_unit).pow(2).sum(-1).mean()
                loss = loss + self.config.distillation_weight * distillation_loss
                units.append(cf_unit)
            if self.config.uniformity_weight > 0:
                uniformity_loss = sum(uniformity(unit) for unit in units) / len(units)
                loss = loss + self.config.uniformity_weight * uniformity_loss
        output = ALLMRecRankingOutput(
            loss=loss,
            scores=scores,
            cf_scores=cf_scores if output_cf_scores else None,
            user_embeddings=users,
            ranking_loss=ranking_loss,
            distillation_loss=distillation_loss,
            uniformity_loss=uniformity_loss,
        )
        return output if return_dict else output.to_tuple()

    @staticmethod
    def _step_values(values: torch.Tensor, output_mask: torch.Tensor) -> torch.Tensor:
        """Per-row values `(batch, n, ...)` given for the first `n` output tokens of each row, in row-major
        output-token order `(num_output_tokens, ...)`."""
        counts = output_mask.sum(1)
        if values.shape[1] < int(counts.max()):
            raise ValueError(
                f"labels / negative_ids have {values.shape[1]} entries per row but a row has {int(counts.max())} "
                "output tokens."
            )
        slots = torch.arange(values.shape[1], device=values.device)[None, :] < counts[:, None]
        return values[slots]

    def _step_labels(self, labels: torch.Tensor, output_mask: torch.Tensor) -> torch.Tensor:
        step_labels = self._step_values(labels.to(output_mask.device), output_mask)
        check_item_ids(step_labels, self.recommender.num_items, what="label item id")
        return step_labels

    def score_items(self, users: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """Scores `(n, k)` of each user vector `(n, ranking_hidden_size)` for its own `k` items `(n, k)`."""
        scores = torch.einsum("nd,nkd->nk", users, self.get_item_vectors(item_ids)) / self.config.temperature
        return scores + self._item_bias(item_ids)

    def cf_item_scores(self, cf_states: torch.Tensor, candidate_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The CF model's own scores from its states `(n, cf_hidden)`: `(n, k)` of `candidate_ids` (0 = padding,
        `-inf`), or `(n, num_items + 1)` over the catalog (column 0 `-inf`), as the CF model scores them."""
        cf_states = cf_states.float()
        if candidate_ids is not None:
            item_embeddings = self.cf_model.get_item_embeddings(candidate_ids).float()
            scores = torch.einsum("nd,nkd->nk", cf_states, item_embeddings)
            return scores.masked_fill(candidate_ids == 0, float("-inf"))
        scores = cf_states @ self.cf_model.get_item_embeddings().float().T
        scores[:, 0] = float("-inf")
        return scores

    def score_users(self, users: torch.Tensor, item_vectors: torch.Tensor | None = None) -> torch.Tensor:
        """Scores `(n, num_items + 1)` of user vectors `(n, ranking_hidden_size)` over the whole catalog; column 0
        (padding) is `-inf`. `item_vectors` (from `get_item_vectors()`) saves recomputing the item head."""
        item_vectors = self.get_item_vectors() if item_vectors is None else item_vectors
        scores = users @ item_vectors.T / self.config.temperature + self._item_bias()
        scores[:, 0] = float("-inf")
        return scores

    @torch.no_grad()
    def score_candidates(self, input_ids, attention_mask=None, cf_input_ids=None, item_ids=None,
                         candidate_ids=None, cf_score_weight=None, **kwargs) -> torch.Tensor:  # fmt: skip
        """Scores `(batch, num_candidates)` of `candidate_ids` for each prompt's user (one LM forward per user);
        without `candidate_ids`, `(batch, num_items + 1)` over the whole catalog; `config.cf_score_weight` (or
        `cf_score_weight`) times the CF model's scores included. Other batch keys are ignored."""
        return self(
            input_ids=input_ids,
            attention_mask=attention_mask,
            cf_input_ids=cf_input_ids,
            item_ids=item_ids,
            candidate_ids=candidate_ids,
            cf_score_weight=cf_score_weight,
        ).scores

    @torch.no_grad()
    def recommend(
        self, processor, histories: list[list[int]], k: int = 10, exclude_seen: bool = True
    ) -> list[list[dict]]:
        """The top `k` items of the whole catalog for each history, best first, from one LM forward per user (no
        CF pre-retrieval), as dicts with `item` (catalog index), `item_id` (external id), `title` and `score`.
        Items in the history are left out unless `exclude_seen=False`.

        Example (`model` and `processor` loaded with `from_pretrained` from a ranking-head checkpoint):

        ```python
        >>> model.recommend(processor, [[1, 2, 3]], k=2)  # doctest: +SKIP
        [[{'item': 4, 'item_id': '4', 'title': 'Casino (1995)', 'score': 3.1}, {...}]]
        ```
        """
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}.")
        self.check_processor(processor)
        histories = [[int(i) for i in h] for h in histories]
        device = self.item_head.linear_1.weight.device
        batch = processor.ranking_inputs(histories)
        scores = self.score_candidates(**{key: value.to(device) for key, value in batch.items()}).float()
        exclude_seen_items(scores, histories if exclude_seen else [[] for _ in histories], k)
        top = scores.topk(k, dim=1)
        return ranked_items(processor.catalog, top.indices.tolist(), top.values, k)

    @torch.no_grad()
    def rank_candidates(self, processor, histories: list[list[int]], candidates: list[list[int]],
                        k: int | None = None) -> list[list[dict]]:  # fmt: skip
        """Rank each user's own candidates (catalog indices) by the head's scores: the best `k` (default: all),
        best first, as dicts with `item`, `item_id`, `title` and `score`."""
        self.check_processor(processor)
        if len(candidates) != len(histories):
            raise ValueError(f"{len(candidates)} candidate lists for {len(histories)} histories.")
        device = self.item_head.linear_1.weight.device
        width = max([len(c) for c in candidates] + [1])
        candidate_ids = torch.tensor([list(c) + [0] * (width - len(c)) for c in candidates], device=device)
        batch = processor.ranking_inputs([[int(i) for i in h] for h in histories])
        batch = {key: value.to(device) for key, value in batch.items()}
        scores = self.score_candidates(**batch, candidate_ids=candidate_ids)
        return ranked_items(processor.catalog, [list(c) for c in candidates], scores.float(), k)

    def generate(self, *args, **kwargs):
        raise TypeError(
            "ALLMRecForItemRanking scores items and generates no text: use `score_candidates` (or load the "
            "checkpoint of an ALLMRecForConditionalGeneration for title generation)."
        )

    def check_processor(self, processor) -> None:
        super().check_processor(processor)
        token_id = getattr(processor, "output_token_id", None)
        if token_id is not None and token_id != self.config.output_token_id:
            raise ValueError(
                f"the processor's output_token_id is {token_id} but the model's config says "
                f"{self.config.output_token_id}."
            )


__all__ = ["ALLMRecForItemRanking", "ALLMRecRankingOutput"]
