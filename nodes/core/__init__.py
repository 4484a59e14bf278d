"""The numerical contracts (docs/ARCHITECTURE.md, "The contracts"): Denoiser, Sigmas, State, Sampler, NoiseSource,
NodeContext. Import from the submodules (this package re-exports nothing, so that the node
API and the contracts can import each other's modules without cycles)."""
