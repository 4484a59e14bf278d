"""Node plugins, one role per folder. `builtin_nodes()` is the explicit list of built-ins;
each role package lists its own nodes in a `nodes()` function (nothing scans folders)."""
from __future__ import annotations


def builtin_nodes() -> list[type]:
    """Every built-in node class."""
    from . import accel, data, discrete, guidance, io, latents, lm, metrics, models, rewards, samplers, schedules, search
    from . import pipelines

    return [*models.nodes(), *data.nodes(), *latents.nodes(), *schedules.nodes(), *samplers.nodes(),
            *guidance.nodes(), *io.nodes(), *metrics.nodes(), *rewards.nodes(), *search.nodes(),
            *lm.nodes(), *discrete.nodes(), *accel.nodes(), *pipelines.nodes()]
