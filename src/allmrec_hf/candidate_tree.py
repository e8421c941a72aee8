"""Every candidate answer of a user packed into one token tree, so scoring runs each shared answer prefix once and
runs no padding at all.

A user's candidate answers (` "Heat (1995)"`, ` "Hear My Song (1991)"`, ...) share their first tokens; a prefix
tree (trie) over them holds each distinct prefix once. Scoring feeds the tree's nodes to the LM as one sequence
after the prompt's cached keys and values, with an attention mask under which a node sees the prompt and its own
ancestors only and a position id equal to its depth: each node's output is then exactly what it would be in a
separate forward pass of the prompt followed by that candidate's answer.

This module imports only torch (it travels with checkpoints for `trust_remote_code`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CandidateTokenTree:
    """The token trees of a batch of users, padded to the largest tree.

    Attributes:
        input_ids (`(batch, nodes)`): each node's token (0 on padding nodes).
        depth (`(batch, nodes)`): each node's position inside the answer (0 for the answer's first token).
        visible (`(batch, nodes, nodes)`, bool): `visible[b, i, j]` is whether node `i` attends to node `j`, i.e.
            `j` is `i` or one of its ancestors (padding nodes see themselves only).
        node_mask (`(batch, nodes)`, bool): real nodes.
        step_nodes (`(batch, num_candidates, answer_len - 1)`): the node whose output predicts answer token `t + 1`
            of each candidate (0 past the answer's end; those steps are masked out by the answer's mask).
    """

    input_ids: torch.Tensor
    depth: torch.Tensor
    visible: torch.Tensor
    node_mask: torch.Tensor
    step_nodes: torch.Tensor

    @property
    def num_nodes(self) -> int:
        return self.input_ids.shape[1]

    def to(self, device) -> CandidateTokenTree:
        return CandidateTokenTree(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def build_candidate_token_tree(tokens: torch.Tensor, mask: torch.Tensor) -> CandidateTokenTree:
    """The token trees of right-padded candidate answers `tokens`/`mask` (`(batch, num_candidates, answer_len)`).

    Every answer's tokens but its last are the tree's nodes (the last token is only predicted, never fed); answers
    with the same first tokens share those nodes.

    Example:

    ```python
    >>> import torch
    >>> tokens = torch.tensor([[[5, 6, 7], [5, 6, 8], [5, 9, 0]]])
    >>> tree = build_candidate_token_tree(tokens, (tokens != 0).long())
    >>> tree.input_ids.tolist(), tree.depth.tolist()
    ([[5, 6]], [[0, 1]])
    >>> tree.step_nodes.tolist()  # answers 0 and 1 share both nodes, answer 2 the first one
    [[[0, 1], [0, 1], [0, 0]]]
    ```
    """
    if tokens.shape != mask.shape or tokens.dim() != 3:
        raise ValueError(f"tokens and mask must both be (batch, num_candidates, answer_len), got "
                         f"{tuple(tokens.shape)} and {tuple(mask.shape)}.")  # fmt: skip
    batch, num_candidates, answer_len = tokens.shape
    token_rows = tokens.tolist()
    lengths = mask.sum(-1).tolist()
    step_nodes = torch.zeros(batch, num_candidates, max(answer_len - 1, 0), dtype=torch.long)
    trees = []  # per user: (node tokens, node parents, node depths)
    for b in range(batch):
        children: dict[tuple[int, int], int] = {}
        node_tokens: list[int] = []
        parents: list[int] = []
        depths: list[int] = []
        for c in range(num_candidates):
            parent = -1
            for t in range(int(lengths[b][c]) - 1):
                key = (parent, token_rows[b][c][t])
                node = children.get(key)
                if node is None:
                    node = children[key] = len(node_tokens)
                    node_tokens.append(token_rows[b][c][t])
                    parents.append(parent)
                    depths.append(t)
                step_nodes[b, c, t] = node
                parent = node
        trees.append((node_tokens, parents, depths))
    num_nodes = max((len(t[0]) for t in trees), default=0)
    input_ids = torch.zeros(batch, num_nodes, dtype=torch.long)
    depth = torch.zeros(batch, num_nodes, dtype=torch.long)
    visible = torch.zeros(batch, num_nodes, num_nodes, dtype=torch.bool)
    node_mask = torch.zeros(batch, num_nodes, dtype=torch.bool)
    for b, (node_tokens, parents, depths) in enumerate(trees):
        n = len(node_tokens)
        input_ids[b, :n] = torch.tensor(node_tokens, dtype=torch.long)
        depth[b, :n] = torch.tensor(depths, dtype=torch.long)
        node_mask[b, :n] = True
        for node, parent in enumerate(parents):  # parents come before their children
            if parent >= 0:
                visible[b, node] = visible[b, parent]
            visible[b, node, node] = True
        for node in range(n, num_nodes):  # padding nodes see themselves only
            visible[b, node, node] = True
    return CandidateTokenTree(input_ids, depth, visible, node_mask, step_nodes)
