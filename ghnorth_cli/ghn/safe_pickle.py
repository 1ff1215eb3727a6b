"""Reading a pickled state dict of tensors without running any code from the file.

The released GHN-3 files (SamsungSAILMontreal/ghn3 on the Hugging Face Hub) are
``joblib.dump(ghn.state_dict())``: one pickle stream holding a ``collections.OrderedDict`` whose
tensors torch pickled as ``torch._utils._rebuild_tensor_v2(torch.storage._load_from_bytes(BYTES),
offset, size, stride, requires_grad, backward_hooks)``, ``BYTES`` being a legacy (pre-zip)
``torch.save`` of one storage. ``joblib.load`` or ``torch.load(weights_only=False)`` would
import and call whatever such a file names, so a downloaded file could run any code.

Here an unpickler admits exactly three globals and maps each to our own function, never
torch's: ``collections.OrderedDict`` (a plain dict), ``_rebuild_tensor_v2`` (bounds-checked view
of a storage we built) and ``_load_from_bytes`` (a parser of the legacy record, whose own
pickles may name only a floating-point ``torch.<Type>Storage``). Any other global, persistent
id or malformed record raises :class:`UnsafePickleError` before anything is called.
Layout of the legacy record: torch/serialization.py ``_legacy_save`` (torch 1.x-2.x).
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from dataclasses import dataclass
from typing import IO, Any

import torch

from ghnorth_cli.errors import GhnorthError

# torch.save's legacy header: a magic number, then the protocol version.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

#: The storage classes a GHN's weights may use, with their element type.
STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
}


class UnsafePickleError(GhnorthError):
    """A pickle asks for something other than a state dict of tensors (nothing of it was run)."""


@dataclass(frozen=True)
class _StorageRef:
    """A storage named in a legacy record's object pickle (its bytes follow the pickles)."""

    key: str
    dtype: torch.dtype
    numel: int


def _refuse(module: str, name: str, allowed: str) -> UnsafePickleError:
    return UnsafePickleError(f"the pickle asks for {module}.{name}, which a GHN file never holds "
                             f"(only {allowed}); refusing to load it, nothing in it was run")


class _StorageRecordUnpickler(pickle.Unpickler):
    """The pickles inside a legacy storage record: numbers, strings, a dict, one storage id."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in STORAGE_DTYPES:
            return STORAGE_DTYPES[name]
        raise _refuse(module, name, "a floating-point torch storage")

    def persistent_load(self, pid: Any) -> _StorageRef:
        ok = (isinstance(pid, tuple) and len(pid) == 6 and pid[0] == "storage" and isinstance(pid[1], torch.dtype)
              and isinstance(pid[2], str) and pid[3] == "cpu" and isinstance(pid[4], int) and pid[4] >= 0
              and pid[5] is None)
        if not ok:
            raise UnsafePickleError(f"unexpected storage reference in a tensor record: {pid!r:.80}")
        return _StorageRef(key=pid[2], dtype=pid[1], numel=pid[4])


def _record_load(stream: IO[bytes]) -> Any:
    try:
        return _StorageRecordUnpickler(stream).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # a truncated or garbled record
        raise UnsafePickleError(f"corrupt tensor record: {exc}") from None


def storage_from_legacy_bytes(data: Any) -> torch.Tensor:
    """The storage in a legacy ``torch.save(storage)`` record, as a new 1-D tensor.

    Expects: magic number, protocol 1001, system info (little-endian), the storage id, the list
    of storage keys (just this one), then its element count (int64) and raw bytes.
    Raises :class:`UnsafePickleError` for anything else.
    """
    if not isinstance(data, bytes):
        raise UnsafePickleError("a tensor record is not a byte string")
    stream = io.BytesIO(data)
    if _record_load(stream) != LEGACY_MAGIC or _record_load(stream) != LEGACY_PROTOCOL:
        raise UnsafePickleError("a tensor record is not a legacy torch.save storage")
    sys_info = _record_load(stream)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise UnsafePickleError("a tensor record is not from a little-endian machine")
    ref, keys = _record_load(stream), _record_load(stream)
    if not isinstance(ref, _StorageRef) or keys != [ref.key]:
        raise UnsafePickleError("a tensor record does not hold exactly one storage")
    header = stream.read(8)
    numel = int.from_bytes(header, "little") if len(header) == 8 else -1
    itemsize = torch.empty(0, dtype=ref.dtype).element_size()
    start, end = stream.tell(), stream.tell() + ref.numel * itemsize
    if numel != ref.numel or end != len(data):
        raise UnsafePickleError(f"a tensor record's size does not match its {ref.numel} elements")
    if ref.numel == 0:
        return torch.empty(0, dtype=ref.dtype)
    return torch.frombuffer(bytearray(memoryview(data)[start:end]), dtype=ref.dtype)


def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any,
                   metadata: Any = None) -> torch.Tensor:
    """``torch._utils._rebuild_tensor_v2``'s arguments -> a tensor, checked to lie inside ``storage``."""
    dims_ok = (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
               and all(isinstance(v, int) and v >= 0 for v in (*size, *stride)))
    if not isinstance(storage, torch.Tensor) or not dims_ok or not isinstance(offset, int) or offset < 0:
        raise UnsafePickleError("a tensor record has an invalid size, stride or offset")
    if not isinstance(requires_grad, bool) or hooks or metadata:
        raise UnsafePickleError("a tensor record carries hooks or metadata, which a GHN file never holds")
    if math.prod(size) and offset + sum((n - 1) * s for n, s in zip(size, stride)) >= storage.numel():
        raise UnsafePickleError(f"a tensor of size {list(size)} reaches past its storage")
    if math.prod(size) > storage.numel():  # overlapping strides: a memory bomb, never a saved weight
        raise UnsafePickleError(f"a tensor of size {list(size)} has more elements than its storage")
    if offset == 0 and storage.numel() == math.prod(size) and stride == _contiguous_strides(size):
        return storage.view(size)
    return torch.as_strided(storage, size, stride, offset).clone()


def _contiguous_strides(size: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for n in reversed(size):
        strides.append(step)
        step *= max(n, 1)
    return tuple(reversed(strides))


# What the outer pickle may call. Each is a fresh instance of a slot-less class, so that a BUILD
# opcode in the file can neither change our functions nor give these objects new behaviour.
class _NewOrderedDict:
    __slots__ = ()

    def __call__(self) -> collections.OrderedDict:
        return collections.OrderedDict()


class _RebuildTensor:
    __slots__ = ()

    def __call__(self, *args: Any) -> torch.Tensor:
        if not 6 <= len(args) <= 7:
            raise UnsafePickleError("a tensor record has the wrong number of fields")
        return rebuild_tensor(*args)


class _LoadStorage:
    __slots__ = ()

    def __call__(self, *args: Any) -> torch.Tensor:
        if len(args) != 1:
            raise UnsafePickleError("a storage record has the wrong number of fields")
        return storage_from_legacy_bytes(args[0])


class _StateDictUnpickler(pickle.Unpickler):
    """The outer pickle: an OrderedDict of torch-pickled tensors, and nothing else."""

    _ALLOWED = {
        ("collections", "OrderedDict"): _NewOrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _RebuildTensor,
        ("torch.storage", "_load_from_bytes"): _LoadStorage,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]()
        except KeyError:
            raise _refuse(module, name, "an OrderedDict of tensors") from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("the pickle refers to external objects, which a GHN file never holds")


def load_state_dict_pickle(stream: IO[bytes]) -> dict[str, torch.Tensor]:
    """Read a pickled ``{name: tensor}`` (e.g. ``joblib.dump(state_dict)``) without running its code.

    Returns a dict in the file's key order with new CPU tensors (requires_grad off).
    Raises :class:`UnsafePickleError` (a subclass of ``GhnorthError``) for any other content.
    """
    try:
        obj = _StateDictUnpickler(stream).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or garbled stream: pickle raises many types
        raise UnsafePickleError(f"not a readable pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and type(v) is torch.Tensor
                                            for k, v in obj.items()):
        raise UnsafePickleError(f"the pickle holds a {type(obj).__name__}, not a dict of named tensors")
    return {k: v.detach() for k, v in obj.items()}  # drops anything a BUILD opcode attached
