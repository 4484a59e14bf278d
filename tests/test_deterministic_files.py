"""Identical results give identical files (issue 9, item 5c): io.save_tensor, the training scripts'
weights and disk cache entries, each written in fresh processes (the safetensors library orders
metadata keys differently in every process), are equal byte for byte."""
from __future__ import annotations

import json
import os
import subprocess
import sys

WRITE_ALL = """
import hashlib, json, tempfile
from pathlib import Path
import torch
from samplegraph.nodes.core.context import NodeContext
from samplegraph.nodes.io.save_tensor import SaveTensor
from samplegraph.nodes.models.networks.checkpoint import save_network
from samplegraph.nodes.models.networks.mlp_denoiser import MLPConfig
from samplegraph.runtime.cache import DiskCache

out = Path(tempfile.mkdtemp())
x = torch.arange(12.0).reshape(3, 4)
saved = SaveTensor(path="x.safetensors").run(x, NodeContext.detached(out_dir=out))
torch.manual_seed(0)
net = torch.nn.Linear(3, 2)
weights = save_network(net, MLPConfig(), out / "w.safetensors",
                       extra={"epochs": 3, "loss": 0.5, "classes": 10})
entry = DiskCache.encode_entry("ab" * 32, {"out": x}, {"out": torch.Tensor}, {"m": 1.0, "n": 2})
print(json.dumps([hashlib.sha256(b).hexdigest() for b in
                  (Path(saved).read_bytes(), weights.read_bytes(), entry)]))
"""


def test_identical_results_give_identical_files_across_processes():
    hashes = set()
    for seed in range(4):  # 4 processes: an accidental match of every key order is unlikely (< 1/200)
        out = subprocess.run([sys.executable, "-c", WRITE_ALL], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "PYTHONHASHSEED": str(seed)})
        assert out.returncode == 0, out.stderr[-2000:]
        hashes.add(tuple(json.loads(out.stdout.splitlines()[-1])))
    assert len(hashes) == 1
