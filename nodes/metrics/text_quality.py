"""metrics.text_quality: validity and exact log-likelihood of generated texts under the repo's grammar,
generative perplexity under an autoregressive LM (the shipped char LM by default), per-sample entropy,
distinct fraction and, optionally, the fraction satisfying a regex (math in text_scores.py)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..lm.char_lm import WEIGHTS as CHAR_LM_WEIGHTS
from ..lm.char_lm import load_char_lm
from ..lm.generations import Generations
from ..lm.grammar import corpus
from ..lm.model import LanguageModel
from ..models.safetensors_model import file_state
from .text_scores import (distinct_fraction, grammar_logprobs, lm_nll, mean_entropy, mean_valid_logprob, perplexity,
                          regex_fraction, valid_fraction)


class TextQuality(NamedTuple):
    validity: float  # fraction of texts in the grammar's language
    valid_logprob: float  # mean exact grammar log-prob (nats per string) of the valid texts (nan: none valid)
    mean_logprob: float  # mean over all texts (-inf when any is invalid)
    perplexity: float  # exp(mean NLL per token, end token included) under the LM (nan when not computed)
    entropy: float  # per-sample unigram entropy (nats), averaged
    distinct: float  # distinct texts / texts
    constraint: float  # fraction matching the regex (nan without one)


@node("metrics.text_quality")
class MetricTextQuality(Node):
    """Validity, exact grammar log-likelihood, generative perplexity (Sahoo et al. 2024) and per-sample
    entropy (Zheng et al. 2024) of generated texts."""

    perplexity: bool = Field(True, description="score the texts with the LM (input 'lm', or the shipped char LM)")
    constraint: str | None = Field(None, description="a Python regex; reports the fraction of texts matching it "
                                   "in full")

    def external_state(self) -> Any:
        """The shipped char LM's file state (it scores perplexity when no 'lm' input is given)."""
        return file_state(Path(CHAR_LM_WEIGHTS)) if self.perplexity else None

    def run(self, texts: Generations, ctx: NodeContext, lm: LanguageModel | None = None) -> TextQuality:
        if len(texts) == 0:
            raise NodeError("input 'texts' holds no generations; sample at least one")
        logprobs = grammar_logprobs(texts.texts, corpus())
        ppl = math.nan
        if self.perplexity:
            ppl = perplexity(*lm_nll(lm if lm is not None else load_char_lm(), texts.texts))
        out = TextQuality(validity=valid_fraction(logprobs), valid_logprob=mean_valid_logprob(logprobs),
                          mean_logprob=sum(logprobs) / len(logprobs), perplexity=ppl,
                          entropy=mean_entropy(texts.texts), distinct=distinct_fraction(texts.texts),
                          constraint=(math.nan if self.constraint is None
                                      else regex_fraction(texts.texts, self.constraint)))
        ctx.record(**{f"text_{k}": v for k, v in out._asdict().items()}, texts=len(texts))
        return out
