"""GaussianMixture: a diagonal-covariance Gaussian mixture whose denoiser, score and density
are exact at every noise level, the analytic reference model of the tests and benchmarks.

Noising x = x0 + sigma * eps keeps every component Gaussian, with variance stds^2 + sigma^2,
so the posterior mean E[x0 | x] (Tweedie's formula, Efron 2011; the ideal denoiser of
Karras et al. 2022, eq. 3) is a responsibility-weighted sum of per-component posterior means.
Responsibilities come from a logsumexp, so points far from every mode stay finite.

By default the denoiser is that exact x0. With a `Parametrisation` (e.g. eps-prediction on
discrete VP timesteps) the exact x0 is turned into that network's output and wrapped back by
NetworkDenoiser, the code path real networks take, so every parametrisation is tested exactly."""
from __future__ import annotations

import math
from typing import Any

import torch

from ...graph.errors import NodeError
from ..core.denoiser import Distribution
from ..core.model import ModelSampling
from .exact_network import ExactNetwork
from .labelled import Labelled
from .parametrisation import Parametrisation

LOG_2PI = math.log(2.0 * math.pi)


class GaussianMixture(Labelled, Distribution):
    """K Gaussians with diagonal covariance: the exact denoiser of Karras et al. (2022), eq. 3."""

    def __init__(self, means: torch.Tensor, stds: torch.Tensor, weights: torch.Tensor,
                 parametrisation: Parametrisation | None = None, classes: torch.Tensor | None = None):
        means, stds, weights = (torch.as_tensor(t, dtype=torch.float64) for t in (means, stds, weights))
        if means.ndim != 2 or stds.shape != means.shape or weights.shape != means.shape[:1]:
            raise ValueError(f"GaussianMixture needs means (K, D), stds (K, D) and weights (K,); got "
                             f"{tuple(means.shape)}, {tuple(stds.shape)} and {tuple(weights.shape)}")
        if not bool((stds > 0).all()) or not bool((weights >= 0).all()) or not float(weights.sum()) > 0:
            raise ValueError("GaussianMixture needs stds > 0 and weights >= 0 with a positive sum")
        if classes is not None:
            classes = torch.as_tensor(classes, dtype=torch.int64, device=means.device)
            if classes.shape != means.shape[:1] or bool((classes < 0).any()):
                raise ValueError(f"GaussianMixture classes need one label >= 0 per component ({means.shape[0]}), "
                                 f"got shape {tuple(classes.shape)}")
        self.classes = classes  # (K,) int64 class label of each component, or None (unlabelled)
        self.means = means  # (K, D)
        self.stds = stds  # (K, D)
        self.weights = weights / weights.sum()  # (K,)
        self.parametrisation = parametrisation or Parametrisation()
        self._sampling = self.parametrisation.model_sampling()
        self._network = None if self.parametrisation.is_exact else self.parametrisation.wrap(
            ExactNetwork(self.exact_x0, self._sampling, self.parametrisation.prediction), self._sampling)

    def __repr__(self) -> str:
        """Sizes and device, never the parameter values."""
        k, d = self.means.shape
        return f"GaussianMixture(K={k}, D={d}, {self.parametrisation.parametrisation}, device={self.device})"

    @property
    def shape(self) -> tuple[int]:
        """The shape of one sample: (D,)."""
        return (self.means.shape[1],)

    @property
    def sampling(self) -> ModelSampling:
        """The noise parametrisation (VE sigma range by default) that schedules read."""
        return self._sampling

    @property
    def device(self) -> torch.device:
        """Where the parameters live (reported per node by the runtime)."""
        return self.means.device

    @property
    def nbytes(self) -> int:
        """Bytes held by the parameters (for the memory cache's budget)."""
        return sum(t.numel() * t.element_size() for t in (self.means, self.stds, self.weights))

    def to(self, device: torch.device | str) -> GaussianMixture:
        """The same mixture with its parameters on `device` (float64 kept)."""
        device = torch.device(device)
        if device == self.device:
            return self
        return GaussianMixture(self.means.to(device), self.stds.to(device), self.weights.to(device),
                               self.parametrisation, None if self.classes is None else self.classes.to(device))

    def restricted(self, label: int) -> GaussianMixture:
        """p(x0 | class = label): the components labelled `label`, their weights renormalised (exact)."""
        if self.classes is None:
            raise NodeError("this mixture has no class labels; set model.gmm 'classes' (one label per component)")
        keep = self.classes == label  # (K,)
        if not bool(keep.any()) or not float(self.weights[keep].sum()) > 0:
            raise NodeError(f"class {label} has no component of positive weight; labels in use: "
                            f"{sorted(set(self.classes.tolist()))}")
        return GaussianMixture(self.means[keep], self.stds[keep], self.weights[keep], self.parametrisation,
                               self.classes[keep])

    def broadened(self, factor: float) -> GaussianMixture:
        """The same mixture with every std multiplied by `factor` (a weaker, blurrier model; exact)."""
        return GaussianMixture(self.means, self.stds * factor, self.weights, self.parametrisation, self.classes)

    def class_log_posterior(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p(class | x_sigma) (B, C) of noisy x (B, D) at sigma (B,), C = max label + 1 (exact)."""
        if self.classes is None:
            raise NodeError("this mixture has no class labels; set model.gmm 'classes' (one label per component)")
        log_resp = torch.log_softmax(self._log_joint(x, sigma)[0], dim=-1)  # (B, K)
        c = int(self.classes.max()) + 1
        onehot = torch.nn.functional.one_hot(self.classes.to(x.device), c).to(x)  # (K, C)
        return torch.logsumexp(log_resp[:, :, None] + onehot.log()[None], dim=1)  # (B, C)

    def _log_joint(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """log w_k N(x; mu_k, stds_k^2 + sigma^2) (B, K), mu - x and the noisy variances (B, K, D)."""
        self._check(x, sigma)
        means, stds = self.means.to(x), self.stds.to(x)  # (K, D)
        var = stds[None] ** 2 + sigma.to(x)[:, None, None] ** 2  # (B, K, D)
        delta = means[None] - x[:, None, :]  # (B, K, D)
        log_n = -0.5 * (delta ** 2 / var + torch.log(var) + LOG_2PI).sum(-1)  # (B, K)
        return self.weights.to(x).log()[None] + log_n, delta, var

    def _check(self, x: torch.Tensor, sigma: torch.Tensor) -> None:
        """Reject inputs that are not (B, D) and (B,) with a message saying what to change."""
        if x.ndim != 2 or x.shape[1] != self.shape[0]:
            raise NodeError(f"GaussianMixture expects x of shape (B, {self.shape[0]}), got {tuple(x.shape)}; "
                            f"make the latent shape [{self.shape[0]}]")
        if sigma.shape != x.shape[:1]:
            raise NodeError(f"GaussianMixture expects sigma of shape ({x.shape[0]},), got {tuple(sigma.shape)}")

    def log_marginal(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log p_sigma(x) (B,) of the noised data x (B, D) at noise levels sigma (B,)."""
        return torch.logsumexp(self._log_joint(x, sigma)[0], dim=-1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """grad_x log p_sigma(x) (B, D), exact (Hyvarinen 2005 score of the noised mixture)."""
        log_joint, delta, var = self._log_joint(x, sigma)
        resp = torch.softmax(log_joint, dim=-1)  # (B, K)
        return torch.einsum("bk,bkd->bd", resp, delta / var)  # (B, D)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The x0 estimate (B, D): exact, or through the parametrisation's network wrapper."""
        return self.exact_x0(x, sigma) if self._network is None else self._network(x, sigma)

    def exact_x0(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """E[x0 | x0 + sigma * eps = x] (B, D) in x's dtype; exactly x where sigma == 0 (Tweedie)."""
        log_joint, delta, var = self._log_joint(x, sigma)
        resp = torch.softmax(log_joint, dim=-1)  # (B, K)
        shrink = sigma.to(x)[:, None, None] ** 2 / var  # (B, K, D) in [0, 1]: well conditioned
        return x + torch.einsum("bk,bkd->bd", resp, shrink * delta)  # (B, D)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density (B,) of clean data x (B, D)."""
        return self.log_marginal(x, x.new_zeros(x.shape[0]))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """n exact float64 samples (n, D) on the CPU, drawn with the CPU `generator`."""
        means, stds, weights = self.means.cpu(), self.stds.cpu(), self.weights.cpu()
        k = torch.multinomial(weights, n, replacement=True, generator=generator)  # (n,)
        eps = torch.randn(n, self.shape[0], generator=generator, dtype=torch.float64)  # (n, D)
        return means[k] + stds[k] * eps

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """The most responsible component (B,) int64 of clean data x (B, D)."""
        return self._log_joint(x, x.new_zeros(x.shape[0]))[0].argmax(dim=-1)

    def mode_weights_of(self, x: torch.Tensor) -> torch.Tensor:
        """The fraction of x (B, D) that each component is most responsible for (K,) float64."""
        counts = torch.bincount(self.assign(x), minlength=self.weights.numel())  # (K,)
        return counts.to(torch.float64) / max(x.shape[0], 1)

    def cache_encode(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """The parameters as tensors and the parametrisation's options, for the disk cache."""
        tensors = {"means": self.means, "stds": self.stds, "weights": self.weights}
        if self.classes is not None:
            tensors["classes"] = self.classes
        return tensors, self.parametrisation.options()

    @classmethod
    def cache_decode(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> GaussianMixture:
        """Rebuild a mixture from `cache_encode`'s tensors."""
        return cls(tensors["means"], tensors["stds"], tensors["weights"], Parametrisation.model_validate(meta),
                   tensors.get("classes"))
