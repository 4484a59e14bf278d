"""search.dts: Diffusion Tree Sampling / Search, a tree of partial trajectories with soft Bellman backups."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.context import NodeContext
from ..core.denoiser import Denoiser
from ..core.sampler import Sampler, check_renoise
from ..core.sigmas import Sigmas
from ..core.state import State
from ..rewards.reward import Reward
from .budget import Budget, BudgetDenoiser
from .common import layout, require_noise, scored
from .particles import child_ids
from .resample import resample_generator


@node("search.dts", version=1)
class Dts(Node):
    """Implements DTS and DTS* (Jain et al. 2025, Alg. 1): select, expand, roll out to x0, soft Bellman backup."""

    uses_seed: ClassVar[bool] = True
    rollouts: int = Field(16, ge=1, description="rollouts (root-to-x0 tree iterations) per tree")
    children: int = Field(2, ge=1, description="B: children a node gets before selection descends below it")
    lam: float = Field(1.0, gt=0, description="lambda: DTS samples p(x) exp(lambda r(x)); also the backup's "
                       "temperature V = (1/lambda) log mean_children exp(lambda V_child)")
    greedy: bool = Field(False, description="DTS*: select the child of highest value and return the best x0 "
                         "found (a maximiser); False: DTS, Boltzmann selection and a Boltzmann descent sample")
    checkpoint_every: int = Field(1, ge=1, description="memory bound: cache node states only at steps that "
                                  "are multiples of k (and x0 of the best leaf); others are recomputed from "
                                  "the nearest cached ancestor with the same noise keys")
    max_nfe: int | None = Field(None, ge=1, description="particle-NFE budget per tree: a tree stops adding "
                                "rollouts once it has spent this much (recomputation included)")
    max_batch: int | None = Field(None, ge=1, description="largest denoiser batch (calls are chunked)")

    def run(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
            ctx: NodeContext) -> torch.Tensor:
        """One sample per latent row (G, ...): each row is the root x_T of its own tree."""
        require_noise("search.dts", sampler, self.children, "children")
        tree, budget, done = self.grow(denoise, sigmas, sampler, latent, reward, ctx)
        out = tree.best_x0 if self.greedy else tree.descend(resample_generator(ctx.noise.seed, -1))  # (G, ...)
        ctx.add_nfe(budget.calls)
        ctx.record(**budget.report(), rollouts_per_tree=done.tolist(), tree_nodes=int(tree.count.sum()),
                   cached_states=int(tree.cached.sum()), best_reward_mean=float(tree.best_r.mean()))
        return out

    def grow(self, denoise: Denoiser, sigmas: Sigmas, sampler: Sampler, latent: torch.Tensor, reward: Reward,
             ctx: NodeContext) -> tuple[Tree, Budget, torch.Tensor]:
        """Build the G trees: the trees, the budget spent and the rollouts done per tree (G,)."""
        _, g = layout(latent, 1)
        tree = Tree(self, sampler, sigmas, latent, ctx)
        budget = Budget(g, max_particle_nfe=self.max_nfe)
        check_renoise(sampler, denoise)
        tree.den = BudgetDenoiser(denoise, budget, torch.zeros(0, dtype=torch.long), self.max_batch)
        done = torch.zeros(g, dtype=torch.long)  # (G,) rollouts per tree
        for it in range(self.rollouts):
            ctx.check_cancelled()
            active = ~budget.exhausted() & tree.open[:, 0]  # (G,) a closed root: every leaf reached x0
            if not bool(active.any()):
                break
            leaf = tree.select(resample_generator(ctx.noise.seed, it))  # (G,)
            grow = active & (tree.depth[tree.rows, leaf] < tree.steps)  # (G,) terminal leaves cannot grow
            if bool(grow.any()):
                trees = grow.nonzero().squeeze(1)  # (G',)
                x0, path = tree.rollout(trees, leaf[trees])  # (G', ...), (G', T) new nodes, -1 padded
                r = scored(reward, x0, trees, budget)  # (G',)
                tree.backup(trees, leaf[trees], path, r, x0)
            done += active.long()
            ctx.progress(it + 1, self.rollouts)
        return tree, budget, done


class Tree:
    """G trees in flat arrays (G, capacity); node 0 of each is its root x_T. One node = (parent, step, id)."""

    def __init__(self, cfg: Dts, sampler: Sampler, sigmas: Sigmas, latent: torch.Tensor, ctx: NodeContext):
        g = latent.shape[0]
        self.cfg, self.sampler, self.sigmas, self.noise = cfg, sampler, sigmas, ctx.noise
        self.steps = sigmas.values.numel() - 1
        cap = 1 + cfg.rollouts * self.steps
        slots = 1 + cfg.rollouts * (self.steps // cfg.checkpoint_every + 1)  # the memory bound
        self.rows = torch.arange(g)  # (G,)
        self.parent = torch.full((g, cap), -1, dtype=torch.long)
        self.depth = torch.zeros((g, cap), dtype=torch.long)  # schedule step of each node
        self.pid = torch.zeros((g, cap), dtype=torch.long)  # noise key of the step that made the node
        self.pid[:, 0] = self.rows
        self.value = torch.zeros((g, cap), dtype=torch.float64)
        self.kids = torch.full((g, cap, cfg.children), -1, dtype=torch.long)
        self.nkids = torch.zeros((g, cap), dtype=torch.long)
        self.open = torch.zeros((g, cap), dtype=torch.bool)  # a fresh rollout can still start below the node
        self.open[:, 0] = self.steps > 0
        self.count = torch.ones(g, dtype=torch.long)  # nodes per tree
        self.slot = torch.full((g, cap), -1, dtype=torch.long)  # cache slot of a node's state, -1: evicted
        self.slot[:, 0] = 0
        self.cache = latent.new_zeros((g, slots, *latent.shape[1:]))  # (G, S, ...) cached states x
        self.cache[:, 0] = latent
        self.cached = torch.ones(g, dtype=torch.long)
        self.best_r = torch.full((g,), -math.inf, dtype=torch.float64)
        self.best_x0 = latent.clone()  # (G, ...)
        self.den: BudgetDenoiser

    def state(self, x: torch.Tensor, trees: torch.Tensor, node: torch.Tensor, key: torch.Tensor) -> State:
        """A sampler State at node's step holding x (B, ...), drawing noise with ids key (B,)."""
        st = self.sampler.init(x, self.sigmas, particle=key.to(x.device))
        return st.replace(step=self.depth[trees, node].to(x.device))

    def step(self, x: torch.Tensor, trees: torch.Tensor, node: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """x at node (B, ...) stepped once with noise keys key (B,): the state of the child made with key."""
        self.den.group = trees
        out = self.sampler.step(self.den, self.state(x, trees, node, key), self.noise)
        if out.history:
            raise NodeError(f"search.dts rebuilds states from x alone; {type(self.sampler).__name__} keeps "
                            f"multistep history; use a one-step sampler (euler_ancestral, dpmpp_sde, ...)")
        return out.x  # (B, ...)

    def select(self, gen: torch.Generator) -> torch.Tensor:
        """Descend from each root through fully expanded nodes: Boltzmann over child values, or argmax (DTS*)."""
        cur = torch.zeros_like(self.rows)  # (G,)
        for _ in range(self.steps):
            full = self.nkids[self.rows, cur] == self.cfg.children  # (G,)
            if not bool(full.any()):
                break
            kids = self.kids[self.rows, cur]  # (G, B)
            v = self.value.gather(1, kids.clamp_min(0))  # (G, B)
            v = torch.where(self.open.gather(1, kids.clamp_min(0)), v, -math.inf)  # closed subtrees: never
            if self.cfg.greedy:
                pick = v.argmax(1)  # (G,)
            else:
                pick = torch.multinomial(torch.softmax(self.cfg.lam * v, 1), 1, generator=gen).squeeze(1)  # (G,)
            cur = torch.where(full, kids[self.rows, pick], cur)  # (G,)
        return cur

    def x_of(self, trees: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """States x (G', ...) of nodes (G',): cached, or replayed from the nearest cached ancestor."""
        k = self.cfg.checkpoint_every
        path = [node]  # path[j]: ancestor at distance j
        for _ in range(k - 1):
            path.append(self.parent[trees, path[-1]].clamp_min(0))
        path_t = torch.stack(path, 1)  # (G', k)
        hops = (self.slot[trees[:, None], path_t] < 0).long().cumprod(1).sum(1)  # (G',) uncached nodes on top
        start = path_t[torch.arange(trees.numel()), hops.clamp_max(k - 1)]  # (G',) the cached ancestor
        x = self.cache[trees, self.slot[trees, start].clamp_min(0)]  # (G', ...)
        for j in range(int(hops.max()) if trees.numel() else 0, 0, -1):
            live = (hops >= j).nonzero().squeeze(1)  # (G'',) trees still replaying
            src, dst = path_t[live, j], path_t[live, j - 1]  # (G'',) step src -> dst with dst's noise key
            x[live] = self.step(x[live], trees[live], src, self.pid[trees[live], dst])
        return x

    def add(self, trees: torch.Tensor, par: torch.Tensor, key: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Append children (G',) of nodes par made with keys key, holding x (G', ...); their indices (G',)."""
        new = self.count[trees].clone()  # (G',)
        self.count[trees] += 1
        self.parent[trees, new], self.pid[trees, new] = par, key
        self.depth[trees, new] = self.depth[trees, par] + 1
        self.open[trees, new] = self.depth[trees, new] < self.steps
        self.kids[trees, par, self.nkids[trees, par]] = new
        self.nkids[trees, par] += 1
        keep = (self.depth[trees, new] % self.cfg.checkpoint_every == 0).nonzero().squeeze(1)  # (G'',)
        t, n = trees[keep], new[keep]
        self.slot[t, n] = self.cached[t]
        self.cache[t, self.cached[t]] = x[keep]
        self.cached[t] += 1
        return new

    def rollout(self, trees: torch.Tensor, leaf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expand a fresh child of each leaf (G',) and run it to x0; every node on the way joins the tree."""
        # a rollout's nodes share its key (one noise stream), so the child index also encodes the step
        key = child_ids(self.pid[trees, leaf], 0, self.depth[trees, leaf] * self.cfg.children + self.nkids[trees, leaf])
        x = self.x_of(trees, leaf)  # (G', ...)
        path = torch.full((trees.numel(), self.steps), -1, dtype=torch.long)  # (G', T)
        cur = leaf.clone()
        for j in range(self.steps):
            live = (self.depth[trees, cur] < self.steps).nonzero().squeeze(1)  # (G'',)
            if not live.numel():
                break
            x[live] = self.step(x[live], trees[live], cur[live], key[live])
            cur[live] = self.add(trees[live], cur[live], key[live], x[live])
            path[live, j] = cur[live]
        return x, path

    def backup(self, trees: torch.Tensor, leaf: torch.Tensor, path: torch.Tensor, r: torch.Tensor,
               x0: torch.Tensor) -> None:
        """V = r on the new rollout nodes, then V_t = (1/lam) log mean_children exp(lam V_{t+1}) up to the root."""
        lam = self.cfg.lam
        new = path >= 0  # (G', T)
        tt = trees[:, None].expand_as(path)[new]
        self.value[tt, path[new]] = r[:, None].expand_as(path)[new]
        better = r > self.best_r[trees]  # (G',)
        self.best_r[trees] = torch.where(better, r, self.best_r[trees])
        self.best_x0[trees[better]] = x0[better]
        cur = leaf.clone()  # (G',)
        live = torch.ones_like(cur, dtype=torch.bool)
        for j in range(self.steps - 1, -1, -1):  # the new nodes bottom up, then the leaf and its ancestors
            self.refresh_open(trees[new[:, j]], path[new[:, j], j])
        for _ in range(self.steps + 1):
            self.refresh_open(trees[live], cur[live])
            kids = self.kids[trees, cur]  # (G', B)
            has = kids >= 0  # (G', B)
            v = torch.where(has, self.value[trees[:, None], kids.clamp_min(0)] * lam, -math.inf)  # (G', B)
            soft = (torch.logsumexp(v, 1) - torch.log(has.sum(1).double())) / lam  # (G',) log-MEAN-exp
            self.value[trees[live], cur[live]] = soft[live]
            up = self.parent[trees, cur]  # (G',)
            live = live & (up >= 0)
            if not bool(live.any()):
                break
            cur = up.clamp_min(0)

    def refresh_open(self, trees: torch.Tensor, node: torch.Tensor) -> None:
        """Nodes (G',) stay open while above x0 and not fully expanded, or with an open child."""
        kids = self.kids[trees, node]  # (G', B)
        open_kid = ((kids >= 0) & self.open[trees[:, None], kids.clamp_min(0)]).any(1)  # (G',)
        full = self.nkids[trees, node] == self.cfg.children  # (G',)
        self.open[trees, node] = (self.depth[trees, node] < self.steps) & (~full | open_kid)

    def descend(self, gen: torch.Generator) -> torch.Tensor:
        """DTS's sample: from each root, pick children w.p. ~ exp(lam V) down to a leaf at x0; its x (G, ...)."""
        cur = torch.zeros_like(self.rows)  # (G,)
        for _ in range(self.steps):
            kids = self.kids[self.rows, cur]  # (G, B)
            has = kids >= 0
            if not bool(has.any()):
                break
            v = torch.where(has, self.cfg.lam * self.value.gather(1, kids.clamp_min(0)), -math.inf)  # (G, B)
            pick = torch.multinomial(torch.softmax(v, 1).nan_to_num(1.0), 1, generator=gen).squeeze(1)  # (G,)
            cur = torch.where(has.any(1), kids[self.rows, pick], cur)  # (G,)
        return self.x_of(self.rows, cur)
