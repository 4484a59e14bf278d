"""Language models as nodes (docs/ARCHITECTURE.md, "Tokens"): LMs, LM transforms, constraints and
potentials, and token strategies (ancestral, greedy, beam, masking, AWRS, SMC, speculative)."""


def nodes() -> list[type]:
    from .awrs import Awrs
    from .beam import Beam
    from .best_of_n import BestOfN
    from .constraints import nodes as constraint_nodes
    from .generate import Generate
    from .greedy import Greedy
    from .hf_lm import HFLM
    from .masked import Masked
    from .prompt import Prompt
    from .smc import TokenSmc
    from .table_lm import ModelTableLM
    from .transforms.epsilon import LMEpsilon
    from .transforms.eta import LMEta
    from .transforms.min_p import LMMinP
    from .transforms.repetition_penalty import LMRepetitionPenalty
    from .transforms.temperature import LMTemperature
    from .transforms.top_k import LMTopK
    from .transforms.top_p import LMTopP
    from .transforms.typical import LMTypical

    return [Prompt, ModelTableLM, Generate, Masked, *constraint_nodes(), Greedy, Beam, BestOfN, LMTemperature,
            LMTopK, LMTopP, LMMinP, LMTypical, LMEta, LMEpsilon, LMRepetitionPenalty, HFLM, Awrs, TokenSmc]
