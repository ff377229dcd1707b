"""A pickle module for `torch.load` that reads a checkpoint's tensors and turns everything else into inert data.

`torch.load(path, pickle_module=inert_pickle, weights_only=False)` keeps torch's own reading of the
archive and its storages; every object the pickle names comes from `Unpickler.find_class` here,
which never imports anything:

- tensor rebuilding and a few harmless constructors (`CALLABLES`) are the only things ever called;
- a name under a data-only namespace (`INERT_NAMESPACES`: Lightning, omegaconf, numpy, argparse,
  pathlib, typing) becomes an `InertName`; calling or building one gives an `Inert`, which only
  records the name and what it was given;
- any other name is refused (`Refused`) before it is looked up.

The opcodes that would call into an object (REDUCE, NEWOBJ, BUILD, SETITEMS, APPENDS, ADDITEMS,
INST, OBJ, EXT) are checked against what they would call, so no object outside these can be reached
at all. Why this design: docs/engine.md, "Safe loading".
"""

from __future__ import annotations

import _compat_pickle
import pickle
from collections import OrderedDict, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any, ClassVar

import torch
from torch._utils import _rebuild_tensor, _rebuild_tensor_v2, _rebuild_tensor_v3

# Top-level packages whose names stand only for data in a checkpoint's non-weight parts: callbacks,
# hyper-parameters, loop state. Names under them are recorded, never imported.
INERT_NAMESPACES = frozenset({
    "pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities", "torchmetrics",
    "omegaconf", "numpy", "argparse", "pathlib", "typing", "typing_extensions",
})  # fmt: skip


class Refused(pickle.UnpicklingError):
    """The pickle names, or would call, something that is neither tensor rebuilding, a listed constructor nor inert.

    `what` says it as a clause: "it names posix.system", "it calls a Tensor".
    """

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass(frozen=True, slots=True)
class InertName:
    """A global the file names under a data-only namespace, kept as its dotted name and never imported."""

    name: str


@dataclass(eq=False, slots=True)
class Inert:
    """What the file built from an InertName: the name and everything it was given, as plain data."""

    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    state: Any = None  # BUILD's argument (an object's __dict__ or __getstate__)
    items: dict[Any, Any] = field(default_factory=dict)  # SETITEMS: a dict subclass's entries (AttributeDict)
    elements: list[Any] = field(default_factory=list)  # APPENDS: a list subclass's entries


# torch's own rebuilders (untyped), called only through the checking wrappers below
_torch_rebuild_tensor: Callable[..., torch.Tensor] = _rebuild_tensor
_torch_rebuild_tensor_v2: Callable[..., torch.Tensor] = _rebuild_tensor_v2
_torch_rebuild_tensor_v3: Callable[..., torch.Tensor] = _rebuild_tensor_v3


def _storage(value: Any) -> torch.storage.TypedStorage:
    # persistent_load (torch's own) gives TypedStorages; anything else in a storage's place is not a tensor
    if not isinstance(value, torch.storage.TypedStorage):
        raise Refused(f"it rebuilds a tensor from a {type(value).__name__} instead of a storage")
    return value


def _metadata(value: Any) -> dict[str, bool] | None:
    if value is not None and not isinstance(value, dict):
        raise Refused(f"it gives a tensor metadata of type {type(value).__name__}")
    return value


def _tensor(storage: Any, offset: int, size: Any, stride: Any) -> torch.Tensor:
    return _torch_rebuild_tensor(_storage(storage), offset, size, stride)


def _tensor_v2(
    storage: Any, offset: int, size: Any, stride: Any, requires_grad: bool, hooks: Any, metadata: Any = None
) -> torch.Tensor:
    # the hooks a file names are dropped (torch.save writes them empty): inert data calls nothing back
    return _torch_rebuild_tensor_v2(
        _storage(storage), offset, size, stride, bool(requires_grad), OrderedDict(), _metadata(metadata)
    )


def _tensor_v3(
    storage: Any, offset: int, size: Any, stride: Any, requires_grad: bool, hooks: Any, dtype: Any, metadata: Any = None
) -> torch.Tensor:
    if not isinstance(dtype, torch.dtype):
        raise Refused(f"it gives a tensor a dtype of type {type(dtype).__name__}")
    return _torch_rebuild_tensor_v3(
        _storage(storage), offset, size, stride, bool(requires_grad), OrderedDict(), dtype, _metadata(metadata)
    )


def _parameter(data: Any, requires_grad: bool, hooks: Any) -> torch.nn.Parameter:
    if not isinstance(data, torch.Tensor):
        raise Refused(f"it makes a parameter of a {type(data).__name__}")
    return torch.nn.Parameter(data, bool(requires_grad))


def _latin1_bytes(text: Any, encoding: Any = "latin1") -> bytes:
    # pickle protocol 2 writes bytes as _codecs.encode(text, "latin1"); another codec name would import its module
    if type(text) is not str or encoding not in ("latin1", "latin-1"):
        raise Refused(f"it calls _codecs.encode with the codec {encoding!r}")
    return text.encode("latin-1")


# The only things a file may call: tensor rebuilding, and constructors of plain values.
CALLABLES: dict[str, Callable[..., Any]] = {
    "torch._utils._rebuild_tensor": _tensor,
    "torch._utils._rebuild_tensor_v2": _tensor_v2,
    "torch._utils._rebuild_tensor_v3": _tensor_v3,
    "torch._utils._rebuild_parameter": _parameter,
    "torch.Size": torch.Size,
    "torch.device": torch.device,
    "_codecs.encode": _latin1_bytes,
    "collections.OrderedDict": OrderedDict,
    "collections.defaultdict": defaultdict,
    **{
        f"builtins.{t.__name__}": t
        for t in (dict, list, tuple, set, frozenset, int, float, complex, bool, str, bytes, bytearray, slice)
    },
}
# Names a file may use as values but never call: torch's dtypes, and the storage class of new dtypes.
VALUES: dict[str, Any] = {
    "torch.storage.UntypedStorage": torch.UntypedStorage,
    **{f"torch.{name}": value for name, value in vars(torch).items() if isinstance(value, torch.dtype)},
}
_CALLABLE_IDS = frozenset(id(f) for f in CALLABLES.values())
_CLASSES = tuple(f for f in CALLABLES.values() if isinstance(f, type))


def _is_listed_callable(obj: Any) -> bool:
    return id(obj) in _CALLABLE_IDS


def _args(args: Any) -> tuple[Any, ...]:
    if type(args) is not tuple:
        raise Refused(f"it calls with {type(args).__name__} arguments")
    return args


class Unpickler(pickle._Unpickler):
    """pickle's Python unpickler with every name and every call checked (see the module's docstring)."""

    # pickle._Unpickler's own attributes, which typeshed leaves out
    proto: int
    fix_imports: bool
    stack: list[Any]
    append: Callable[[Any], None]
    pop_mark: Callable[[], list[Any]]

    # pickle's opcode table, with the opcodes that call into objects replaced below, after the class
    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:
        if self.proto < 3 and self.fix_imports:  # protocol 2 (torch.save's) writes Python 2's names
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        qualified = f"{module}.{name}"
        if qualified in CALLABLES:
            return CALLABLES[qualified]
        if qualified in VALUES:
            return VALUES[qualified]
        if module.partition(".")[0] in INERT_NAMESPACES:
            return InertName(qualified)
        raise Refused(f"it names {qualified}")

    def _call(self, func: Any, args: Any, kwargs: Any = None) -> Any:
        args = _args(args)
        kwargs = {} if kwargs is None else kwargs
        if type(kwargs) is not dict or not all(type(key) is str for key in kwargs):
            raise Refused("it calls with keyword arguments that are not a dict of names")
        if type(func) is InertName:
            return Inert(func.name, args, kwargs)
        if _is_listed_callable(func):
            return func(*args, **kwargs)
        raise Refused(f"it calls a {type(func).__name__}")

    def load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, None))

    def load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self.append(self._new(cls, args, kwargs))

    def _new(self, cls: Any, args: Any, kwargs: Any) -> Any:
        if type(cls) is InertName:
            return self._call(cls, args, kwargs)
        if any(cls is listed for listed in _CLASSES):
            return cls.__new__(cls, *_args(args), **(kwargs or {}))
        raise Refused(f"it creates an object from a {type(cls).__name__}")

    def _instantiate(self, klass: Any, args: list[Any]) -> None:  # INST and OBJ (protocols 0 and 1)
        if type(klass) is not InertName:
            raise Refused(f"it creates an object from a {type(klass).__name__}")
        self.append(Inert(klass.name, tuple(args)))

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if type(inst) is Inert:
            inst.state = state
        elif type(inst) is OrderedDict and _plain_attributes(state):
            inst.__dict__.update(state)  # a state dict's `_metadata`
        else:
            raise Refused(f"it sets the state of a {type(inst).__name__}")

    def load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._set_items(self.stack[-1], [key, value])

    def load_setitems(self) -> None:
        items = self.pop_mark()
        self._set_items(self.stack[-1], items)

    def _set_items(self, target: Any, items: list[Any]) -> None:
        mapping = target.items if type(target) is Inert else target
        if type(mapping) not in (dict, OrderedDict, defaultdict):
            raise Refused(f"it sets items of a {type(target).__name__}")
        for i in range(0, len(items), 2):
            mapping[items[i]] = items[i + 1]

    def load_append(self) -> None:
        value = self.stack.pop()
        self._extend(self.stack[-1], [value])

    def load_appends(self) -> None:
        items = self.pop_mark()
        self._extend(self.stack[-1], items)

    def _extend(self, target: Any, items: list[Any]) -> None:
        sequence = target.elements if type(target) is Inert else target
        if type(sequence) is not list:
            raise Refused(f"it appends to a {type(target).__name__}")
        sequence.extend(items)

    def load_additems(self) -> None:
        items = self.pop_mark()
        target = self.stack[-1]
        if type(target) is not set:
            raise Refused(f"it adds items to a {type(target).__name__}")
        target.update(items)

    def get_extension(self, code: int) -> None:  # EXT1, EXT2, EXT4
        # copyreg's extension registry (and its process-wide cache) maps codes to globals past find_class
        raise Refused(f"it uses the copyreg extension code {code}")


def _plain_attributes(state: Any) -> bool:
    return type(state) is dict and all(type(key) is str and not key.startswith("__") for key in state)


for _opcode, _method in {
    pickle.REDUCE: Unpickler.load_reduce,
    pickle.NEWOBJ: Unpickler.load_newobj,
    pickle.NEWOBJ_EX: Unpickler.load_newobj_ex,
    pickle.BUILD: Unpickler.load_build,
    pickle.SETITEM: Unpickler.load_setitem,
    pickle.SETITEMS: Unpickler.load_setitems,
    pickle.APPEND: Unpickler.load_append,
    pickle.APPENDS: Unpickler.load_appends,
    pickle.ADDITEMS: Unpickler.load_additems,
}.items():
    Unpickler.dispatch[_opcode[0]] = _method


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """One pickle from `file`, through `Unpickler` (torch's legacy format reads its headers with this)."""
    return Unpickler(file, **kwargs).load()
