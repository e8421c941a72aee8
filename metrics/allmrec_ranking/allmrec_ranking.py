"""`evaluate` metric: Hit@K, NDCG@K and MRR of ranked candidate lists (wraps `allmrec_hf.evaluation.metrics`).

Load it from this folder, offline:

    import evaluate
    metric = evaluate.load("metrics/allmrec_ranking")
    metric.compute(predictions=[[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]], references=[1, 2], ks=[1, 3])
    # {'hit@1': 0.5, 'ndcg@1': 0.5, 'hit@3': 1.0, 'ndcg@3': 0.75, 'mrr': 0.6666666666666666}

`predictions` holds one list of scores per user (higher is better; every list the same length), `references`
the index of the target in that list. Ties count against the target.
"""

import datasets
import evaluate
import numpy as np

from allmrec_hf.evaluation.metrics import ranking_metrics, target_ranks

_DESCRIPTION = "Hit@K, NDCG@K and MRR of the target's rank among scored candidates (one relevant item per user)."
_KWARGS_DESCRIPTION = """
Args:
    predictions: one list of candidate scores per user (higher is better).
    references: the index of the target in each list.
    ks: the cut-offs (default 1, 5, 10).
Returns:
    hit@k and ndcg@k for each k, and mrr.
"""
_CITATION = """@inproceedings{kim2024allmrec,
  title={Large Language Models meet Collaborative Filtering: An Efficient All-round LLM-based Recommender System},
  author={Kim, Sein and Kang, Hongseok and Choi, Seungyoon and Kim, Donghyun and Yang, Minchul and Park, Chanyoung},
  booktitle={KDD}, year={2024}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class AllmrecRanking(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("float64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, ks=(1, 5, 10)):
        scores = np.asarray(predictions, dtype=np.float64)
        if scores.ndim != 2:
            raise ValueError("predictions must hold one score list per user, all of the same length.")
        targets = np.asarray(references, dtype=np.int64)
        if (targets < 0).any() or (targets >= scores.shape[1]).any():
            raise ValueError(f"references must be indices into the score lists (0..{scores.shape[1] - 1}).")
        return ranking_metrics(target_ranks(scores, targets), tuple(int(k) for k in ks))
