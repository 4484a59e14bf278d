"""Sampler (solver) nodes and the generic `sample` node."""


def nodes() -> list[type]:
    from .adaptive_steps import AdaptiveSteps
    from .amo import Amo
    from .dc_solver import DcSolver
    from .dc_solver_calibrate import DcSolverCalibrate
    from .dc_solver_regression import DcSolverRegression
    from .ddim import Ddim
    from .ddpm import Ddpm
    from .deis import Deis
    from .dpm_2 import Dpm2
    from .dpm_2_ancestral import Dpm2Ancestral
    from .dpm_adaptive import DpmAdaptive
    from .dpm_solver import DpmSolver
    from .dpm_solver_v3 import DpmSolverV3
    from .dpm_solver_v3_statistics import DpmSolverV3Statistics
    from .dpmpp_2m import Dpmpp2M
    from .dpmpp_2m_sde import Dpmpp2MSde
    from .dpmpp_2s import Dpmpp2S
    from .dpmpp_2s_ancestral import Dpmpp2SAncestral
    from .dpmpp_3m import Dpmpp3M
    from .dpmpp_3m_sde import Dpmpp3MSde
    from .dpmpp_sde import DpmppSde
    from .er_sde import ErSde
    from .euler import Euler
    from .evodiff import EvoDiff
    from .euler_ancestral import EulerAncestral
    from .from_plan import FromPlan
    from .flow_sde import FlowSde
    from .ghvb import Ghvb
    from .hb import HeavyBall
    from .heun import Heun
    from .iia import Iia
    from .iia_fit import IiaFit
    from .inpaint import Inpaint
    from .ipndm import Ipndm
    from .lcm import Lcm
    from .lms import Lms
    from .plan import Plan
    from .plan_search import PlanSearch
    from .pndm import Pndm
    from .restart import Restart
    from .sa_solver import SaSolver
    from .sample import Sample
    from .time_shift import TimeShift
    from .unipc import UniPC

    ode = [Euler, Heun, Dpm2, Lms, DpmSolver, DpmAdaptive, Dpmpp2M, Dpmpp2S, Dpmpp3M, Ipndm, Pndm]  # k-diffusion family
    calibrated = [DpmSolverV3, DpmSolverV3Statistics, DcSolver, DcSolverCalibrate, DcSolverRegression]  # solvers using statistics measured on the model
    stochastic = [EulerAncestral, Dpm2Ancestral, Dpmpp2SAncestral, DpmppSde, Dpmpp2MSde, Dpmpp3MSde, Restart, ErSde]
    vp_family = [Ddim, Ddpm, UniPC, Deis, Lcm, FlowSde]  # DDIM/DDPM/UniPC/DEIS/LCM, flow-model SDE
    momentum = [HeavyBall, Ghvb]  # Wizadwongsa et al. 2023
    wrappers = [TimeShift, Plan]  # nodes that build a Sampler from other samplers
    fast_ii = [SaSolver, Amo, Iia, IiaFit, EvoDiff]  # issue 14: SA-Solver, AMO, IIA, EVODiff
    searched = [PlanSearch, FromPlan, AdaptiveSteps]  # configurations found on calibration trajectories
    inpaint = [Inpaint]  # issue 13: latent inpainting around any sampler
    return [Sample, *ode, *stochastic, *vp_family, *momentum, *wrappers, *fast_ii, *searched, *calibrated, *inpaint]
