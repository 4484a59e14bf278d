"""Language models as nodes (docs/ARCHITECTURE.md, "Tokens"): LMs, LM transforms, constraints and
potentials, and token strategies (ancestral, greedy, beam, masking, AWRS, SMC, speculative)."""


def nodes() -> list[type]:
    from .hf_lm import HFLM
    from .prompt import Prompt
    from .speculative import Speculative
    from .table_lm import ModelTableLM

    return [Prompt, ModelTableLM, HFLM, Speculative]
