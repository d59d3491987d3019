"""All zoo cases, in one list (each library's module keeps its own)."""

from __future__ import annotations

from . import (
    hf_decoders,
    hf_more,
    hf_more_encoders,
    hf_more_mixers,
    hf_more_queries,
    hf_others,
    litgpt_models,
    torch_nn,
)

CASES = [
    *hf_decoders.CASES,
    *hf_others.CASES,
    *hf_more.CASES,
    *hf_more_encoders.CASES,
    *hf_more_mixers.CASES,
    *hf_more_queries.CASES,
    *litgpt_models.CASES,
    *torch_nn.CASES,
]
_names = [case.name for case in CASES]
assert len(set(_names)) == len(_names), "zoo case names must be unique"
