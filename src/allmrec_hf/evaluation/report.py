"""Reports of an evaluation (`results.json` as written by `examples/evaluate.py`): markdown tables in the
paper's layout (methods as rows) and PNG plots."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

SCENARIO_NAMES = {
    "test": "All users",
    "cold_items": "Cold items",
    "warm_items": "Warm items",
    "cold_users": "Cold users",
    "cross_domain": "Cross-domain",
}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}"


def _label(key: str) -> str:
    """`hit@5` -> `Hit@5`, `ndcg@10` -> `NDCG@10`, `mrr` -> `MRR`."""
    return key.replace("hit", "Hit").replace("ndcg", "NDCG").replace("mrr", "MRR")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _methods(results: dict) -> list[str]:
    return list(results["methods"])


def _metric(results: dict, scenario: str, method: str, mode: str, key: str):
    return results["results"].get(scenario, {}).get(method, {}).get(mode, {}).get(key)


# Methods that score the whole catalog themselves in the full-catalog rows (the others rerank the CF retrieval).
WHOLE_CATALOG_KINDS = ("cf", "popularity", "ranking")


def markdown_report(results: dict) -> str:
    """The tables a reader of the paper expects: Hit@1 per scenario in generation mode (the paper's protocol,
    substring rule, then the strict rule and the share of valid answers), ranking metrics on all test users,
    ranking Hit@1 per scenario, and full-catalog retrieve-then-rerank metrics when they were computed."""
    scenarios = list(results["scenarios"])
    methods = _methods(results)
    columns = [f"{SCENARIO_NAMES.get(s, s)} (n={results['scenarios'][s]['num_users']})" for s in scenarios]
    generation_columns = [
        f"{SCENARIO_NAMES.get(s, s)} (n={results['scenarios'][s].get('num_generation_users', n)})"
        for s, n in zip(scenarios, [results["scenarios"][s]["num_users"] for s in scenarios], strict=True)
    ]
    title = f"# Evaluation on {results['dataset']}"
    lines = [
        title,
        "",
        f"{results['num_candidates']} candidates per user (the target and sampled negatives, persisted with the "
        f"dataset), seed {results['seed']}.",
        "",
    ]
    generated = [
        m
        for m in methods
        if any(_metric(results, s, m, "generation", "hit@1_substring") is not None for s in scenarios)
    ]
    if generated:
        for key, heading in [
            (
                "hit@1_substring",
                "Hit@1, generation mode (the paper's protocol: the target's title appears in the answer)",
            ),
            (
                "hit@1_strict",
                "Hit@1, generation mode, strict rule (the answer names exactly one candidate: the target)",
            ),
            ("valid_answer_rate", "Valid answers (the answer names exactly one candidate)"),
        ]:
            lines += [f"## {heading}", ""]
            rows = [[m] + [_fmt(_metric(results, s, m, "generation", key)) for s in scenarios] for m in generated]
            lines += _table(["Method", *generation_columns], rows) + [""]
    ranked = [m for m in methods if any(_metric(results, s, m, "ranking", "hit@1") is not None for s in scenarios)]
    if ranked:
        first = scenarios[0]
        keys = [
            k
            for k in ("hit@1", "hit@5", "ndcg@5", "ndcg@10", "mrr")
            if any(_metric(results, first, m, "ranking", k) is not None for m in ranked)
        ]
        lines += [f"## Ranking mode ({SCENARIO_NAMES.get(first, first).lower()}: candidates ranked by score)", ""]
        rows = [[m] + [_fmt(_metric(results, first, m, "ranking", k)) for k in keys] for m in ranked]
        lines += _table(["Method", *[_label(k) for k in keys]], rows)
        lines += ["", "## Hit@1, ranking mode", ""]
        rows = [[m] + [_fmt(_metric(results, s, m, "ranking", "hit@1")) for s in scenarios] for m in ranked]
        lines += _table(["Method", *columns], rows) + [""]
    full = results.get("full_catalog")
    if full and full.get("results"):
        whole = [m for m in full["results"] if results["methods"].get(m, {}).get("kind") in WHOLE_CATALOG_KINDS]
        reranked = [m for m in full["results"] if m not in whole]
        parts = []
        if whole:
            parts.append(f"{', '.join(whole)} rank every unseen item")
        if reranked:
            parts.append(
                f"{', '.join(reranked)} rerank the top {full['num_retrieved']} unseen items the CF model retrieves"
            )
        lines += [f"## Full catalog (n={full['num_users']}): {'; '.join(parts)}", ""]
        keys = [k for k in next(iter(full["results"].values())) if k != "hit_curve"]
        rows = [[m] + [_fmt(v.get(k)) for k in keys] for m, v in full["results"].items()]
        lines += _table(["Method", *[_label(k) for k in keys]], rows) + [""]
    return "\n".join(lines)


def plot_results(results: dict, output_dir: str | os.PathLike) -> list[str]:
    """Write `hit_at_k.png` (ranking-mode Hit@K curves per method on the first scenario) and `scenarios.png`
    (Hit@1 per scenario and method, generation and ranking side by side). Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    scenarios = list(results["scenarios"])
    methods = _methods(results)
    paths = []
    first = scenarios[0]
    curves = {m: _metric(results, first, m, "ranking", "hit_curve") for m in methods}
    curves = {m: c for m, c in curves.items() if c}
    if curves:
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method, curve in curves.items():
            ax.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=method)
        ax.set_xlabel("K")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # K is a count of items
        ax.set_ylabel("Hit@K")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{results['dataset']}: Hit@K, ranking mode ({SCENARIO_NAMES.get(first, first).lower()})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(output_dir, "hit_at_k.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)

    panels = [("generation", "hit@1_substring", "generation (substring rule)"), ("ranking", "hit@1", "ranking")]
    panels = [
        p for p in panels if any(_metric(results, s, m, p[0], p[1]) is not None for s in scenarios for m in methods)
    ]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(6.4 * len(panels), 4.2), squeeze=False)
        width = 0.8 / max(len(methods), 1)
        for ax, (mode, key, label) in zip(axes[0], panels, strict=True):
            for offset, method in enumerate(methods):
                values = [_metric(results, s, method, mode, key) for s in scenarios]
                values = [float("nan") if v is None else v for v in values]
                positions = [i + (offset - (len(methods) - 1) / 2) * width for i in range(len(scenarios))]
                ax.bar(positions, values, width=width, label=method)
            ax.set_xticks(range(len(scenarios)), [SCENARIO_NAMES.get(s, s) for s in scenarios])
            ax.set_ylim(0, 1)
            ax.set_ylabel("Hit@1")
            ax.set_title(f"Hit@1, {label}")
            ax.grid(axis="y", alpha=0.3)
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(output_dir, "scenarios.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths
