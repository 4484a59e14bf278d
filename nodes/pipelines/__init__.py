"""Text-to-image pipelines: a local diffusers pipeline folder as model, text-encoder and VAE ports, and the
nodes between them (text.encode, model.text_condition, vae.encode, vae.decode; schedule.flux and schedule.flow_match
give FluxPipeline's and SD3's sigmas; the SDXL base -> refiner hand-off is nodes/schedules' sigmas.split_at_fraction):
SD 1.x/2.x, SDXL (base and refiner), SD3 and Flux (contracts: types.py, docs/ARCHITECTURE.md
"Text-to-image pipelines")."""


def nodes() -> list[type]:
    from .flux_schedule import FluxSchedule
    from .inpaint_condition import ModelInpaintCondition
    from .pipeline import ModelPipeline
    from .text_condition import ModelTextCondition
    from .text_encode import TextEncode
    from .vae_decode import VaeDecode
    from .vae_encode import VaeEncode

    return [ModelPipeline, TextEncode, ModelTextCondition, VaeEncode, VaeDecode, FluxSchedule, ModelInpaintCondition]
