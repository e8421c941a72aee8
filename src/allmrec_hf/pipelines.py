"""The `next-item-recommendation` pipeline: a history in (item indices or titles), ranked items out."""

from __future__ import annotations

from typing import Any

from transformers import Pipeline


class NextItemRecommendationPipeline(Pipeline):
    """Recommend the next items for a user's history with an A-LLMRec model.

    Without `candidates`, the CF model retrieves `num_retrieved` unseen items from the whole catalog and A-LLMRec
    reranks them (`model.recommend`); with `candidates`, those are ranked. A ranking head
    (`ALLMRecForItemRanking`) scores the whole catalog itself, one forward per history. Items may be given as
    catalog indices or titles; an unknown title raises an error listing the closest catalog titles.

    Example (`model` and `processor` as built in the README, or loaded with `from_pretrained`):

    ```python
    >>> from transformers import pipeline
    >>> recommender = pipeline("next-item-recommendation", model=model, processor=processor)  # doctest: +SKIP
    >>> recommender(["Toy Story (1995)", "Heat (1995)"], k=2)  # doctest: +SKIP
    [{'item': 3, 'item_id': '3', 'title': 'Babe (1995)', 'score': -9.2}, {...}]
    ```

    A list of histories gives a list of results.
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(
                "the next-item-recommendation pipeline needs the model's ALLMRecProcessor: pass processor=... "
                "(ALLMRecProcessor.from_pretrained(<checkpoint>))."
            )
        self.model.check_processor(self.processor)

    @property
    def _ranking_head(self) -> bool:
        """The model is a ranking head (`ALLMRecForItemRanking`): it scores the whole catalog itself."""
        return getattr(self.model.config, "model_type", None) == "allmrec_ranking"

    def _sanitize_parameters(self, k=None, num_retrieved=None, candidates=None, reduction=None, **kwargs):
        if kwargs:
            raise TypeError(f"unexpected arguments: {sorted(kwargs)}.")
        if self._ranking_head and (num_retrieved is not None or reduction is not None):
            raise ValueError(
                "num_retrieved and reduction do not apply to a ranking head: it scores the whole catalog itself, "
                "with no CF pre-retrieval and no title likelihood."
            )
        for name, value in (("k", k), ("num_retrieved", num_retrieved)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer (how many items to return), got {value!r}.")
        if isinstance(candidates, str):
            raise ValueError(f"candidates must be a list of items (indices or titles), got the string {candidates!r}.")
        preprocess = {} if candidates is None else {"candidates": candidates}
        forward = {
            key: value
            for key, value in (("k", k), ("num_retrieved", num_retrieved), ("reduction", reduction))
            if value is not None
        }
        return preprocess, forward, {}

    def __call__(self, histories, **kwargs):
        if isinstance(histories, (str, int)):  # one item: a one-item history (a string is not split in characters)
            histories = [histories]
        single = not histories or not isinstance(histories[0], (list, tuple))
        results = super().__call__([list(histories)] if single else [list(h) for h in histories], **kwargs)
        return results[0] if single else results

    def _resolve(self, value: Any, what: str) -> int:
        catalog = self.processor.catalog
        if isinstance(value, str):
            found = catalog.find_title(value)
            if len(found) == 1:
                return found[0]
            if found:
                raise ValueError(f"{what} {value!r} is the title of several items {found}: give the item index.")
            closest = catalog.closest_titles(value)
            hint = f"; the closest catalog titles are {closest}" if closest else ""
            raise ValueError(f"Unknown {what} {value!r}{hint}.")
        return catalog.check_index(value, what=what)

    def preprocess(self, history, candidates=None):
        items = [self._resolve(value, "history item") for value in history]
        if candidates is not None:
            candidates = [self._resolve(value, "candidate") for value in candidates]
        return {"history": items, "candidates": candidates}

    def _forward(self, inputs, k: int = 10, num_retrieved: int = 20, reduction: str = "sum"):
        history, candidates = inputs["history"], inputs["candidates"]
        if self._ranking_head:
            if candidates is None:
                return self.model.recommend(self.processor, [history], k=k)[0]
            return self.model.rank_candidates(self.processor, [history], [candidates], k=k)[0]
        if candidates is None:
            return self.model.recommend(
                self.processor, [history], k=k, num_retrieved=max(num_retrieved, k), reduction=reduction
            )[0]
        return self.model.rank_candidates(self.processor, [history], [candidates], k=k, reduction=reduction)[0]

    def postprocess(self, model_outputs):
        return model_outputs
