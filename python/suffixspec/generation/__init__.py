"""Lossless speculative generation over transformers models (see :func:`generate`)."""

from suffixspec.generation.api import GenerationOutput, generate
from suffixspec.generation.proposer import Proposer, SuffixProposer
from suffixspec.generation.stats import BatchStats, RequestStats

__all__ = ["BatchStats", "GenerationOutput", "Proposer", "RequestStats", "SuffixProposer", "generate"]
