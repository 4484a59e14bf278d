"""Language models as nodes (docs/ARCHITECTURE.md, "Tokens"): LMs, LM transforms, constraints and
potentials, and token strategies (ancestral, greedy, beam, masking, AWRS, SMC, speculative)."""


def nodes() -> list[type]:
    from .awrs import Awrs
    from .beam import Beam
    from .best_of_n import BestOfN
    from .char_lm import ModelCharLM
    from .constraints import nodes as constraint_nodes
    from .generate import Generate
    from .greedy import Greedy
    from .hf_lm import HFLM
    from .masked import Masked
    from .prompt import Prompt
    from .speculative import Speculative
    from .smc import TokenSmc
    from .table_lm import ModelTableLM
    from .transforms import nodes as transform_nodes

    return [
        Prompt,
        ModelTableLM,
        ModelCharLM,
        HFLM,
        Generate,
        Greedy,
        Beam,
        BestOfN,
        Masked,
        Speculative,
        Awrs,
        TokenSmc,
        *constraint_nodes(),
        *transform_nodes(),
    ]
