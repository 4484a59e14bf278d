"""The repository itself: no generated outputs committed at its root, no references to design pages
it does not contain (docs/ARCHITECTURE.md is the design page)."""
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tracked() -> list[str]:
    return subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()


def test_no_outputs_at_the_root_and_no_missing_design_page():
    files = tracked()
    if not files:  # not a git checkout (an sdist): nothing to check
        return
    assert not [f for f in files if "/" not in f and f.endswith((".png", ".safetensors", ".json"))]
    texts = [f for f in files if f.endswith((".py", ".md", ".toml"))]
    missing = "DESIGN" + ".md"  # spelled apart so that this file does not match itself
    assert not [f for f in texts if missing in (ROOT / f).read_text(encoding="utf-8")]
    assert (ROOT / "docs" / "ARCHITECTURE.md").exists()
