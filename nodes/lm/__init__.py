"""Language models as nodes (docs/ARCHITECTURE.md, "Tokens"): LMs, LM transforms, constraints and
potentials, and token strategies (ancestral, greedy, beam, masking, AWRS, SMC, speculative)."""


def nodes() -> list[type]:
    from .awrs import Awrs
    from .prompt import Prompt
    from .smc import TokenSmc
    from .table_lm import ModelTableLM

    return [Prompt, ModelTableLM, Awrs, TokenSmc]
