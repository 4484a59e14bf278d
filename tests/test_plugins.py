"""Node registration: a plugin distribution installed with pip appears in the default registry
(and the CLI listing) and runs; broken plugins and badly declared nodes fail at registration
with a RegistryError that says what is wrong and where."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import helpers_nodes as H
from samplegraph import Node, Registry, node
from samplegraph.graph.errors import RegistryError

PLUGIN_SRC = Path(__file__).parent / "plugin_dist"


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """The demo plugin installed by pip into a private folder (built from a copy of its source,
    so no build artefacts land in the repository)."""
    root = tmp_path_factory.mktemp("plugin")
    src = shutil.copytree(PLUGIN_SRC, root / "src")
    target = root / "site"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", "-q", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return target


def with_path(path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(path), *filter(None, [env.get("PYTHONPATH")])])
    return env


PROBE = """
import json
from samplegraph import Registry, Runtime
reg = Registry.default()
spec = reg.specs["demo.scale"]
wf = {"nodes": {"a": {"kind": "demo.scale", "params": {"value": 2.0}},
                "b": {"kind": "demo.scale", "inputs": {"x": "a"}, "params": {"factor": 5.0}}},
      "outputs": ["b"]}
result = Runtime(device="cpu", registry=reg).run(wf)
print(json.dumps({"kinds": sorted(reg), "doc": spec.doc, "module": reg.node_class("demo.scale").__module__,
                  "b": result["b"]}))
"""


def test_installed_plugin_is_in_the_default_registry_and_runs(plugin_path):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=with_path(plugin_path),
                         timeout=120, cwd=plugin_path.parent)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert "demo.scale" in got["kinds"]
    assert got["doc"] == "Multiplies a value by a factor (demo plugin node)."
    assert got["module"] == "samplegraph_demo_plugin"
    assert got["b"] == 2.0 * 3.0 * 5.0


def test_plugin_is_absent_when_not_installed():
    assert "demo.scale" not in Registry.default()
    assert "demo.scale" not in Registry.default(plugins=False)


def test_cli_nodes_lists_the_plugin(plugin_path):
    exe = shutil.which("samplegraph")
    if exe is None or importlib.util.find_spec("samplegraph.runtime.cli") is None:
        pytest.skip("the samplegraph CLI is not available yet")
    out = subprocess.run([exe, "nodes"], capture_output=True, text=True, env=with_path(plugin_path), timeout=120)
    assert out.returncode == 0, out.stderr
    assert "demo.scale" in out.stdout


# ---------------------------------------------------------------- broken plugins


def fake_distribution(root: Path, entry_point: str, module_source: str | None = None) -> str:
    """A minimal installed distribution (dist-info with an entry point, optional module) in `root`."""
    name = f"sgbroken{uuid.uuid4().hex[:8]}"
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[samplegraph.nodes]\nbroken = {entry_point.format(mod=name)}\n")
    if module_source is not None:
        (root / f"{name}.py").write_text(module_source)
    return entry_point.format(mod=name)


@pytest.mark.parametrize("entry_point, source, says", [
    ("{mod}_missing:NODES", None, "failed to load"),
    ("{mod}:NODES", "raise ImportError('needs a missing library')\n", "failed to load"),
    ("{mod}:NODES", "NODES = [int]\n", "not a Node class"),
    ("{mod}:NODES", "NODES = 'demo.scale'\n", "not a Node class"),
    ("{mod}:make", "def make():\n    return [42]\n", "not a Node class"),
    ("{mod}:make", "def make():\n    raise RuntimeError('factory broke')\n", "factory broke"),
], ids=["module-missing", "import-raises", "list-of-non-node", "string-not-node", "factory-gives-non-node",
        "factory-raises"])
def test_broken_plugin_is_a_registry_error_naming_the_entry_point(tmp_path, monkeypatch, entry_point, source, says):
    value = fake_distribution(tmp_path, entry_point, source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError) as info:
        Registry.default()
    assert f"'broken = {value}'" in str(info.value) and says in str(info.value)


def test_undecorated_plugin_class_is_a_registry_error_naming_the_class(tmp_path, monkeypatch):
    source = ("from samplegraph import Node\n"
              "class Forgot(Node):\n    '''Not decorated.'''\n    def run(self) -> float:\n        return 1.0\n"
              "NODES = [Forgot]\n")
    value = fake_distribution(tmp_path, "{mod}:NODES", source)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError) as info:
        Registry.default()
    assert f"{value.split(':')[0]}.Forgot" in str(info.value) and "@node" in str(info.value)


# ---------------------------------------------------------------- declaration errors


def test_missing_input_type_hint_is_a_registration_error():
    class NoHint(Node):
        """Has an unannotated port."""

        def run(self, x) -> float:  # noqa: ANN001
            return x

    with pytest.raises(RegistryError, match=r"Missing type hint for 'x' in .*NoHint\.run \('test\.nohint'\)\. "
                                            r"Please add one\."):
        node("test.nohint")(NoHint)


def test_missing_return_hint_is_a_registration_error():
    class NoReturn(Node):
        """Has no return annotation."""

        def run(self, x: float):  # noqa: ANN201
            return x

    with pytest.raises(RegistryError, match=r"Missing return type hint in .*NoReturn\.run .*Please add one"):
        node("test.noreturn")(NoReturn)


def test_missing_docstring_is_a_registration_error():
    class NoDoc(Node):
        def run(self) -> float:
            return 1.0

    with pytest.raises(RegistryError, match="docstring"):
        node("test.nodoc")(NoDoc)


def test_missing_run_is_a_registration_error():
    class NoRun(Node):
        """Forgot run()."""

    with pytest.raises(RegistryError, match="no run"):
        node("test.norun")(NoRun)


def test_var_args_port_is_a_registration_error():
    class VarArgs(Node):
        """Takes *xs."""

        def run(self, *xs: float) -> float:
            return sum(xs)

    with pytest.raises(RegistryError, match=r"\*xs"):
        node("test.varargs")(VarArgs)


def test_non_node_class_cannot_be_decorated():
    class Plain:
        """Not a Node."""

        def run(self) -> float:
            return 1.0

    with pytest.raises(RegistryError, match="Node subclass"):
        node("test.plain")(Plain)


@pytest.mark.parametrize("kind", ["Sampler.Euler", "sampler euler", "1sampler", "sampler..euler", "", "sampler."])
def test_invalid_kind_name_is_a_registration_error(kind):
    with pytest.raises(RegistryError, match="invalid node kind"):
        node(kind)


def test_duplicate_kind_in_one_registry_is_an_error_naming_both_classes():
    @node("test.const")
    class OtherConst(Node):
        """Another class claiming test.const."""

        def run(self) -> float:
            return 0.0

    with pytest.raises(RegistryError) as info:
        Registry([H.Const, OtherConst])
    assert "'test.const' is registered twice" in str(info.value)
    assert "helpers_nodes.Const" in str(info.value) and "OtherConst" in str(info.value)
    with pytest.raises(RegistryError):
        H.REGISTRY.extended([OtherConst])
    assert len(Registry([H.Const, H.Const])) == 1  # the same class twice is not a conflict


def test_registry_is_explicit_and_immutable():
    reg = Registry([H.Const])
    bigger = reg.extended([H.Scale])
    assert list(reg) == ["test.const"] and list(bigger) == ["test.const", "test.scale"]


def test_ports_come_from_type_hints():
    spec = H.REGISTRY.specs["test.loop"]
    assert spec.context_param == "ctx"
    assert [(p.name, p.type, p.required, p.many) for p in spec.inputs] == [("x", float, False, False)]
    add = H.REGISTRY.specs["test.add"]
    assert [(p.name, p.type, p.required, p.many) for p in add.inputs] == [("xs", float, True, True)]
    assert [(p.name, p.type) for p in H.REGISTRY.specs["test.minmax"].outputs] == [("lo", float), ("hi", float)]
    assert H.REGISTRY.specs["test.seeded"].uses_seed and not H.REGISTRY.specs["test.sink"].cacheable
