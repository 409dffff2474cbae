"""File-descriptor sets, as QEMU's `add-fd` / `remove-fd` / `query-fdsets` keep them.

A toolstack passes an fd with SCM_RIGHTS alongside `add-fd` and then names it
`/dev/fdset/<id>` wherever a command takes a file name (libxl does this for the device-state
file and CD-ROM images, xen-protocol.md 6.2). Opening such a name dups a member of the set
whose access mode allows the use. As in QEMU, sets belong to the daemon, not to a connection;
what a connection added and did not remove is closed when that connection ends (libxl opens
one connection per operation, and QEMU frees unused sets once no monitor holds them).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass, field

FDSET_PREFIX = "/dev/fdset/"
MAX_FDS = 64  # per daemon: a bound on what clients can make us hold


class FdSetError(Exception):
    pass


@dataclass
class FdEntry:
    fd: int
    opaque: str | None
    owner: object


@dataclass
class FdSets:
    sets: dict[int, list[FdEntry]] = field(default_factory=dict)

    def count(self) -> int:
        return sum(len(v) for v in self.sets.values())

    def add(self, fd: int, fdset_id: int | None, opaque: str | None, owner: object) -> tuple[int, int]:
        if self.count() >= MAX_FDS:
            os.close(fd)
            raise FdSetError(f"too many file descriptors held (at most {MAX_FDS})")
        if fdset_id is None:
            fdset_id = 0
            while fdset_id in self.sets:
                fdset_id += 1
        elif fdset_id < 0:
            os.close(fd)
            raise FdSetError("fdset-id must be non-negative")
        self.sets.setdefault(fdset_id, []).append(FdEntry(fd, opaque, owner))
        return fdset_id, fd

    def remove(self, fdset_id: int, fd: int | None) -> None:
        entries = self.sets.get(fdset_id)
        victims = [e for e in entries or [] if fd is None or e.fd == fd]
        if not victims:
            name = f"fdset-id:{fdset_id}" + (f", fd:{fd}" if fd is not None else "")
            raise FdSetError(f"File descriptor named '{name}' not found")
        for e in victims:
            entries.remove(e)  # type: ignore[union-attr]
            _close(e.fd)
        if not entries:
            del self.sets[fdset_id]

    def query(self) -> list[dict]:
        out = []
        for sid in sorted(self.sets):
            fds = []
            for e in self.sets[sid]:
                d: dict = {"fd": e.fd}
                if e.opaque is not None:
                    d["opaque"] = e.opaque
                fds.append(d)
            out.append({"fdset-id": sid, "fds": fds})
        return out

    def release_owner(self, owner: object) -> None:
        for sid in list(self.sets):
            keep = []
            for e in self.sets[sid]:
                if e.owner is owner:
                    _close(e.fd)
                else:
                    keep.append(e)
            if keep:
                self.sets[sid] = keep
            else:
                del self.sets[sid]

    def close(self) -> None:
        for entries in self.sets.values():
            for e in entries:
                _close(e.fd)
        self.sets.clear()

    def open(self, name: str, write: bool) -> int:
        """A new fd (the caller closes it) for `/dev/fdset/N`, or for a plain path (created
        mode 0600 when writing)."""
        if not name.startswith(FDSET_PREFIX):
            flags = (os.O_WRONLY | os.O_CREAT | os.O_TRUNC if write else os.O_RDONLY) | os.O_CLOEXEC
            try:
                return os.open(name, flags, 0o600)
            except OSError as e:
                raise FdSetError(f"Could not open '{name}': {e.strerror}") from None
        try:
            sid = int(name[len(FDSET_PREFIX):], 10)
        except ValueError:
            raise FdSetError(f"Could not open '{name}': not an fdset name") from None
        for e in self.sets.get(sid, []):
            try:
                mode = fcntl.fcntl(e.fd, fcntl.F_GETFL) & os.O_ACCMODE
            except OSError:
                continue
            if mode == os.O_RDWR or mode == (os.O_WRONLY if write else os.O_RDONLY):
                return os.dup(e.fd)
        raise FdSetError(f"Could not open '{name}': no file descriptor in fdset {sid} "
                         f"is open for {'writing' if write else 'reading'}")


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
