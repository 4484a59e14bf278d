"""Probabilistic grammars with exact string probabilities, and the repo's synthetic corpus."""
from .corpus import Corpus, corpus

__all__ = ["Corpus", "corpus"]
