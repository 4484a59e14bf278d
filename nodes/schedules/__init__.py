"""Schedule nodes: each outputs Sigmas (decreasing, ending in 0), and sigma operations."""


def nodes() -> list[type]:
    from .ays import AlignYourSteps
    from .ays_optimize import AYSOptimize
    from .beta import Beta
    from .concat import Concat
    from .ddim_uniform import DDIMUniform
    from .denoise_strength import DenoiseStrength
    from .exponential import Exponential
    from .flip import Flip
    from .flow_match import FlowMatch
    from .gits import GITS
    from .karras import Karras
    from .kl_optimal import KLOptimal
    from .laplace import Laplace
    from .linear_quadratic import LinearQuadratic
    from .manual import Manual
    from .normal import Normal
    from .polyexponential import Polyexponential
    from .set_first import SetFirst
    from .sgm_uniform import SGMUniform
    from .simple import Simple
    from .split_at_fraction import SplitAtFraction
    from .split_at_sigma import SplitAtSigma
    from .split_at_step import SplitAtStep
    from .time_shift import TimeShift
    from .uniform_timesteps import UniformTimesteps
    from .vp import VP

    model_free = [Karras, Exponential, Polyexponential, VP, KLOptimal, Laplace, LinearQuadratic, AlignYourSteps,
                  TimeShift, Manual]
    model_based = [UniformTimesteps, Simple, SGMUniform, DDIMUniform, Normal, Beta, FlowMatch]
    calibrated = [GITS, AYSOptimize]
    sigma_ops = [SplitAtStep, SplitAtSigma, SplitAtFraction, Flip, Concat, SetFirst, DenoiseStrength]
    return [*model_free, *model_based, *sigma_ops, *calibrated]
