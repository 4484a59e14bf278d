"""Language models as nodes (docs/ARCHITECTURE.md, "Tokens"): LMs, LM transforms, constraints and
potentials, and token strategies (ancestral, greedy, beam, masking, AWRS, SMC, speculative)."""


def nodes() -> list[type]:
    from .constraints import nodes as constraint_nodes
    from .generate import Generate
    from .masked import Masked
    from .prompt import Prompt
    from .table_lm import ModelTableLM

    return [Prompt, ModelTableLM, Generate, Masked, *constraint_nodes()]
