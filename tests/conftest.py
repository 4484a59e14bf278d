"""Shared test setup: GPU tests skip cleanly where there is no CUDA; one torch thread
(faster on the 2 shared CI cores)."""
import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
