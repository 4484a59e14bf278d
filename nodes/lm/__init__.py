"""Language models as nodes (docs/ARCHITECTURE.md, "Tokens"): LMs, LM transforms, constraints and
potentials, and token strategies (ancestral, greedy, beam, masking, AWRS, SMC, speculative)."""


def nodes() -> list[type]:
    from .char_lm import ModelCharLM
    from .prompt import Prompt

    return [Prompt, ModelCharLM]
