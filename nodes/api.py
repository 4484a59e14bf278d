"""The node API: a node is a frozen pydantic model (its parameters) with a `run` method
whose type hints are its input ports and whose return annotation gives its output(s).

    @node("schedule.karras", version=1)
    class Karras(Node):
        '''Karras et al. (2022) noise levels.'''
        steps: int = Field(10, ge=1)
        def run(self) -> Sigmas: ...

Registration is explicit: `@node` only stamps the kind and checks the class; a `Registry`
is built from a list of classes (the built-ins) plus the entry-point group
`samplegraph.nodes`. No global mutable registry exists."""
from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler
from pydantic_core import CoreSchema, core_schema

from ..graph.errors import RegistryError
from ..graph.spec import NodeSpec, PortSpec
from .core.context import NodeContext

ENTRY_POINT_GROUP = "samplegraph.nodes"
KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
N = TypeVar("N", bound=type)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def json_typed(schema: Any) -> Any:
    """A copy of a pydantic core schema with strict scalars and int64-bounded ints."""
    if isinstance(schema, list):
        return [json_typed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: (v if k == "metadata" else json_typed(v)) for k, v in schema.items()}
    kind = out.get("type")
    if kind in ("float", "bool", "str"):
        out["strict"] = True
    if kind != "int":
        return out
    out["strict"] = True
    if "lt" not in out:
        out["le"] = min(out.get("le", INT64_MAX), INT64_MAX)
    if "gt" not in out:
        out["ge"] = max(out.get("ge", INT64_MIN), INT64_MIN)
    return core_schema.no_info_before_validator_function(integral_float_to_int, out)


def integral_float_to_int(value: Any) -> Any:
    """3.0 -> 3: JSON Schema counts a number with no fractional part as an integer."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


class JsonParams(BaseModel):
    """Parameters typed as JSON Schema says: an integer is a JSON integer (3 or 3.0, never "3"
    or true) within int64, a number takes integers, a boolean or string only itself.

    Lax coercion would let `"steps": "18"` pass although the exported schema rejects it, and
    an unbounded integer validates but overflows in torch at run time; so every int, float,
    bool and str in the model's core schema (nested in lists, tuples, optionals) is made strict
    and every int is bounded to int64, which the JSON Schema export then states as well."""

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[BaseModel], handler: GetCoreSchemaHandler) -> CoreSchema:
        return json_typed(handler(source))


class Node(JsonParams):
    """Base of every node: fields are parameters; subclasses define `run`."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    cacheable: ClassVar[bool] = True  # False for nodes with side effects (writing files)
    uses_seed: ClassVar[bool] = False  # True when outputs depend on the workflow seed
    cache_exempt: ClassVar[frozenset[str]] = frozenset()  # parameters that change no output: not in the cache key
    # parameters added after keys were recorded: at their default they stay out of the key, so the keys (and the
    # caches) of workflows written before them stay valid
    key_omits_default: ClassVar[frozenset[str]] = frozenset()

    def key_params(self) -> dict[str, Any]:
        """The parameters that enter the cache key (JSON mode): `cache_exempt` left out, and each of
        `key_omits_default` that is at its default."""
        exempt = self.cache_exempt or None  # the serializer itself: model_dump only forwards to it, per node
        params = self.__pydantic_serializer__.to_python(self, mode="json", exclude=exempt)
        for name in self.key_omits_default:
            if getattr(self, name) == type(self).model_fields[name].get_default(call_default_factory=True):
                params.pop(name, None)
        return params

    def external_state(self) -> Any:
        """What this node reads from outside the graph (e.g. a file's size and mtime), as JSON
        data; it enters the node's cache key, so changing it invalidates the node and its
        descendants. None (the default) for nodes that read nothing outside their inputs."""
        return None


def node(kind: str, version: int = 1) -> typing.Callable[[N], N]:
    """Stamp a Node subclass with its kind and version and check its ports now, not at run time."""
    if not KIND.match(kind):
        raise RegistryError(f"invalid node kind '{kind}': use lowercase dotted names like 'sampler.euler'")

    def stamp(cls: N) -> N:
        if not (isinstance(cls, type) and issubclass(cls, Node)):
            raise RegistryError(f"@node('{kind}') must decorate a Node subclass, got {cls!r}")
        cls.__node_kind__ = kind
        cls.__node_version__ = int(version)
        cls.__node_spec__ = build_spec(cls, kind, int(version))
        return cls

    return stamp


def spec_of(cls: type) -> NodeSpec:
    """The NodeSpec of a decorated class (RegistryError if it was never decorated)."""
    spec = cls.__dict__.get("__node_spec__")
    if spec is None:
        raise RegistryError(f"{cls.__module__}.{cls.__qualname__} is not a registered node: decorate it with @node")
    return spec


def build_spec(cls: type[Node], kind: str, version: int) -> NodeSpec:
    run = getattr(cls, "run", None)
    if run is None or run is Node.__dict__.get("run"):
        raise RegistryError(f"node '{kind}' ({cls.__qualname__}) has no run() method")
    try:
        hints = typing.get_type_hints(run)
    except Exception as e:  # unresolved forward reference in user code
        raise RegistryError(f"node '{kind}': cannot resolve type hints of run(): {e}") from None
    inputs = []
    context_param = None
    for name, param in list(inspect.signature(run).parameters.items())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise RegistryError(f"node '{kind}': run() may not take *{name}; declare a list[...] port")
        if name not in hints:
            raise RegistryError(f"Missing type hint for '{name}' in {cls.__qualname__}.run ('{kind}'). Please add one.")
        if hints[name] is NodeContext:
            context_param = name
            continue
        inputs.append(input_port(kind, name, hints[name], param.default is not inspect.Parameter.empty))
    if "return" not in hints:
        raise RegistryError(f"Missing return type hint in {cls.__qualname__}.run ('{kind}'). Please add one.")
    doc = inspect.cleandoc(cls.__doc__) if cls.__doc__ else ""  # the class's own, not inherited
    if not doc:
        raise RegistryError(f"node '{kind}' ({cls.__qualname__}) needs a docstring (one line citing its method)")
    return NodeSpec(kind=kind, version=version, doc=doc.splitlines()[0], params=cls,
                    inputs=tuple(inputs), outputs=output_ports(kind, hints["return"]),
                    cacheable=cls.cacheable, uses_seed=cls.uses_seed, context_param=context_param)


def input_port(kind: str, name: str, hint: Any, has_default: bool) -> PortSpec:
    tp, optional = strip_optional(hint)
    many = get_origin(tp) in (list, Sequence, typing.Sequence)
    if many:
        tp = get_args(tp)[0] if get_args(tp) else object
    if not isinstance(tp, type):
        raise RegistryError(f"node '{kind}': input '{name}' must be annotated with a class, got {hint!r}")
    return PortSpec(name, tp, required=not (optional or has_default), many=many)


def output_ports(kind: str, hint: Any) -> tuple[PortSpec, ...]:
    if isinstance(hint, type) and issubclass(hint, tuple) and hasattr(hint, "_fields"):
        ann = typing.get_type_hints(hint)
        return tuple(PortSpec(f, strip_optional(ann[f])[0]) for f in hint._fields)
    tp = strip_optional(hint)[0]
    if not isinstance(tp, type):
        raise RegistryError(f"node '{kind}': run() must return a class or a NamedTuple of classes, got {hint!r}")
    return (PortSpec("out", tp),)


def strip_optional(hint: Any) -> tuple[Any, bool]:
    args = get_args(hint)
    if get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


class Registry:
    """An immutable catalog of node kinds built from explicit lists of node classes."""

    def __init__(self, classes: Iterable[type[Node]]):
        self._classes: dict[str, type[Node]] = {}
        for cls in classes:
            spec = spec_of(cls)
            other = self._classes.get(spec.kind)
            if other is not None and other is not cls:
                raise RegistryError(f"node kind '{spec.kind}' is registered twice: by {qualname(other)} and {qualname(cls)}")
            self._classes[spec.kind] = cls
        self.specs: dict[str, NodeSpec] = {k: spec_of(c) for k, c in self._classes.items()}

    @classmethod
    def default(cls, plugins: bool = True) -> Registry:
        """The built-in nodes plus, unless `plugins=False`, every entry-point plugin."""
        from . import builtin_nodes

        return cls([*builtin_nodes(), *(load_plugins() if plugins else [])])

    def extended(self, classes: Iterable[type[Node]]) -> Registry:
        """A new registry with more node classes (embedders' own nodes)."""
        return Registry([*self._classes.values(), *classes])

    def node_class(self, kind: str) -> type[Node]:
        return self._classes[kind]

    def __contains__(self, kind: str) -> bool:
        return kind in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(self._classes)


def load_plugins() -> list[type[Node]]:
    """Node classes from the `samplegraph.nodes` entry points (a class or a list of classes)."""
    from importlib.metadata import entry_points

    found: list[type[Node]] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            items = obj() if callable(obj) and not isinstance(obj, type) else obj
        except Exception as e:
            raise RegistryError(f"plugin entry point '{ep.name} = {ep.value}' failed to load: {e}") from None
        items = items if isinstance(items, (list, tuple)) else [items]
        for item in items:
            if not (isinstance(item, type) and issubclass(item, Node)):
                raise RegistryError(f"plugin entry point '{ep.name} = {ep.value}' gave {item!r}, not a Node class")
            found.append(item)
    return found


def qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
