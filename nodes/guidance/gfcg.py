"""guidance.gfcg: gradient-free classifier guidance. A classifier, run in inference mode, picks per row and
per step the class the model most confuses with the target (the reference class c_r, the most probable
other class) and a weight from how confused it is; the estimate is pushed away from the model conditioned
on c_r, on top of CFG or autoguidance:

    D = cfg(D_c, D_o, w) + w_r (D_c - D_{c_r}),   w_r = ref_scale p(c_r | .) / (p(c | .) + p(c_r | .))

The classifier is either a clean `Classifier` run on the conditional x0 estimate D_c (port `classifier`)
or a `NoisyClassifier` log p(class | x_sigma) run on the noisy input at sigma (port `noisy_classifier`);
exactly one is connected. The noisy one keeps GFCG off a clean verifier that may also grade the samples.

D_o is the unconditional model (GFCG + CFG) or a weaker model (GFCG + autoguidance, as in the paper's
best ImageNet result). w_r falls to 0 where the classifier is sure of the target, so confident rows get
plain CFG/autoguidance. Outside the sigma interval the output is the conditional estimate (as for every
guidance node). Our reading of Shenoy et al. (2024): the adaptive weight is the classifier's
relative confusion between target and reference; no gradient flows through the classifier.

Cost: cond and other (2 evaluations), the reference model on all rows (1: one batched call with per-row
class embeddings for networks; for analytic mixtures rows are grouped by class, each evaluated once) and
the classifier (1; a noisy classifier counts its own evaluations), inside the interval."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from ..models.classifier import Classifier, NoisyClassifier
from ..models.labelled import Labelled
from .common import Batching, GuidanceInterval, cfg, cond_and_other, evaluations_of


@node("guidance.gfcg", version=2)
class GFCG(GuidanceInterval, Batching):
    """Gradient-free classifier guidance with a time-adaptive reference class (Shenoy et al. 2024, Sec. 3)."""

    label: int = Field(ge=0, description="the target class c that `cond` is conditioned on")
    scale: float = Field(1.0, description="CFG / autoguidance weight w on `other` (1 = none)")
    ref_scale: float = Field(2.0, ge=0.0, description="largest weight of the push away from the reference class")

    def run(self, cond: Denoiser, other: Denoiser, model: Labelled, classifier: Classifier | None = None,
            noisy_classifier: NoisyClassifier | None = None) -> Denoiser:
        """The guided Denoiser; `model` is the unbound labelled model that gives D_{c_r} for any class, and
        exactly one of `classifier` (on the conditional x0 estimate) and `noisy_classifier` (on x_sigma)."""
        if (classifier is None) == (noisy_classifier is None):
            state = "both are connected" if classifier is not None else "neither is connected"
            raise NodeError(f"guidance.gfcg needs exactly one of its inputs 'classifier' (a clean classifier, run on "
                            f"the conditional x0 estimate) and 'noisy_classifier' (log p(class | x_sigma), run on "
                            f"the noisy input), but {state}; connect one of them")
        return GFCGGuided(self, cond, other, model, classifier, noisy_classifier)

    def reference(self, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference classes (B,) and weights w_r (B,) from log p(class | .) (B, C)."""
        if self.label >= logp.shape[1]:
            raise NodeError(f"guidance.gfcg 'label' is {self.label}, but the classifier has {logp.shape[1]} "
                            f"classes (0..{logp.shape[1] - 1})")
        p = logp.exp()  # (B, C)
        p_t = p[:, self.label]  # (B,)
        ref = p.index_fill(1, torch.tensor([self.label], device=p.device), -1.0).argmax(1)  # (B,)
        p_r = p.gather(1, ref[:, None])[:, 0]  # (B,)
        return ref, self.ref_scale * p_r / (p_t + p_r).clamp_min(1e-30)


class GFCGGuided(Denoiser):
    """CFG/autoguidance of cond and other plus the push away from each row's reference-class estimate."""

    def __init__(self, rule: GFCG, cond: Denoiser, other: Denoiser, model: Labelled, classifier: Classifier | None,
                 noisy: NoisyClassifier | None):
        self.rule, self.cond, self.other, self.model = rule, cond, other, model
        self.classifier, self.noisy = classifier, noisy  # exactly one is set

    def to(self, device: torch.device) -> GFCGGuided:
        return GFCGGuided(self.rule, self.cond.to(device), self.other.to(device), self.model.to(device),
                          None if self.classifier is None else self.classifier.to(device),
                          None if self.noisy is None else self.noisy.to(device))

    def log_probs(self, x: torch.Tensor, sigma: torch.Tensor, x0_c: torch.Tensor) -> torch.Tensor:
        """log p(class | .) (B, C) in float64: the noisy classifier on x (B, ...) at sigma (B,), else the clean
        one on the conditional estimate x0_c (B, ...); no gradient."""
        with torch.no_grad():
            logp = self.classifier(x0_c) if self.noisy is None else self.noisy(x, sigma)  # (B, C)
        return logp.to(torch.float64)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0_c, idx, x0_o = cond_and_other(self.rule, self.rule.batch, self.cond, self.other, x, sigma)
        if x0_o is None:
            return x0_c
        xa, sa, ca = x[idx], sigma[idx], x0_c[idx]  # (A, ...), (A,), (A, ...)
        ref, w_r = self.rule.reference(self.log_probs(xa, sa, ca))  # (A,) each
        x0_ref = per_row_class(self.model, xa, sa, ref)  # (A, ...)
        guided = cfg(ca, x0_o, self.rule.scale) + bcast(w_r.to(ca.dtype), ca) * (ca - x0_ref)
        out = x0_c.clone()
        out[idx] = guided
        return out

    def evaluations(self, sigma: torch.Tensor) -> int:
        on = self.rule.active(sigma)  # (B,)
        if not bool(on.any()):
            return evaluations_of(self.cond, sigma)
        judge = 1 if self.noisy is None else int(self.noisy.evaluations(sigma[on]))
        return evaluations_of(self.cond, sigma) + evaluations_of(self.other, sigma[on]) + 1 + judge  # + reference


def per_row_class(model: Labelled, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """x0 (B, ...) of `model` bound to each row's class labels (B,): one batched call through class
    embeddings where the model has them (networks), else one call per distinct class (analytic mixtures)."""
    classes = [int(c) for c in labels.unique().tolist()]
    try:
        table = {c: model.restricted(c).condition_embedding() for c in classes}
    except NodeError:
        out = torch.empty_like(x)  # (B, ...)
        for c in classes:
            rows = (labels == c).nonzero().squeeze(1)  # (R,)
            out[rows] = model.restricted(c)(x[rows], sigma[rows])
        return out
    emb = torch.stack([table[int(c)] for c in labels.tolist()])  # (B, E)
    return model.denoise_embedded(x, sigma, emb)
