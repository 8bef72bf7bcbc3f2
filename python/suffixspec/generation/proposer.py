"""The generation loop's proposers are :mod:`suffixspec.proposer`'s (one protocol for every loop)."""

from suffixspec.proposer import (
    Proposer,
    SuffixProposer,
    empty_tree,
    fit_tree,
    limit_depth,
    merge_duplicate_siblings,
    within_vocab,
)

__all__ = [
    "Proposer",
    "SuffixProposer",
    "empty_tree",
    "fit_tree",
    "limit_depth",
    "merge_duplicate_siblings",
    "within_vocab",
]
