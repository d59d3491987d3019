"""Attention the reader used to miss without a word: scores normalised as ``exp(s - logsumexp(s))``,
several per-head contractions summed into the scores (content, relative position, segment), and
the safety net that names every projection feeding an attention whose heads it couldn't read.

Sizes: model width C=32, H=4 heads of D=8, T=6 tokens. Every expected layout is written by hand
from the module's forward: q/k projections one block per head, v and the rest one per row.
"""

from __future__ import annotations

import torch
from torch import nn

from partitioners import BlockLayout

from .test_attention_variants import ROWS, C, check


# ---- 1. exp(s - logsumexp(s)) is a softmax ------------------------------------------------------
class LogSumExpAttention(nn.Module):
    """One head over the whole width on unbatched (T, C) tokens, as 2-D ``mm``s: only the
    normalisation says these are scores (no batch axis makes them a per-head product)."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(C, C, bias=False) for _ in range(4))

    def forward(self, x):
        tokens = x[0]
        scores = self.q(tokens) @ self.k(tokens).T
        probs = torch.exp(scores - torch.logsumexp(scores, dim=-1, keepdim=True))
        return self.o(probs @ self.v(tokens))


class ShiftedByOtherScores(LogSumExpAttention):
    """Near miss: ``exp(s - logsumexp(t))`` for other scores ``t`` normalises nothing."""

    def forward(self, x):
        tokens = x[0]
        scores = self.q(tokens) @ self.k(tokens).T
        probs = torch.exp(scores - torch.logsumexp(scores * 2.0, dim=-1, keepdim=True))
        return self.o(probs @ self.v(tokens))


def test_exp_of_scores_minus_their_logsumexp_is_a_softmax():
    one_head = BlockLayout.rows(group=C)
    check(
        LogSumExpAttention(), {"q.weight": one_head, "k.weight": one_head, "v.weight": ROWS, "o.weight": ROWS}
    )


def test_scores_minus_the_logsumexp_of_other_scores_are_no_attention():
    check(ShiftedByOtherScores(), {f"{p}.weight": ROWS for p in "qkvo"})
