"""Checkpoints that try to run code when they are unpickled: each payload creates a marker file if it ever runs.

A payload is either an object that pickles as a call (`Call`), hidden in an otherwise ordinary
checkpoint written by torch.save, or raw pickle bytes for what no pickler writes by itself (the
opcodes of protocol 0, copyreg extension codes, names of another OS) put in a torch file's place of
the main pickle. `tests/engine/test_weights.py` checks that an unrestricted load really runs each one.
"""

from __future__ import annotations

import builtins
import copyreg
import functools
import importlib
import io
import marshal
import os
import pickle
import runpy
import struct
import subprocess
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

EXTENSION_CODE = 0x7A51  # a copyreg extension code for posix.system, registered only while a test needs it


class Call:
    """Pickles as a call of `func` with `args`: what a payload hides. It is only ever pickled, never called here."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func = func
        self.args = args

    def __call__(self, *args: Any) -> None:  # pickle wants the callable of a call to be callable
        raise AssertionError("a payload is only ever pickled")

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return self.func, self.args


class WithState:
    """Pickles as `func(*args)` followed by BUILD with `state`: setting attributes on whatever the call made."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any) -> None:
        self.reduced = (func, args, state)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...], Any]:
        return self.reduced


@dataclass(frozen=True, slots=True)
class Payload:
    """One way of running code from a pickle, and the first global (or operation) the file names for it."""

    refused: str  # the clause of the refusal: "it names posix.system"
    hidden: Any = None  # an object for torch.save to pickle inside a checkpoint…
    raw: bytes | None = None  # …or the raw main pickle of a torch file
    live: bool = True  # whether an unrestricted load runs it here (nt.system cannot run on Linux)
    protocol: int = 2  # torch.save's pickle protocol for `hidden`


def _op(opcode: bytes, *parts: bytes) -> bytes:
    return opcode + b"".join(parts)


def _text(value: str) -> bytes:  # BINUNICODE
    data = value.encode()
    return _op(pickle.BINUNICODE, struct.pack("<I", len(data)), data)


def _bytes(value: bytes) -> bytes:  # SHORT_BINBYTES / BINBYTES (protocol 3)
    return _op(pickle.BINBYTES, struct.pack("<I", len(value)), value)


def _global(module: str, name: str) -> bytes:
    return _op(pickle.GLOBAL, f"{module}\n{name}\n".encode())


def _raw(*opcodes: bytes) -> bytes:
    """A protocol 3 pickle of these opcodes."""
    return _op(pickle.PROTO, b"\x03") + b"".join(opcodes) + pickle.STOP


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def payloads(marker: Path, workdir: Path) -> dict[str, Payload]:
    """Every payload, by name; those that import or run a file use one written into `workdir`."""
    command = f"touch '{marker}'"
    module = f"vqbot_payload_{workdir.name.replace('-', '_')}"
    (workdir / f"{module}.py").write_text(_touch_code(marker) + "\n")
    code = marshal.dumps(compile(_touch_code(marker), "<payload>", "exec"))
    nested = io.BytesIO()
    torch.save({"x": Call(os.system, command)}, nested)
    return {
        "os.system": Payload("it names posix.system", Call(os.system, command)),
        "eval": Payload("it names builtins.eval", Call(builtins.eval, _touch_code(marker))),
        "exec": Payload("it names builtins.exec", Call(builtins.exec, _touch_code(marker))),
        "exec, protocol 4": Payload("it names builtins.exec", Call(builtins.exec, _touch_code(marker)), protocol=4),
        "getattr": Payload(
            "it names builtins.getattr", Call(Call(getattr, Call(builtins.__import__, "os"), "system"), command)
        ),
        "__import__": Payload("it names builtins.__import__", Call(builtins.__import__, module)),
        "subprocess": Payload("it names subprocess.check_call", Call(subprocess.check_call, ["touch", str(marker)])),
        "importlib": Payload("it names importlib.import_module", Call(importlib.import_module, module)),
        "runpy": Payload("it names runpy.run_path", Call(runpy.run_path, str(workdir / f"{module}.py"))),
        "pickle.loads": Payload("it names pickle.loads", Call(pickle.loads, pickle.dumps(Call(os.system, command)))),
        "a nested unrestricted torch.load": Payload(
            "it names torch.storage._load_from_bytes", Call(torch.storage._load_from_bytes, nested.getvalue())
        ),
        "functools.partial": Payload("it names functools.partial", Call(Call(functools.partial, os.system, command))),
        "types.FunctionType of marshal.loads": Payload(
            "it names types.FunctionType",
            raw=_raw(
                _global("types", "FunctionType"),
                _global("marshal", "loads"),
                _bytes(code),
                pickle.TUPLE1,
                pickle.REDUCE,
                pickle.EMPTY_DICT,
                pickle.TUPLE2,
                pickle.REDUCE,
                pickle.EMPTY_TUPLE,
                pickle.REDUCE,
            ),
        ),
        "marshal.loads": Payload(
            "it names marshal.loads",
            raw=_raw(_global("marshal", "loads"), _bytes(code), pickle.TUPLE1, pickle.REDUCE),
            live=False,  # it only makes a code object
        ),
        "types.CodeType": Payload("it names types.CodeType", raw=_raw(_global("types", "CodeType")), live=False),
        "nt.system": Payload(
            "it names nt.system",
            raw=_raw(_global("nt", "system"), _text(command), pickle.TUPLE1, pickle.REDUCE),
            live=False,  # Windows only
        ),
        "protocol 0 INST": Payload(  # no PROTO opcode: protocol 0, whose INST opcode names and calls at once
            "it names os.system", raw=b"(S" + repr(command).encode() + b"\nios\nsystem\n" + pickle.STOP
        ),
        "a copyreg extension code": Payload(
            f"it uses the copyreg extension code {EXTENSION_CODE}",
            raw=_raw(_op(pickle.EXT2, struct.pack("<H", EXTENSION_CODE)), _text(command), pickle.TUPLE1, pickle.REDUCE),
        ),
        "state set on a tensor": Payload(
            "it sets the state of a Parameter",
            WithState(
                torch._utils._rebuild_parameter, (torch.zeros(1), False, OrderedDict()), (False, None, OrderedDict())
            ),
            live=False,  # it only sets attributes; refused all the same, as no checkpoint needs it
        ),
    }


@contextmanager
def extension_registered() -> Iterator[None]:
    """EXTENSION_CODE means posix.system to every unpickler in the process while the block runs."""
    copyreg.add_extension("posix", "system", EXTENSION_CODE)
    try:
        yield
    finally:
        copyreg.remove_extension("posix", "system", EXTENSION_CODE)


def hostile_checkpoint(payload: Payload, *, legacy_format: bool = False) -> bytes:
    """A checkpoint with a state dict whose callbacks (or whole main pickle) are `payload`."""
    if payload.raw is not None:
        return _with_main_pickle(payload.raw, legacy_format=legacy_format)
    checkpoint = {"state_dict": {"w": torch.ones(2)}, "callbacks": {"ModelCheckpoint": payload.hidden}}
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer, pickle_protocol=payload.protocol, _use_new_zipfile_serialization=not legacy_format)
    return buffer.getvalue()


def _with_main_pickle(data: bytes, *, legacy_format: bool) -> bytes:
    if legacy_format:  # torch < 1.6: magic number, protocol version, system info, the pickle, storage keys
        header = [torch.serialization.MAGIC_NUMBER, torch.serialization.PROTOCOL_VERSION,
                  {"protocol_version": torch.serialization.PROTOCOL_VERSION, "little_endian": True,
                   "type_sizes": {"short": 2, "int": 4, "long": 4}}]  # fmt: skip
        return b"".join(pickle.dumps(part, protocol=2) for part in header) + data + pickle.dumps([], protocol=2)
    buffer = io.BytesIO()
    torch.save({}, buffer)
    archive = zipfile.ZipFile(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as rewritten:
        for name in archive.namelist():
            rewritten.writestr(name, data if name.endswith("/data.pkl") else archive.read(name))
    return out.getvalue()
