"""The two walks of AWRS (Lipkin et al. 2025, "Fast Controlled Generation from Language Models with Adaptive
Weighted Rejection Sampling"), batched over rows; nodes/lm/awrs.py drives them.

A walk keeps, per row, the candidate it wants tested next (`pending`) and learns each verdict (`observe`).
Both walks visit tokens in the order of Gumbel keys k = log p + G, a sample without replacement from p, so
the first token accepted is an exact draw from p(t) 1[c(t)] / Z with Z = sum_t p(t) 1[c(t)]; they differ in
the unbiased estimate of Z they return:

- RecursiveWalk: Z(S) = p(x) c(x) + Z(S - x) for the candidate x drawn from the unrejected tokens S, so a
  rejection hands the estimate on to the rest; after the first accept x_k one more draw from the rest
  estimates Z(rest) by a coin flip: Z-hat = M_k (the mass not yet rejected, p(x_k) + M_{k+1}) if it is
  valid, else p(x_k). M_k is a suffix sum in key order, so there is no 1 - R cancellation.
- GeometricWalk: a with-replacement walk simulated from without-replacement ones: before each candidate,
  Geometric(1 - R) - 1 phantom rejections (R the rejected share of the mass); a new key order over the
  tokens not rejected after every accept, until `max_accepts` accepts; Z-hat = Z_p (max_accepts - 1) /
  (accepts + rejects - 1), the negative-binomial estimate (Rao-Blackwellised over the counts).

Tokens with p = 0 have key -inf and are never tested (they carry no mass, so they change neither the draw
nor Z). A row whose every token of positive mass is rejected ends dead: token -1, Z-hat = 0 (log -inf)."""
from __future__ import annotations

import math

import torch

from ..core.noise import NoiseSource
from .draws import GUMBEL, gumbel, uniform

NEG_INF = -math.inf
ROUND_SLOTS = 64  # geometric round r: Gumbel keys at slot 64 + 2r (r >= 1; round 0 shares GUMBEL), phantom
#                   uniforms at 65 + 2r; above every slot of nodes/lm/draws.py


def key_order(logp: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tokens (R, V) by descending key, their log-probabilities (R, V) in that order and the log mass (R, V)
    of every token from each rank on (a suffix logsumexp: the mass not yet rejected at that rank)."""
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices  # (R, V)
    ranked = logp.gather(1, order)  # (R, V)
    mass_from = torch.logcumsumexp(ranked.flip(-1), -1).flip(-1)  # (R, V)
    return order, ranked, mass_from


def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0, accurate at both ends (Maechler 2012)."""
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


class RecursiveWalk:
    """The recursive estimator (Lipkin et al. 2025): the first accept, then one more test settles Z-hat."""

    def __init__(self, logp: torch.Tensor, keys: torch.Tensor):
        rows, dev = logp.shape[0], logp.device
        self.order, self.ranked, self.mass_from = key_order(logp, keys)  # (R, V) each
        self.n = torch.isfinite(logp).sum(-1)  # (R,) tokens of positive mass
        self.rank = torch.zeros(rows, dtype=torch.long, device=dev)  # (R,) rank of the candidate to test
        self.at = torch.zeros(rows, dtype=torch.long, device=dev)  # (R,) rank of the accepted token
        self.checking = torch.zeros(rows, dtype=torch.bool, device=dev)  # (R,) testing the token after the accept
        self.done = self.n == 0  # (R,)
        self.token = torch.full((rows,), -1, dtype=torch.long, device=dev)
        self.value = torch.full((rows,), NEG_INF, dtype=torch.float64, device=dev)
        self.log_z = torch.full((rows,), NEG_INF, dtype=torch.float64, device=dev)
        self.accepted = torch.zeros(rows, dtype=torch.long, device=dev)
        self.rejected = torch.zeros(rows, dtype=torch.long, device=dev)

    def pending(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (n,) still walking and the token (n,) each wants tested."""
        rows = (~self.done).nonzero().flatten()
        return rows, self.order[rows, self.rank[rows]]

    def observe(self, rows: torch.Tensor, value: torch.Tensor) -> None:
        """The potential's log-weights (n,) of the pending candidates of rows (n,): finite means accepted."""
        ok = torch.isfinite(value)
        self.accepted[rows] += ok.long()
        self.rejected[rows] += (~ok).long()
        checking, rank = self.checking[rows], self.rank[rows]
        more = rank + 1 < self.n[rows]  # (n,) a candidate of positive mass follows
        settle = rows[checking]  # second test: valid -> the unrejected mass, else p of the accepted token
        at = self.at[settle]
        self.log_z[settle] = torch.where(ok[checking], self.mass_from[settle, at], self.ranked[settle, at])
        walking = ~checking
        hit = walking & ok
        first = rows[hit]
        self.token[first] = self.order[first, rank[hit]]
        self.value[first] = value[hit]
        self.at[first] = rank[hit]
        alone = rows[hit & ~more]  # accepted the last token of positive mass: Z-hat is its own mass
        self.log_z[alone] = self.mass_from[alone, rank[hit & ~more]]
        self.checking[rows[hit & more]] = True
        self.done[settle] = True
        self.done[alone] = True
        self.done[rows[walking & ~ok & ~more]] = True  # every token rejected: dead
        go = rows[walking & more]
        self.rank[go] += 1


class GeometricWalk:
    """The geometric estimator (Lipkin et al. 2025): phantom rejections make the walk one with replacement."""

    def __init__(self, logp: torch.Tensor, noise: NoiseSource, particle: torch.Tensor, position: torch.Tensor,
                 max_accepts: int):
        rows, v, dev = logp.shape[0], logp.shape[1], logp.device
        self.logp = logp.clone()  # (R, V) rejected tokens become -inf
        self.log_total = torch.logsumexp(logp, -1)  # (R,) the LM's mass over its support
        self.noise, self.particle, self.position, self.max_accepts = noise, particle, position, max_accepts
        self.known = torch.zeros(rows, v, dtype=torch.bool, device=dev)  # accepted before: never re-tested
        self.round = torch.zeros(rows, dtype=torch.long, device=dev)
        self.accepts = torch.zeros(rows, dtype=torch.long, device=dev)
        self.rejects = torch.zeros(rows, dtype=torch.float64, device=dev)  # real and phantom (can be huge)
        self.accepted = torch.zeros(rows, dtype=torch.long, device=dev)  # tested and valid
        self.rejected = torch.zeros(rows, dtype=torch.long, device=dev)  # tested and invalid
        self.token = torch.full((rows,), -1, dtype=torch.long, device=dev)
        self.value = torch.full((rows,), NEG_INF, dtype=torch.float64, device=dev)
        self.log_z = torch.full((rows,), NEG_INF, dtype=torch.float64, device=dev)
        self.order = torch.zeros(rows, v, dtype=torch.long, device=dev)
        self.mass_from = torch.zeros(rows, v, dtype=torch.float64, device=dev)
        self.log_u = torch.zeros(rows, v, dtype=torch.float64, device=dev)  # phantom uniforms by rank
        self.n = torch.zeros(rows, dtype=torch.long, device=dev)
        self.rank = torch.zeros(rows, dtype=torch.long, device=dev)
        self.counted = torch.zeros(rows, dtype=torch.bool, device=dev)  # phantoms of this candidate added
        self.done = ~torch.isfinite(self.log_total)
        self._start((~self.done).nonzero().flatten())

    def _start(self, rows: torch.Tensor) -> None:
        """A fresh key order over the unrejected tokens of rows (n,), each at its own round."""
        v = self.logp.shape[1]
        for r in self.round[rows].unique().tolist():
            sel = rows[self.round[rows] == r]
            slot = GUMBEL if r == 0 else ROUND_SLOTS + 2 * r
            keys = self.logp[sel] + gumbel(self.noise, self.particle[sel], self.position[sel], v, slot)  # (n, V)
            self.order[sel], _, self.mass_from[sel] = key_order(self.logp[sel], keys)
            u = uniform(self.noise, self.particle[sel], self.position[sel], v, ROUND_SLOTS + 1 + 2 * r)  # (n, V)
            self.log_u[sel] = torch.log(u)
        self.n[rows] = torch.isfinite(self.logp[rows]).sum(-1)
        self.rank[rows] = 0
        self.counted[rows] = False

    def _phantoms(self, rows: torch.Tensor) -> None:
        """Before a candidate is tested: Geometric(1 - R) - 1 draws with replacement that hit rejected tokens."""
        rows = rows[~self.counted[rows]]
        rank = self.rank[rows]
        share = (self.mass_from[rows, rank] - self.log_total[rows]).clamp(max=0.0)  # (n,) log unrejected share
        log_r = log1mexp(share)  # (n,) log R; -inf before any rejection
        self.rejects[rows] += torch.floor(self.log_u[rows, rank] / log_r)  # (n,) 0 when log_r = -inf
        self.counted[rows] = True

    def pending(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (n,) still walking and the token (n,) each wants tested (known-valid tokens accepted here)."""
        while True:
            rows = (~self.done).nonzero().flatten()
            token = self.order[rows, self.rank[rows]]
            self._phantoms(rows)
            known = self.known[rows, token]
            if not bool(known.any()):
                return rows, token
            self._accept(rows[known], token[known], self.value[rows[known]])

    def _accept(self, rows: torch.Tensor, token: torch.Tensor, value: torch.Tensor) -> None:
        first = self.accepts[rows] == 0
        self.token[rows[first]] = token[first]
        self.value[rows[first]] = value[first]
        self.known[rows, token] = True
        self.accepts[rows] += 1
        full = self.accepts[rows] >= self.max_accepts
        fin = rows[full]
        a = self.accepts[fin].to(torch.float64)
        self.log_z[fin] = (math.log(self.max_accepts - 1) - torch.log(a + self.rejects[fin] - 1)
                           + self.log_total[fin])
        self.done[fin] = True
        nxt = rows[~full]
        self.round[nxt] += 1
        self._start(nxt)

    def observe(self, rows: torch.Tensor, value: torch.Tensor) -> None:
        """The potential's log-weights (n,) of the pending candidates of rows (n,): finite means accepted."""
        ok = torch.isfinite(value)
        self.accepted[rows] += ok.long()
        self.rejected[rows] += (~ok).long()
        token = self.order[rows, self.rank[rows]]
        self._accept(rows[ok], token[ok], value[ok])
        bad, bad_token = rows[~ok], token[~ok]
        self.rejects[bad] += 1
        self.logp[bad, bad_token] = NEG_INF
        self.rank[bad] += 1
        self.counted[bad] = False
        # a round only runs out before its first accept (an accepted token stays and is found again)
        self.done[bad[self.rank[bad] >= self.n[bad]]] = True
