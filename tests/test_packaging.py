"""Packaging: graph/, nodes/, runtime/ install as samplegraph.* subpackages only."""
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "benchmarks", "workflows", "docs", "training", "build"}


def listed_packages() -> set[str]:
    return set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])


def test_every_package_folder_is_listed_in_pyproject():
    folders = {
        "samplegraph." + ".".join(p.parent.relative_to(ROOT).parts)
        for p in ROOT.rglob("__init__.py")
        if p.parent != ROOT and not (set(p.relative_to(ROOT).parts) & SKIP) and ".egg-info" not in str(p)
    }
    assert folders - listed_packages() == set(), "add these folders to [tool.setuptools] packages"


def test_subpackages_resolve_under_samplegraph_and_no_top_level_modules_leak(tmp_path):
    """Run outside the checkout so only what is installed is importable."""
    code = ("import importlib.util, samplegraph.graph, samplegraph.nodes, samplegraph.runtime;"
            "print(samplegraph.graph.__name__, samplegraph.runtime.__name__);"
            "print([n for n in ('graph', 'nodes', 'runtime') if importlib.util.find_spec(n)])")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["samplegraph.graph samplegraph.runtime", "[]"]


def test_loading_every_node_imports_no_optional_or_heavy_package():
    """The registry imports every node module (every CLI start does): peers and extras load in run() only."""
    check = ("import sys\nfrom samplegraph.nodes import builtin_nodes\nbuiltin_nodes()\n"
             "heavy = ('scipy.optimize', 'diffusers', 'transformers', 'fastapi', 'uvicorn', 'ray', 'sklearn')\n"
             "print(sorted(m for m in heavy if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=ROOT.parent,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
