"""The device-state file: what `xen-save-devices-state` writes and `--restore` /
`xen-load-devices-state` read back. Pure functions over bytes and machines, no sockets.

Container (little-endian)::

    offset  size  field
    0       8     magic b"DMSTATE\\0"
    8       4     format version (FORMAT_VERSION)
    12      4     flags (0)
    16      8     body length in bytes
    24      32    sha256 of the body
    56      ...   body: UTF-8 JSON {"devmodel": version, "created": unix seconds,
                  "layout": {device: [class, snapshot version]}, "machine": Machine.snapshot()}

JSON has no bytes, tuples or non-string keys, so values are tagged: bytes as
{"$b": base64}, tuples as {"$t": [...]}, and a dict whose keys are not all strings (or that
has a key spelled like a tag) as {"$d": [[key, value], ...]}. Decoding gives back exactly
the values `snapshot()` returned.

Loading never leaves a half-restored machine: `check_state` validates the container, then
the layout (every device present, same class, same snapshot version, nothing extra), then
restores into a scratch machine built like the live one (each device's own validation), and
only then `apply_state` restores the live machine; should that still fail, the live machine
is put back to the snapshot taken just before.
"""

from __future__ import annotations

import json
import logging
import struct
import time
from collections.abc import Callable
from typing import Any

from devmodel import __version__

log = logging.getLogger("devmodel.statefile")

MAGIC = b"DMSTATE\0"
FORMAT_VERSION = 1
HEADER = struct.Struct("<8sIIQ32s")
# A state file is device registers, FIFOs and small buffers; VRAM and guest RAM are not in it.
MAX_BODY = 256 << 20
MAX_DEPTH = 64
MACHINE_SNAPSHOT_VERSION = 1  # the "version" of Machine.snapshot()
_TAGS = frozenset({"$b", "$t", "$d"})


class StateFileError(ValueError):
    """The file cannot be loaded into this machine; the message says why. Nothing applied."""


# ---- value encoding ------------------------------------------------------------------------
def encode_value(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise TypeError("snapshot nests too deeply")
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (bytes, bytearray, memoryview)):
        import base64  # base64, hashlib: at save/load only, not at start-up

        return {"$b": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, list):
        return [encode_value(x, depth + 1) for x in v]
    if isinstance(v, tuple):
        return {"$t": [encode_value(x, depth + 1) for x in v]}
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v) and not (v.keys() & _TAGS):
            return {k: encode_value(x, depth + 1) for k, x in v.items()}
        return {"$d": [[encode_value(k, depth + 1), encode_value(x, depth + 1)] for k, x in v.items()]}
    raise TypeError(f"a snapshot holds a {type(v).__name__}, which has no encoding")


def decode_value(v: Any, depth: int = 0) -> Any:
    if depth > MAX_DEPTH:
        raise StateFileError("state file nests too deeply")
    if isinstance(v, list):
        return [decode_value(x, depth + 1) for x in v]
    if isinstance(v, dict):
        if len(v) == 1:
            (tag, inner), = v.items()
            if tag == "$b":
                if not isinstance(inner, str):
                    raise StateFileError("state file: bad bytes value")
                import base64

                try:
                    return base64.b64decode(inner.encode("ascii"), validate=True)
                except (ValueError, UnicodeEncodeError):
                    raise StateFileError("state file: bad base64 value") from None
            if tag == "$t":
                if not isinstance(inner, list):
                    raise StateFileError("state file: bad tuple value")
                return tuple(decode_value(x, depth + 1) for x in inner)
            if tag == "$d":
                if not isinstance(inner, list) or not all(isinstance(p, list) and len(p) == 2
                                                          for p in inner):
                    raise StateFileError("state file: bad mapping value")
                try:
                    return {decode_value(k, depth + 1): decode_value(x, depth + 1) for k, x in inner}
                except TypeError:
                    raise StateFileError("state file: unhashable mapping key") from None
        return {k: decode_value(x, depth + 1) for k, x in v.items()}
    return v


# ---- container ---------------------------------------------------------------------------
def layout_of(machine) -> dict[str, list]:
    return {d.name: [type(d).__name__, d.SNAPSHOT_VERSION] for d in machine.devices}


def encode_state(machine) -> bytes:
    """The whole file for `machine`'s current state."""
    doc = {
        "devmodel": __version__,
        "created": int(time.time()),
        "layout": layout_of(machine),
        "machine": encode_value(machine.snapshot()),
    }
    import hashlib

    body = json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    return HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(body), hashlib.sha256(body).digest()) + body


def decode_state(data: bytes) -> dict[str, Any]:
    """Container checks (magic, version, length, checksum) and the decoded document."""
    if len(data) < HEADER.size:
        raise StateFileError(f"state file too short ({len(data)} bytes): not a devmodel state file")
    magic, version, flags, length, digest = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise StateFileError("not a devmodel state file (bad magic)")
    if version != FORMAT_VERSION:
        raise StateFileError(f"state file format version {version} is not supported "
                             f"(this devmodel reads version {FORMAT_VERSION})")
    if flags != 0:
        raise StateFileError(f"state file flags {flags:#x} unknown")
    if length > MAX_BODY:
        raise StateFileError(f"state file body of {length} bytes exceeds {MAX_BODY}")
    body = data[HEADER.size:]
    if len(body) != length:
        raise StateFileError(f"state file truncated or padded: body has {len(body)} bytes, "
                             f"header says {length}")
    import hashlib

    if hashlib.sha256(body).digest() != digest:
        raise StateFileError("state file checksum mismatch: the file is corrupted")
    try:
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise StateFileError(f"state file body is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("machine"), dict) \
            or not isinstance(doc.get("layout"), dict):
        raise StateFileError("state file body lacks its machine or layout")
    doc["machine"] = decode_value(doc["machine"])
    return doc


def check_layout(machine, doc: dict[str, Any]) -> None:
    """Every device of `machine` in the file with the same class and version, and nothing else.
    All problems are reported at once."""
    snap = doc["machine"]
    problems = []
    if snap.get("version") != MACHINE_SNAPSHOT_VERSION:
        problems.append(f"machine snapshot version {snap.get('version')} unsupported")
    devices = snap.get("devices")
    if not isinstance(devices, dict):
        raise StateFileError("state file has no device table")
    for dev in machine.devices:
        st = devices.get(dev.name)
        if st is None:
            problems.append(f"device {dev.name} ({type(dev).__name__}) is missing from the file")
            continue
        if not isinstance(st, dict):
            problems.append(f"device {dev.name}: state is not a mapping")
            continue
        if st.get("device") != type(dev).__name__:
            problems.append(f"device {dev.name}: file holds a {st.get('device')!r}, "
                            f"this machine has a {type(dev).__name__}")
        elif st.get("version") != dev.SNAPSHOT_VERSION:
            problems.append(f"device {dev.name}: state version {st.get('version')}, "
                            f"this devmodel supports version {dev.SNAPSHOT_VERSION}")
    names = {d.name for d in machine.devices}
    for extra in sorted(set(devices) - names):
        problems.append(f"device {extra} in the file does not exist in this machine")
    if problems:
        raise StateFileError("state file does not match this machine: " + "; ".join(problems))


def check_state(machine, data: bytes, scratch_factory: Callable[[], Any] | None) -> dict[str, Any]:
    """Everything that can be checked without touching `machine`; returns the machine snapshot.
    With a scratch factory, the state is restored into a throw-away machine built the same way,
    which runs every device's own validation."""
    doc = decode_state(data)
    check_layout(machine, doc)
    snap = doc["machine"]
    if scratch_factory is not None:
        try:
            scratch = scratch_factory()
        except (ValueError, OSError) as e:  # what building a machine raises (cli, build_pc)
            raise StateFileError(f"cannot build a machine to check the state in: {e}") from None
        try:
            check_layout(scratch, doc)
            try:
                scratch.restore(snap)
            except Exception as e:
                raise StateFileError(f"device state rejected: {e}") from None
        finally:
            scratch.close_backends()
            scratch.memory.close()
    return snap


def apply_state(machine, snap: dict[str, Any]) -> None:
    """Restore a checked snapshot into the live machine; on failure put the old state back."""
    backup = machine.snapshot()
    try:
        machine.restore(snap)
    except Exception as e:
        log.error("restoring device state failed (%s); rolling back", e)
        machine.restore(backup)
        raise StateFileError(f"device state rejected: {e}; the previous state was kept") from None
