"""A tight ODE reference shared by the calibrated-solver tests (DPM-Solver-v3, DC-Solver) and their benchmark."""
import numpy as np
import torch
from scipy.integrate import solve_ivp


def dop853(model, x: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
    """x (B, D) at sigma_from carried to sigma_to along dx/dsigma = (x - D(x, sigma)) / sigma with DOP853 (float64)."""
    b, d = x.shape

    def rhs(sigma: float, y: np.ndarray) -> np.ndarray:
        xs = torch.from_numpy(y).reshape(b, d)  # (B, D)
        return ((xs - model(xs, torch.full((b,), sigma, dtype=torch.float64))) / sigma).reshape(-1).numpy()

    sol = solve_ivp(rhs, (sigma_from, sigma_to), x.double().reshape(-1).numpy(), method="DOP853", rtol=1e-11,
                    atol=1e-11)
    assert sol.success, sol.message
    return torch.from_numpy(sol.y[:, -1]).reshape(b, d)
