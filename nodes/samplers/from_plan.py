"""sampler.from_plan: the Sampler of a SolverPlan found by sampler.plan_search, from the same candidates."""
from __future__ import annotations

from ...graph.errors import NodeError
from ..api import Node, node
from ..core.sampler import Sampler
from .plan_search import SolverPlan, assemble, describe


@node("sampler.from_plan", version=1)
class FromPlan(Node):
    """The sampler.plan (or single sampler) a SolverPlan describes (Liu et al. 2023, USF), built from `samplers`."""

    def run(self, plan: SolverPlan, samplers: list[Sampler]) -> Sampler:
        """Each segment's sampler is the candidate of the same kind and parameters."""
        known = {repr(describe(s)): s for s in samplers}
        parts = []
        for segment in plan.samplers:
            found = known.get(repr(segment))
            if found is None:
                raise NodeError(f"sampler.from_plan: the plan uses {segment['kind']} with params {segment['params']}, "
                                f"which is not among input 'samplers' ({[describe(s) for s in samplers]}); link the "
                                f"candidates the plan was searched over")
            parts.append(found)
        return assemble(parts, plan.switch_at)
