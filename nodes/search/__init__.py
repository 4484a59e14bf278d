"""Search strategies: inference-time scaling over particles (best-of-N, rejection, SMC / FK steering)."""


def nodes() -> list[type]:
    from .best_of_n import BestOfN
    from .rejection import Rejection
    from .smc import Smc
    from .svdd import Svdd

    return [BestOfN, Rejection, Smc, Svdd]
