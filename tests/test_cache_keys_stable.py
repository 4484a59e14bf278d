"""Cache keys are part of the on-disk format: every node of every workflow in workflows/ must
keep the key recorded in tests/data/workflow_cache_keys.json (written by the original
executor), so caches built before a change stay valid after it.

Regenerate only on a deliberate key-format change: `python tests/test_cache_keys_stable.py`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from samplegraph.graph.validate import execution_order, validate
from samplegraph.graph.workflow import Workflow
from samplegraph.nodes.api import Registry
from samplegraph.runtime.executor import compute_keys

sys.path.insert(0, str(Path(__file__).parent))
from helpers_workflows import LIGHT_WORKFLOWS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).parent / "data" / "workflow_cache_keys.json"
FIXED_FILE_STATE = [1234, 5678]  # weights' size and mtime differ between checkouts


def pin_file_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Replace every `file_state` (weights' size/mtime) in the node modules with a constant."""
    Registry.default()  # imports the model modules
    for module in [m for name, m in sys.modules.items() if name.startswith("samplegraph.nodes")]:
        if hasattr(module, "file_state"):
            monkeypatch.setattr(module, "file_state", lambda path: FIXED_FILE_STATE)


def workflow_keys() -> dict[str, dict[str, str | None]]:
    """Each workflow's node -> cache key, as the executor computes them before running."""
    specs = Registry.default().specs
    found = {}
    for path in LIGHT_WORKFLOWS:  # model.hf_lm keys depend on an optional package's file
        wf = Workflow.load(path)
        graph = validate(wf, specs)
        found[path.stem] = compute_keys(graph, execution_order(graph, list(wf.outputs)), wf.seed)
    return found


def test_every_workflow_keeps_its_recorded_cache_keys(monkeypatch):
    pin_file_state(monkeypatch)
    recorded = json.loads(FIXTURE.read_text())
    now = workflow_keys()
    assert set(now) == set(recorded), "workflows/ changed: regenerate the fixture deliberately"
    for name, keys in now.items():
        assert keys == recorded[name], name


if __name__ == "__main__":
    with pytest.MonkeyPatch.context() as mp:
        pin_file_state(mp)
        FIXTURE.write_text(json.dumps(workflow_keys(), indent=1, sort_keys=True) + "\n")
