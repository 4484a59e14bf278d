"""Shared by the metric nodes, usable directly by benchmarks: sample-based distances, feature
extraction in chunks, Gaussian fits, pairwise-distance blocks and k-NN manifolds (functions of tensors)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ...graph.errors import NodeError
from ..models.classifier import Classifier

CHUNK_ELEMENTS = 1 << 23  # projections or distances held at once (64 MiB of float64) on large inputs


def wasserstein2_sq_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact squared W2 between uniform empirical measures, row by row: integral of (Fa^-1 - Fb^-1)^2.

    a (P, N) and b (P, M) need not have equal counts: both quantile functions are step
    functions, constant between the merged breakpoints i/N and j/M, so the integral is a
    finite sum. Breakpoints are compared as integers (i*M vs j*N over N*M), so ties are exact."""
    n, m = a.shape[1], b.shape[1]
    a, b = a.sort(dim=1).values, b.sort(dim=1).values  # (P, N), (P, M)
    i = torch.arange(1, n + 1, device=a.device) * m  # (N,) int64: i/N in units of 1/(N*M)
    j = torch.arange(1, m + 1, device=a.device) * n  # (M,)
    ends = torch.unique(torch.cat([i, j]))  # (K,) sorted right ends of the constant pieces
    widths = torch.diff(ends, prepend=ends.new_zeros(1)).to(a.dtype) / (n * m)  # (K,)
    ia = (ends + m - 1) // m - 1  # (K,) index of Fa^-1 on each piece
    ib = (ends + n - 1) // n - 1  # (K,)
    return ((a[:, ia] - b[:, ib]) ** 2 * widths).sum(dim=1)  # (P,)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, projections: int, generator: torch.Generator) -> float:
    """Sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015) between point sets.

    a (N, D) and b (M, D); SW2^2 = mean over `projections` random unit directions theta of
    W2^2(theta . a, theta . b). Directions come from `generator` (a CPU generator), so the
    value is reproducible; the computation is float64 on a's device."""
    a, b = a.to(torch.float64), b.to(device=a.device, dtype=torch.float64)  # (N, D), (M, D)
    theta = torch.randn(projections, a.shape[1], generator=generator, dtype=torch.float64)  # (P, D)
    theta = (theta / theta.norm(dim=1, keepdim=True)).to(a.device)  # (P, D) unit rows
    per_chunk = max(1, CHUNK_ELEMENTS // (a.shape[0] + b.shape[0]))
    total = 0.0
    for t in theta.split(per_chunk):  # (p, D) each
        total += float(wasserstein2_sq_1d(t @ a.T, t @ b.T).sum())  # (p, N), (p, M) -> (p,)
    return math.sqrt(total / projections)


def flat_points(t: torch.Tensor, port: str) -> torch.Tensor:
    """(N, ...) -> (N, D) float64, rejecting empty and non-finite inputs with a located message."""
    if t.ndim == 0 or t.shape[0] == 0:
        raise NodeError(f"input '{port}' must hold a batch of points (N, ...) with N >= 1, got shape {tuple(t.shape)}")
    x = t.detach().reshape(t.shape[0], -1).to(torch.float64)  # (N, D)
    bad = int((~torch.isfinite(x).all(dim=1)).sum())
    if bad:
        raise NodeError(f"input '{port}' must be finite, but {bad} of {x.shape[0]} points have NaN/inf values "
                        f"(for generated samples this usually means the sampler diverged: try more steps)")
    return x


def in_chunks(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch: int) -> torch.Tensor:
    """fn applied to x (N, ...) `batch` rows at a time without autograd, concatenated as float64 (N, ...)."""
    with torch.no_grad():
        return torch.cat([fn(chunk).to(torch.float64) for chunk in x.split(batch)])


def embed(x: torch.Tensor, port: str, classifier: Classifier | None, batch: int,
          device: torch.device) -> torch.Tensor:
    """Feature vectors (N, F) float64 of images x (N, ...): the classifier's features, or the flattened
    values themselves when no classifier is given (raw space, e.g. for a GMM)."""
    flat = flat_points(x, port)  # (N, D) checked
    if classifier is None:
        return flat
    net = classifier.to(device)
    feats = in_chunks(net.features, x.detach().to(device), batch)  # (N, F)
    return feats.reshape(feats.shape[0], -1)


def hits_and_confidence(log_probs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: whether the most probable class is the target (N,) float64 0/1, and p(target | x) (N,),
    from classifier log-probabilities (N, C) and target classes (N,) int64."""
    targets = targets.to(log_probs.device)
    hit = (log_probs.argmax(dim=1) == targets).to(torch.float64)  # (N,)
    return hit, log_probs.gather(1, targets[:, None])[:, 0].to(torch.float64).exp()  # (N,), (N,)


def gaussian_fit(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of rows f (N, F), N >= 2, in float64."""
    f = f.to(torch.float64)
    mu = f.mean(dim=0)  # (F,)
    centred = f - mu  # (N, F)
    return mu, centred.T @ centred / (f.shape[0] - 1)  # (F,), (F, F)


def root_spectrum(vals: torch.Tensor) -> torch.Tensor:
    """Square roots of the eigenvalues (F,) of a symmetric PSD matrix; those within round-off of 0
    (below F * eps * max) are taken as exactly 0, since sqrt would blow their error up to ~sqrt(eps)."""
    tol = vals.numel() * torch.finfo(vals.dtype).eps * vals.abs().max()
    return torch.where(vals > tol, vals, torch.zeros_like(vals)).sqrt()


def psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root (F, F) of a symmetric positive semi-definite s (F, F), by eigendecomposition."""
    vals, vecs = torch.linalg.eigh((s + s.T) / 2)  # (F,), (F, F)
    return (vecs * root_spectrum(vals)) @ vecs.T


def frechet_gaussians(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """Frechet (2-Wasserstein squared) distance between N(mu1, s1) and N(mu2, s2) (Dowson & Landau 1982).

    |mu1 - mu2|^2 + tr s1 + tr s2 - 2 tr (s1 s2)^(1/2); the last trace is the sum of square roots of
    the eigenvalues of the symmetric PSD matrix s1^(1/2) s2 s1^(1/2) (same spectrum as s1 s2), so no
    complex square roots arise even for singular covariances. float64 throughout."""
    mu1, s1, mu2, s2 = (t.to(torch.float64) for t in (mu1, s1, mu2, s2))
    root = psd_sqrt(s1)  # (F, F)
    middle = root @ s2 @ root  # (F, F) symmetric PSD
    cross = root_spectrum(torch.linalg.eigvalsh((middle + middle.T) / 2)).sum()
    value = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * cross
    return max(float(value), 0.0)  # round-off can dip below 0 for identical fits


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of feature sets a (N, F) and b (M, F) (Heusel et al. 2017)."""
    return frechet_gaussians(*gaussian_fit(a), *gaussian_fit(b))


def distance_blocks(a: torch.Tensor, b: torch.Tensor) -> Iterator[tuple[int, torch.Tensor]]:
    """Euclidean distances of a (N, F) to b (M, F) in row blocks (start, (n, M)) of bounded size, float64.

    Differences are formed directly (no |a|^2 + |b|^2 - 2ab expansion), so equal points are exactly 0 apart."""
    a, b = a.to(torch.float64), b.to(device=a.device, dtype=torch.float64)  # (N, F), (M, F)
    rows = max(1, CHUNK_ELEMENTS // max(b.shape[0], 1))
    for start in range(0, a.shape[0], rows):
        yield start, torch.cdist(a[start:start + rows], b, compute_mode="donot_use_mm_for_euclid_dist")  # (n, M)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance (N,) from each row of x (N, F) to its k-th nearest other row (itself excluded), k < N."""
    radii = []
    for start, d in distance_blocks(x, x):  # (n, N)
        rows = torch.arange(d.shape[0], device=d.device)  # (n,)
        d[rows, start + rows] = torch.inf  # a point is not its own neighbour
        radii.append(d.kthvalue(k, dim=1).values)  # (n,)
    return torch.cat(radii)  # (N,)


def in_manifold(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
    """Whether each of points (N, F) lies in some ball (closed) around centres (M, F) of radii (M,): (N,) bool."""
    return torch.cat([(d <= radii.to(d)[None]).any(dim=1) for _, d in distance_blocks(points, centres)])


def precision_recall(samples: torch.Tensor, reference: torch.Tensor, k: int) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019): the fraction of samples inside the
    reference's k-NN manifold, and of reference points inside the samples' k-NN manifold."""
    precision = in_manifold(samples, reference, knn_radii(reference, k)).double().mean()
    recall = in_manifold(reference, samples, knn_radii(samples, k)).double().mean()
    return float(precision), float(recall)


def mean_pairwise_distance(x: torch.Tensor) -> float:
    """Mean Euclidean distance over the N (N - 1) ordered pairs of distinct rows of x (N, F), N >= 2."""
    total = sum(float(d.sum()) for _, d in distance_blocks(x, x))
    return total / (x.shape[0] * (x.shape[0] - 1))


def frequencies(assignment: torch.Tensor, bins: int) -> torch.Tensor:
    """Fraction (bins,) float64 of the entries of assignment (N,) int64 that fall in each bin."""
    counts = torch.bincount(assignment.cpu(), minlength=bins)  # (bins,)
    return counts.to(torch.float64) / max(assignment.numel(), 1)


def weight_errors(empirical: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(total variation, max absolute error) between two probability vectors (K,), e.g. per-mode masses."""
    diff = (empirical.to(torch.float64) - target.to(torch.float64).to(empirical.device)).abs()  # (K,)
    return float(diff.sum() / 2), float(diff.max())
