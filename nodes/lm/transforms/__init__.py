"""LM transforms (LanguageModel -> LanguageModel): temperature, truncation samplers and penalties, as
guidance maps Denoisers. Each reshapes the inner model's next-token distributions per window position."""


def nodes() -> list[type]:
    from .epsilon import LMEpsilon
    from .eta import LMEta
    from .min_p import LMMinP
    from .repetition_penalty import LMRepetitionPenalty
    from .temperature import LMTemperature
    from .top_k import LMTopK
    from .top_p import LMTopP
    from .typical import LMTypical

    return [LMTemperature, LMTopK, LMTopP, LMMinP, LMTypical, LMEta, LMEpsilon, LMRepetitionPenalty]
