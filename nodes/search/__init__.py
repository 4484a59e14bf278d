"""Search strategies: inference-time scaling over particles (best-of-N, rejection, SMC / FK steering)."""


def nodes() -> list[type]:
    from .beam import Beam
    from .best_of_n import BestOfN
    from .dts import Dts
    from .fkc import Fkc
    from .paths import Paths
    from .rejection import Rejection
    from .rollover import Rollover
    from .smc import Smc
    from .svdd import Svdd
    from .tds import Tds
    from .zero_order import ZeroOrder

    return [BestOfN, Rejection, Smc, Svdd, Beam, ZeroOrder, Paths, Dts, Fkc, Tds, Rollover]
