"""guidance.gfcg: gradient-free classifier guidance. A clean classifier, run in inference mode on the
conditional x0 estimate, picks per row and per step the class the model most confuses with the target
(the reference class c_r, the most probable other class) and a weight from how confused it is; the
estimate is pushed away from the model conditioned on c_r, on top of CFG or autoguidance:

    D = cfg(D_c, D_o, w) + w_r (D_c - D_{c_r}),   w_r = ref_scale p(c_r | D_c) / (p(c | D_c) + p(c_r | D_c))

D_o is the unconditional model (GFCG + CFG) or a weaker model (GFCG + autoguidance, as in the paper's
best ImageNet result). w_r falls to 0 where the classifier is sure of the target, so confident rows get
plain CFG/autoguidance. Outside the sigma interval the output is the conditional estimate (as for every
guidance node). Our reading of Shenoy et al. (2024): the adaptive weight is the classifier's
relative confusion between target and reference; no gradient flows through the classifier.

Cost: cond and other (2 evaluations), the reference model on all rows (1: one batched call with per-row
class embeddings for networks; for analytic mixtures rows are grouped by class, each evaluated once) and
the classifier (1), inside the interval."""
from __future__ import annotations

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import node
from ..core.denoiser import Denoiser
from ..core.state import bcast
from ..models.classifier import Classifier
from ..models.labelled import Labelled
from .common import GuidanceInterval, cfg, evaluations_of


@node("guidance.gfcg")
class GFCG(GuidanceInterval):
    """Gradient-free classifier guidance with a time-adaptive reference class (Shenoy et al. 2024, Sec. 3)."""

    label: int = Field(ge=0, description="the target class c that `cond` is conditioned on")
    scale: float = Field(1.0, description="CFG / autoguidance weight w on `other` (1 = none)")
    ref_scale: float = Field(2.0, ge=0.0, description="largest weight of the push away from the reference class")

    def run(self, cond: Denoiser, other: Denoiser, model: Labelled, classifier: Classifier) -> Denoiser:
        """The guided Denoiser; `model` is the unbound labelled model that gives D_{c_r} for any class."""
        return GFCGGuided(self, cond, other, model, classifier)

    def reference(self, logp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference classes (B,) and weights w_r (B,) from log p(class | x0) (B, C)."""
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

    def __init__(self, rule: GFCG, cond: Denoiser, other: Denoiser, model: Labelled, classifier: Classifier):
        self.rule, self.cond, self.other, self.model, self.classifier = rule, cond, other, model, classifier

    def to(self, device: torch.device) -> GFCGGuided:
        return GFCGGuided(self.rule, self.cond.to(device), self.other.to(device), self.model.to(device),
                          self.classifier.to(device))

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x0_c = self.cond(x, sigma)  # (B, ...)
        idx = self.rule.active(sigma).nonzero().squeeze(1)  # (A,)
        if idx.numel() == 0:
            return x0_c
        xa, sa, ca = x[idx], sigma[idx], x0_c[idx]  # (A, ...), (A,), (A, ...)
        with torch.no_grad():
            ref, w_r = self.rule.reference(self.classifier(ca).to(torch.float64))  # (A,) each
        x0_ref = per_row_class(self.model, xa, sa, ref)  # (A, ...)
        guided = cfg(ca, self.other(xa, sa), self.rule.scale) + bcast(w_r.to(ca.dtype), ca) * (ca - x0_ref)
        out = x0_c.clone()
        out[idx] = guided
        return out

    def evaluations(self, sigma: torch.Tensor) -> int:
        on = self.rule.active(sigma)  # (B,)
        extra = evaluations_of(self.other, sigma[on]) + 2 if bool(on.any()) else 0  # other, reference, classifier
        return evaluations_of(self.cond, sigma) + extra


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
