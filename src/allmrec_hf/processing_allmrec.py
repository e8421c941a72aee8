"""`ALLMRecProcessor`: interaction histories and candidate lists in, A-LLMRec model inputs out."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from transformers import AddedToken, BatchFeature, ProcessorMixin
from transformers.utils import logging

from .catalog import CATALOG_FILE_NAME, ItemCatalog, normalize_title

logger = logging.get_logger(__name__)

USER_TOKEN = "[UserRep]"
HISTORY_TOKEN = "[HistoryEmb]"
CANDIDATE_TOKEN = "[CandidateEmb]"
OUTPUT_TOKEN = "[RecOutput]"  # the ranking head's output token (`ALLMRecForItemRanking`)
PLACEHOLDER_TOKENS = (USER_TOKEN, HISTORY_TOKEN, CANDIDATE_TOKEN, OUTPUT_TOKEN)
# `save_pretrained(push_to_hub=True, ...)` keyword arguments that go to `push_to_hub`.
_PUSH_TO_HUB_KWARGS = ("commit_message", "commit_description", "private", "token", "revision", "create_pr")


@dataclass
class PromptTemplate:
    r"""
    The text of A-LLMRec's prompt, with the domain's nouns and verbs as fields. The defaults reproduce the
    paper's movie prompt; other domains change `noun`/`verb`/`past_verb` (`game`/`play`/`played`,
    `item`/`buy`/`bought`, ...) or any of the texts.

    `prompt` and `prompt_without_candidates` may use `{user}` (the user placeholder), `{history}`,
    `{candidates}`, `{noun}`, `{verb}` and `{past_verb}`. `history_item` and `candidate_item` use `{title}` and
    `{item}` (the item placeholder); `answer` uses `{title}`.

    The ranking head's prompt (`ALLMRecProcessor.ranking_inputs`) is `ranking_prompt` with `{history}` the last
    `ranking_history_length` items (50), each as `ranking_item`: `{title}`, `{item}` and `{output}` (the output
    token whose hidden state scores the next item; it must be there, with `{title}`, `{item}` or both). By default
    each item is its item embedding and output token (`' {item}{output}'`); `with_titles()` also names it (measured
    worse on MovieLens-100k, with a prompt about 3 times as long). There `{title}` is the item's
    `ranking_item_text`, rendered from the catalog's fields (`"{title}"` by default; `"{title}, {genres}"` also
    shows MovieLens genres; a field an item lacks renders empty, with its separator).

    Example:

    ```python
    >>> from allmrec_hf import PromptTemplate
    >>> PromptTemplate(noun="game", verb="play", past_verb="played").noun
    'game'
    ```
    """

    prompt: str = (
        "{user} is a user representation. This user has {past_verb} {history} in the previous. "
        "Recommend one next {noun} for this user to {verb} next from the following {noun} title set, "
        "{candidates}. The recommendation is"
    )
    prompt_without_candidates: str = (
        "{user} is a user representation. This user has {past_verb} {history} in the previous. "
        "Recommend one next {noun} for this user to {verb} next. The recommendation is"
    )
    history_item: str = '"{title}"{item}'
    candidate_item: str = '"{title}"{item}'
    separator: str = ","
    answer: str = ' "{title}"'
    empty_history: str = "nothing yet"
    noun: str = "movie"
    verb: str = "watch"
    past_verb: str = "watched"
    history_length: int = 10
    ranking_prompt: str = "This user has {past_verb}{history}"
    ranking_item: str = " {item}{output}"
    ranking_item_text: str = "{title}"
    ranking_history_length: int = 50

    def __post_init__(self):
        for name in ("prompt", "prompt_without_candidates"):
            text = getattr(self, name)
            if "{history}" not in text:
                raise ValueError(f"PromptTemplate.{name} must contain '{{history}}', got {text!r}.")
        if "{candidates}" not in self.prompt:
            raise ValueError(f"PromptTemplate.prompt must contain '{{candidates}}', got {self.prompt!r}.")
        for name in ("history_item", "candidate_item", "answer"):
            if "{title}" not in getattr(self, name):
                raise ValueError(f"PromptTemplate.{name} must contain '{{title}}', got {getattr(self, name)!r}.")
        if not isinstance(self.history_length, int) or self.history_length < 0:
            raise ValueError(
                f"PromptTemplate.history_length must be a non-negative integer, got {self.history_length!r}."
            )
        if "{history}" not in self.ranking_prompt:
            raise ValueError(f"PromptTemplate.ranking_prompt must contain '{{history}}', got {self.ranking_prompt!r}.")
        if "{output}" not in self.ranking_item or not ("{title}" in self.ranking_item or "{item}" in self.ranking_item):
            raise ValueError(
                "PromptTemplate.ranking_item must contain '{output}' and at least one of '{title}' and '{item}', "
                f"got {self.ranking_item!r}."
            )
        if not isinstance(self.ranking_item_text, str) or "{title}" not in self.ranking_item_text:
            raise ValueError(
                f"PromptTemplate.ranking_item_text must contain '{{title}}', got {self.ranking_item_text!r}."
            )
        if not isinstance(self.ranking_history_length, int) or self.ranking_history_length < 1:
            raise ValueError(
                "PromptTemplate.ranking_history_length must be a positive integer, "
                f"got {self.ranking_history_length!r}."
            )

    @classmethod
    def without_embeddings(cls, **overrides: Any) -> PromptTemplate:
        """The same prompt with titles only: no user representation and no item embeddings (the paper's
        LLM-only baseline).

        >>> "{user}" in PromptTemplate.without_embeddings().prompt
        False
        """
        values: dict[str, Any] = {
            "prompt": (
                "This user has {past_verb} {history} in the previous. Recommend one next {noun} for this user to "
                "{verb} next from the following {noun} title set, {candidates}. The recommendation is"
            ),
            "prompt_without_candidates": (
                "This user has {past_verb} {history} in the previous. Recommend one next {noun} for this user to "
                "{verb} next. The recommendation is"
            ),
            "history_item": '"{title}"',
            "candidate_item": '"{title}"',
            "ranking_item": ' "{title}"{output}',
        }
        values.update(overrides)
        return cls(**values)

    @classmethod
    def with_titles(cls, **overrides: Any) -> PromptTemplate:
        """The ranking prompt that also names each history item (its `ranking_item_text`) before its item embedding
        and output token.

        >>> PromptTemplate.with_titles().ranking_item
        ' "{title}"{item}{output}'
        """
        return cls(**{"ranking_item": ' "{title}"{item}{output}', **overrides})

    @classmethod
    def without_titles(cls, **overrides: Any) -> PromptTemplate:
        """The ranking prompt with item embeddings and no titles (the default): each history item is its
        `[HistoryEmb]` and an output token, so the LM reads the CF side alone.

        >>> PromptTemplate.without_titles().ranking_item
        ' {item}{output}'
        """
        return cls(**{"ranking_item": " {item}{output}", **overrides})

    @property
    def uses_embeddings(self) -> bool:
        """Whether the prompt has any placeholder (user representation or item embeddings)."""
        return "{user}" in self.prompt + self.prompt_without_candidates or any(
            "{item}" in text for text in (self.history_item, self.candidate_item)
        )

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptTemplate:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown PromptTemplate fields: {sorted(unknown)} (known: {sorted(known)}).")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CandidateMatch:
    """How a generated answer maps to the candidate list.

    `status` is `"exact"` (the normalised answer equals one candidate's title), `"substring"` (exactly one
    candidate title appears inside the answer: the paper's rule), `"ambiguous"` (several candidates match;
    `item_id` is `None`, `matches` lists them) or `"none"`."""

    item_id: int | None
    status: str
    matches: list[int]
    text: str


class ALLMRecProcessor(ProcessorMixin):
    r"""
    Turns interaction histories (catalog indices, oldest first) and candidate lists into A-LLMRec inputs: the
    prompt's `input_ids`/`attention_mask` with placeholder tokens, `labels` on the answer when a target is
    given, the CF encoder's `cf_input_ids`, the `item_ids` of every item placeholder in order, and for candidate
    lists `candidate_ids` plus every candidate's answer tokens (`candidate_input_ids`) for ranking.

    Args:
        tokenizer: The causal LM's tokenizer. The placeholder tokens are added to it when missing.
        text_encoder_tokenizer: The sentence encoder's tokenizer (for item texts in stage 1 and the text path).
        catalog ([`ItemCatalog`]): The items; saved as `item_catalog.jsonl` beside the processor config.
        prompt_template ([`PromptTemplate`] or `dict`): The prompt's text.
        max_history_length (`int`, defaults to 50): Items of history given to the CF encoder.
        item_text_template (`str`): Item text for the sentence encoder, from catalog fields.
        item_text_max_length (`int`, defaults to 128): Sentence-encoder tokens per item text.

    Example (`tokenizer` and `catalog` as built in the README):

    ```python
    >>> processor = ALLMRecProcessor(tokenizer, tokenizer, catalog)  # doctest: +SKIP
    >>> batch = processor(histories=[[1, 2, 3]], candidates=[[4, 5, 6]], targets=[5])  # doctest: +SKIP
    >>> sorted(batch.keys())  # doctest: +SKIP
    ['attention_mask', 'candidate_attention_mask', 'candidate_ids', 'candidate_input_ids', 'cf_input_ids',
     'input_ids', 'item_ids', 'labels']
    ```
    """

    tokenizer_class = "AutoTokenizer"
    text_encoder_tokenizer_class = "AutoTokenizer"

    def __init__(
        self,
        tokenizer=None,
        text_encoder_tokenizer=None,
        catalog: ItemCatalog | None = None,
        prompt_template: PromptTemplate | dict | None = None,
        max_history_length: int = 50,
        item_text_template: str = "{title}, {description}",
        item_text_max_length: int = 128,
        **kwargs,
    ):
        if tokenizer is None or text_encoder_tokenizer is None:
            raise ValueError("ALLMRecProcessor needs both `tokenizer` and `text_encoder_tokenizer`.")
        if text_encoder_tokenizer is tokenizer:  # two roles, two objects (the LM's gets the placeholders)
            text_encoder_tokenizer = copy.deepcopy(tokenizer)
        missing = [t for t in PLACEHOLDER_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if isinstance(prompt_template, dict):
            prompt_template = PromptTemplate.from_dict(prompt_template)
        self.prompt_template = prompt_template or PromptTemplate()
        if not isinstance(max_history_length, int) or max_history_length < 1:
            raise ValueError(f"max_history_length must be a positive integer, got {max_history_length!r}.")
        self.max_history_length = max_history_length
        if "{title}" not in item_text_template:
            raise ValueError(f"item_text_template must contain '{{title}}', got {item_text_template!r}.")
        self.item_text_template = item_text_template
        self.item_text_max_length = item_text_max_length
        self.catalog = catalog
        super().__init__(tokenizer, text_encoder_tokenizer, **kwargs)

    # ------------------------------------------------------------------------------------------ ids
    @property
    def user_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(USER_TOKEN)

    @property
    def history_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(HISTORY_TOKEN)

    @property
    def candidate_token_id(self) -> int:
        return self.tokenizer.convert_tokens_to_ids(CANDIDATE_TOKEN)

    @property
    def output_token_id(self) -> int:
        """The ranking head's output token (`ALLMRecRankingConfig.output_token_id`)."""
        return self.tokenizer.convert_tokens_to_ids(OUTPUT_TOKEN)

    @property
    def placeholder_token_ids(self) -> dict[str, int]:
        """The ids to put in `ALLMRecConfig` (`user_token_id`, `history_token_id`, `candidate_token_id`)."""
        return {
            "user_token_id": self.user_token_id,
            "history_token_id": self.history_token_id,
            "candidate_token_id": self.candidate_token_id,
        }

    def _require_catalog(self) -> ItemCatalog:
        if self.catalog is None:
            raise ValueError("this processor has no catalog: pass `catalog=ItemCatalog(...)`.")
        return self.catalog

    # ------------------------------------------------------------------------------------------ prompts
    def _title(self, index: int) -> str:
        return _without_placeholders(self.catalog.title(index), f"item {index}'s title")

    def ranking_item_text(self, index: int) -> str:
        """How the ranking prompt names item `index`: the template's `ranking_item_text` over the catalog's fields
        (checked against the catalog's fields by `ranking_inputs`, once per call)."""
        template = self.prompt_template.ranking_item_text
        if template == "{title}":
            return self._title(index)
        return _without_placeholders(self.catalog.text(index, template), f"item {index}'s text")

    def check_ranking_item_text(self) -> None:
        """Refuse a `ranking_item_text` that names a field the catalog does not have (naming it and those it has)."""
        self._require_catalog().check_text_template(
            self.prompt_template.ranking_item_text, "PromptTemplate.ranking_item_text"
        )

    def history_text(self, history: Sequence[int]) -> tuple[str, list[int]]:
        """The prompt's history part for one user (the last `history_length` titles, each followed by its item
        placeholder when the template has one) and the item ids of those placeholders."""
        template = self.prompt_template
        shown = list(history)[-template.history_length :] if template.history_length else []
        if not shown:
            return template.empty_history, []
        text = template.separator.join(
            template.history_item.format(title=self._title(i), item=HISTORY_TOKEN) for i in shown
        )
        return text, (shown if "{item}" in template.history_item else [])

    def build_prompt(self, history: Sequence[int], candidates: Sequence[int] | None = None) -> tuple[str, list[int]]:
        """The prompt text for one user and the item ids of its item placeholders, in order."""
        template = self.prompt_template
        history_text, placeholder_items = self.history_text(history)
        values = {
            "user": USER_TOKEN,
            "history": history_text,
            "noun": template.noun,
            "verb": template.verb,
            "past_verb": template.past_verb,
        }
        if candidates is None:
            return template.prompt_without_candidates.format(**values), placeholder_items
        values["candidates"] = template.separator.join(
            template.candidate_item.format(title=self._title(i), item=CANDIDATE_TOKEN) for i in candidates
        )
        if "{item}" in template.candidate_item:
            placeholder_items = placeholder_items + list(candidates)
        return template.prompt.format(**values), placeholder_items

    def instruct(
        self,
        histories: Sequence[Sequence[int]],
        instruction: str,
        include_history: bool = False,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Inputs for free-form generation about users: the user representation (and, with `include_history`, the
        recent history titles with their item embeddings) followed by a user-written instruction, e.g. the
        paper's demo `"Describe this user's favourite genres."`. Pass the result to `model.generate`.

        Example (`processor` and `model` as built in the README):

        ```python
        >>> batch = processor.instruct([[1, 2]], "Name this user's favourite genres.")  # doctest: +SKIP
        >>> out = model.generate(**batch, max_new_tokens=20)  # doctest: +SKIP
        >>> processor.batch_decode(out, skip_special_tokens=True)  # doctest: +SKIP
        ```
        """
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError('instruction must be a non-empty string, e.g. "Describe this user\'s favourite genres."')
        histories = _as_lists(histories)
        self._check_batch(histories, None, None)
        template = self.prompt_template
        sequences, item_rows = [], []
        for history in histories:
            text = f"{USER_TOKEN} is a user representation."
            items: list[int] = []
            if include_history:
                history_text, items = self.history_text(history)
                text += f" This user has {template.past_verb} {history_text} in the previous."
            sequences.append(self.tokenizer(f"{text} {instruction.strip()}")["input_ids"])
            item_rows.append(items)
        return _id_batch(self._prompt_fields(sequences, histories, item_rows, "left"), return_tensors)

    def ranking_inputs(
        self,
        histories: Sequence[Sequence[int]],
        targets: Sequence[int] | None = None,
        return_tensors: str | None = "pt",
    ) -> BatchFeature:
        """Inputs for the ranking head ([`ALLMRecForItemRanking`]): each user's last `ranking_history_length` items,
        each followed by its item placeholder and an output token (a cold user gets one output token), left-padded.

        With `targets` (each user's next item), `labels` holds the item each output token should score highest:
        the next shown item, and the target after the last one, so one forward trains every shown prefix.

        Example (`processor` and `model` as built in the README):

        ```python
        >>> batch = processor.ranking_inputs([[1, 2, 3]], targets=[4])  # doctest: +SKIP
        >>> batch["labels"].tolist()  # doctest: +SKIP
        [[2, 3, 4]]
        >>> model.score_candidates(**processor.ranking_inputs([[1, 2, 3]]), candidate_ids=...)  # doctest: +SKIP
        ```
        """
        template = self.prompt_template
        if template.ranking_history_length > self.max_history_length:
            raise ValueError(
                f"PromptTemplate.ranking_history_length ({template.ranking_history_length}) exceeds "
                f"max_history_length ({self.max_history_length}): every shown item needs its CF state."
            )
        histories, targets = _as_lists(histories), _as_lists(targets)
        self._check_batch(histories, None, targets)
        placeholder = HISTORY_TOKEN if "{item}" in template.ranking_item else ""
        shows_text = "{title}" in template.ranking_item
        if shows_text:
            self.check_ranking_item_text()
        sequences, item_rows, label_rows = [], [], []
        for row, history in enumerate(histories):
            shown = list(history)[-template.ranking_history_length :]
            items = "".join(
                template.ranking_item.format(
                    title=self.ranking_item_text(i) if shows_text else "", item=placeholder, output=OUTPUT_TOKEN
                )
                for i in shown
            )
            text = template.ranking_prompt.format(
                history=items or OUTPUT_TOKEN, noun=template.noun, verb=template.verb, past_verb=template.past_verb
            )
            sequences.append(self.tokenizer(text)["input_ids"])
            item_rows.append(shown if placeholder else [])
            if targets is not None:
                label_rows.append(shown[1:] + [targets[row]])
        data = self._prompt_fields(sequences, histories, item_rows, "left")
        if targets is not None:
            data["labels"] = _pad(label_rows, 0, "right")
        return _id_batch(data, return_tensors)

    def _prompt_fields(self, sequences, histories, item_rows, padding_side: str) -> dict[str, Any]:
        """The fields every batch has: padded prompt ids and mask, the CF histories and the placeholder item ids."""
        return {
            "input_ids": _pad(sequences, self.tokenizer.pad_token_id, padding_side),
            "attention_mask": _pad([[1] * len(s) for s in sequences], 0, padding_side),
            "cf_input_ids": _pad([list(h)[-self.max_history_length :] for h in histories], 0, "left"),
            "item_ids": _pad(item_rows, 0, "right"),
        }

    def answer_ids(self, item: int) -> list[int]:
        """Token ids of the answer naming `item` (the title in the answer template, then end-of-sequence)."""
        text = self.prompt_template.answer.format(title=self._title(item))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids + [self.tokenizer.eos_token_id]

    def _check_batch(self, histories, candidates, targets) -> None:
        catalog = self._require_catalog()
        if isinstance(histories, (str, bytes)) or not isinstance(histories, Sequence):
            raise TypeError("histories must be a list of lists of catalog item indices.")
        for row, history in enumerate(histories):
            if isinstance(history, (int, str)):
                raise TypeError(f"histories[{row}] is {history!r}: histories must be a list of lists of item indices.")
            for item in history:
                catalog.check_index(item, what=f"history item (row {row})")
        if candidates is not None:
            if len(candidates) != len(histories):
                raise ValueError(f"{len(candidates)} candidate lists for {len(histories)} histories.")
            for row, row_candidates in enumerate(candidates):
                if len(row_candidates) == 0:
                    raise ValueError(f"candidate list of row {row} is empty.")
                seen: set[int] = set()
                for item in row_candidates:
                    catalog.check_index(item, what=f"candidate item (row {row})")
                    if item in seen:
                        raise ValueError(f"duplicate candidate {item} in row {row}.")
                    seen.add(item)
        if targets is not None:
            if len(targets) != len(histories):
                raise ValueError(f"{len(targets)} targets for {len(histories)} histories.")
            for row, target in enumerate(targets):
                catalog.check_index(target, what=f"target item (row {row})")
                if candidates is not None and target not in candidates[row]:
                    raise ValueError(
                        f"target {target} of row {row} is not among its candidates {list(candidates[row])}."
                    )

    def __call__(
        self,
        histories: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[int]] | None = None,
        targets: Sequence[int] | None = None,
        padding_side: str = "left",
        return_tensors: str | None = "pt",
        return_candidate_tokens: bool = True,
        **kwargs,
    ) -> BatchFeature:
        """Build a batch.

        Args:
            histories: Each user's interacted catalog indices, oldest first (may be empty: a cold user).
            candidates: Optional candidate list per user (no duplicates); shown in the given order.
            targets: Optional next item per user; adds the answer tokens and `labels` (-100 elsewhere).
                With candidates, the target must be one of them.
            padding_side: `"left"` (default; needed by `generate` and `score_candidates`) or `"right"`.
            return_candidate_tokens: With candidates, also tokenise every candidate's answer
                (`candidate_input_ids`, `candidate_attention_mask`: what `score_candidates` reads). Training needs
                only the prompt (`False` skips them).
        """
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}.")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}.")
        histories, candidates, targets = _as_lists(histories), _as_lists(candidates), _as_lists(targets)
        self._check_batch(histories, candidates, targets)
        sequences, label_rows, item_rows = [], [], []
        for row, history in enumerate(histories):
            prompt, items = self.build_prompt(history, None if candidates is None else candidates[row])
            prompt_ids = self.tokenizer(prompt)["input_ids"]
            labels = [-100] * len(prompt_ids)
            if targets is not None:
                answer = self.answer_ids(targets[row])
                prompt_ids = prompt_ids + answer
                labels = labels + answer
            sequences.append(prompt_ids)
            label_rows.append(labels)
            item_rows.append(items)

        pad_id = self.tokenizer.pad_token_id
        data = self._prompt_fields(sequences, histories, item_rows, padding_side)
        if targets is not None:
            data["labels"] = _pad(label_rows, -100, padding_side)
        if candidates is not None:
            data["candidate_ids"] = _pad([list(c) for c in candidates], 0, "right")
        if candidates is not None and return_candidate_tokens:
            answers = {item: self.answer_ids(item) for row in candidates for item in row}
            width = max(len(a) for a in answers.values())
            slots = max(len(c) for c in candidates)
            data["candidate_input_ids"] = [
                _pad([answers[i] for i in row] + [[]] * (slots - len(row)), pad_id, "right", width)
                for row in candidates
            ]
            data["candidate_attention_mask"] = [
                _pad([[1] * len(answers[i]) for i in row] + [[]] * (slots - len(row)), 0, "right", width)
                for row in candidates
            ]
        return _id_batch(data, return_tensors)

    def tokenize_item_texts(self, item_ids: Sequence[int], return_tensors: str | None = "pt"):
        """Tokenise the catalog text of `item_ids` with the sentence encoder's tokenizer."""
        catalog = self._require_catalog()
        texts = [catalog.text(catalog.check_index(i), self.item_text_template) for i in item_ids]
        return self.text_encoder_tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.item_text_max_length,
            return_tensors=return_tensors,
        )

    # ------------------------------------------------------------------------------------------ decoding
    def batch_decode(self, *args, **kwargs) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def match_candidates(
        self, texts: Sequence[str], candidate_ids: Sequence[Sequence[int]] | torch.Tensor
    ) -> list[CandidateMatch]:
        """Map generated answers to candidates: a normalised exact title match first, then the paper's
        substring rule; several matches are reported as `"ambiguous"`, none as `"none"`."""
        catalog = self._require_catalog()
        if torch.is_tensor(candidate_ids):
            candidate_ids = candidate_ids.tolist()
        if len(texts) != len(candidate_ids):
            raise ValueError(f"{len(texts)} texts for {len(candidate_ids)} candidate lists.")
        results = []
        for text, row in zip(texts, candidate_ids, strict=True):
            row = [int(i) for i in row if int(i) != 0]
            answer = normalize_title(text)
            titles = {item: normalize_title(catalog.title(item)) for item in row}
            exact = [item for item, title in titles.items() if title == answer]
            if len(exact) == 1:
                results.append(CandidateMatch(exact[0], "exact", exact, text))
                continue
            if len(exact) > 1:
                results.append(CandidateMatch(None, "ambiguous", exact, text))
                continue
            inside = [item for item, title in titles.items() if title and title in answer]
            if len(inside) > 1:
                # A title contained in another matching title ("Heat" in "Heat (1995)") is not a separate match.
                inside = [
                    i for i in inside if not any(titles[i] != titles[j] and titles[i] in titles[j] for j in inside)
                ]
            if len(inside) == 1:
                results.append(CandidateMatch(inside[0], "substring", inside, text))
            elif inside:
                results.append(CandidateMatch(None, "ambiguous", inside, text))
            else:
                results.append(CandidateMatch(None, "none", [], text))
        return results

    # ------------------------------------------------------------------------------------------ saving
    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("catalog", None)
        output["prompt_template"] = self.prompt_template.to_dict()
        return output

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save tokenizers, `processor_config.json` and the catalog (`item_catalog.jsonl`). With `push_to_hub=True`
        the saved processor, catalog included, is then uploaded by `push_to_hub` (`repo_id=`, `token=`,
        `commit_message=`, ...; `allmrec_hf.hub.push_to_hub` publishes it with the model and its card)."""
        if push_to_hub:
            # ProcessorMixin would upload only the files written after it lists the folder, which the catalog is not.
            repo_id = kwargs.pop("repo_id", os.path.basename(os.path.normpath(os.fspath(save_directory))))
            push_kwargs = {key: kwargs.pop(key) for key in _PUSH_TO_HUB_KWARGS if key in kwargs}
            saved = self.save_pretrained(save_directory, **kwargs)
            self.push_to_hub(repo_id, **push_kwargs)
            return saved
        os.makedirs(save_directory, exist_ok=True)
        if self.catalog is not None:
            self.catalog.save(save_directory)
        return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """Load tokenizers, settings and the catalog saved by `save_pretrained` (local folder or Hub id)."""
        from transformers.utils import cached_file

        catalog = kwargs.pop("catalog", None)
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if catalog is None:
            hub_kwargs = {k: kwargs[k] for k in ("revision", "cache_dir", "token", "local_files_only") if k in kwargs}
            path = cached_file(
                pretrained_model_name_or_path,
                CATALOG_FILE_NAME,
                _raise_exceptions_for_missing_entries=False,
                **hub_kwargs,
            )
            if path is not None:
                catalog = ItemCatalog.load(path)
                _check_catalog_against_model(catalog, path, pretrained_model_name_or_path, hub_kwargs)
        processor.catalog = catalog
        return processor

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "cf_input_ids", "item_ids", "labels"]


def _check_catalog_against_model(catalog: ItemCatalog, catalog_file: str, folder, hub_kwargs: dict) -> None:
    """Refuse a catalog saved beside a model (its `config.json`) whose CF encoder has another number of items."""
    from transformers.utils import cached_file

    config_file = cached_file(folder, "config.json", _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if config_file is None:
        return
    with open(config_file, encoding="utf-8") as handle:
        config = json.load(handle)
    num_items = ((config.get("aligner_config") or {}).get("cf_config") or {}).get("num_items")
    if num_items is not None and catalog.num_items != num_items:
        raise ValueError(
            f"{catalog_file} holds {catalog.num_items:,} items but the model beside it ({config_file}) has "
            f"{num_items:,} in its CF encoder: the catalog must be the one the model was trained with."
        )


def _without_placeholders(text: str, what: str) -> str:
    """`text`, refused when it holds one of the processor's placeholder tokens (it would be injected into)."""
    for token in PLACEHOLDER_TOKENS:
        if token in text:
            raise ValueError(f"{what} {text!r} contains the placeholder token {token}.")
    return text


def _as_lists(value):
    """Tensors and arrays of ids become (nested) lists of ints; lists pass through."""
    if value is not None and hasattr(value, "tolist") and not isinstance(value, list):
        return value.tolist()
    return value


def _id_batch(data: dict[str, Any], return_tensors: str | None) -> BatchFeature:
    batch = BatchFeature(data=data, tensor_type=return_tensors)
    for key, value in batch.items():
        # Every field holds ids; an all-empty one (cold users, no item placeholders) would become float.
        if torch.is_tensor(value) and value.is_floating_point():
            batch[key] = value.long()
    return batch


def _pad(rows: Sequence[Sequence[int]], value: int, side: str, width: int | None = None) -> list[list[int]]:
    width = max([len(r) for r in rows] + [0]) if width is None else width
    if side == "left":
        return [[value] * (width - len(r)) + list(r) for r in rows]
    return [list(r) + [value] * (width - len(r)) for r in rows]


__all__ = ["ALLMRecProcessor", "CandidateMatch", "PromptTemplate"]
