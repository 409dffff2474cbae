"""Lock-down of a running daemon, as Xen's `dm_restrict` does for QEMU (docs/security.md).

Peer credentials (`--allow-uid`): every connection accepted on the hypervisor socket and on
the QMP sockets is checked with SO_PEERCRED; a uid not on the list is refused (an ERROR on the
hypervisor socket, a QMP error on a monitor) and the refusal is logged.

After the machine is built (disk images, taps, ptys, qemu-nbd are open) and the sockets listen,
`apply` runs once, in this order, before the event loop starts:

1. every module the daemon may import later is imported now (the chroot hides the venv);
2. resource limits (`--max-memory`): RLIMIT_DATA, RLIMIT_NOFILE, RLIMIT_CORE;
3. `--chroot DIR`: chroot(DIR), chdir("/");
4. `--runas USER[:GROUP]`: setgroups([]), setresgid, setresuid; then verified: setuid(0) must
   fail and no capability may remain;
5. PR_SET_NO_NEW_PRIVS, and with `--seccomp on` a BPF filter (a denylist, see SECCOMP_DENY)
   installed on every thread (SECCOMP_FILTER_FLAG_TSYNC: the disk and NBD worker threads
   exist already).

No dependency: prctl and seccomp are called through ctypes. (The libseccomp binding is a
Debian package for the system Python only, python3-seccomp; it is not on PyPI.)
"""

from __future__ import annotations

import ctypes
import errno
import grp
import importlib
import logging
import os
import platform
import pwd
import resource
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("devmodel.lockdown")

_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
# RLIMIT_NOFILE under --max-memory: fds the daemon may still open (MEM_ADD regions, QMP
# add-fd, sessions); those already open keep working whatever their number.
MAX_FILES = 1024


# ---- peer credentials ----------------------------------------------------------------------
def default_allowed() -> frozenset[int]:
    """Without --allow-uid: the daemon's own (effective) uid at start-up, and root."""
    return frozenset({os.geteuid(), 0})


def peer_creds(sock: socket.socket) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process that connected `sock` (as of connect()), or None."""
    try:
        return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except OSError:
        return None


def refusal(sock: socket.socket, allowed: frozenset[int] | None, where: str) -> str | None:
    """None when the peer of `sock` may stay; else the reason, already logged."""
    if allowed is None:
        return None
    creds = peer_creds(sock)
    if creds is None:
        why = "peer credentials unavailable"
    elif creds[1] in allowed:
        return None
    else:
        why = f"uid {creds[1]} is not allowed (--allow-uid)"
    log.warning("refused a connection on %s from pid %s: %s", where,
                creds[0] if creds else "?", why)
    return why


def admit(sock: socket.socket, allowed: frozenset[int] | None, where: str,
          refused: Callable[[str], bytes]) -> bool:
    """The peer check of a just accepted connection (--allow-uid): True if it may stay; else
    the peer gets `refused(why)`, its protocol's one error message (best effort), and the
    socket is closed. The hypervisor socket and the QMP monitors both admit so."""
    why = refusal(sock, allowed, where)
    if why is None:
        return True
    try:
        sock.send(refused(why))
    except OSError:
        pass
    sock.close()
    return False


def accept_checked(listener: socket.socket, allowed: frozenset[int] | None, where: str,
                   refused: Callable[[str], bytes]) -> socket.socket | None:
    """Accept one connection from a non-blocking `listener` (a reader callback) and `admit`
    it: the connection, or None if there was none, accept failed, or the peer was refused."""
    try:
        s, _ = listener.accept()
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as e:
        log.warning("accept on %s failed: %s", where, e)
        return None
    return s if admit(s, allowed, where, refused) else None


# ---- command line (devmodel run) -------------------------------------------------------------
def add_options(p) -> None:
    """The lock-down options of `devmodel run` (docs/security.md)."""
    import argparse

    from devmodel.cli import _size  # SIZE as --memory takes it (128M, 2G, bytes)

    def uid(text: str) -> int:
        if not text.isdigit():
            try:
                return pwd.getpwnam(text).pw_uid
            except KeyError:
                raise argparse.ArgumentTypeError(f"no user {text!r}") from None
        return int(text)

    g = p.add_argument_group("lock-down (docs/security.md)")
    g.add_argument("--allow-uid", action="append", type=uid, metavar="UID",
                   help="serve connections (hypervisor and QMP sockets) only from this uid, "
                        "checked with SO_PEERCRED (repeatable; default: the daemon's own uid "
                        "and root; given at all, only the uids listed)")
    g.add_argument("--runas", metavar="USER[:GROUP]",
                   help="drop to this user once the backends are open and the sockets listen")
    g.add_argument("--chroot", metavar="DIR", help="chroot to DIR after opening everything")
    g.add_argument("--max-memory", type=_size, metavar="SIZE",
                   help="RLIMIT_DATA (the daemon's own heap; guest RAM is not counted), plus "
                        f"RLIMIT_NOFILE {MAX_FILES} and RLIMIT_CORE 0")
    g.add_argument("--seccomp", choices=("on", "off"), default="off",
                   help="a seccomp filter denying exec, fork, ptrace, mount, module loading "
                        "and other system calls a device model never needs (default off)")


def plan_from_args(args) -> Plan:
    """make_plan from parsed `devmodel run` options; ValueError on a bad combination."""
    return make_plan(args.runas, args.chroot, args.max_memory, args.seccomp == "on")


def allowed_from_args(args) -> frozenset[int]:
    uids = getattr(args, "allow_uid", None)
    return frozenset(uids) if uids else default_allowed()


# ---- the plan, checked at start-up -----------------------------------------------------------
@dataclass
class Plan:
    runas: tuple[int, int, str] | None = None  # uid, gid, name
    chroot: str | None = None
    max_memory: int | None = None
    seccomp: bool = False

    def __bool__(self) -> bool:
        return bool(self.runas or self.chroot or self.max_memory or self.seccomp)


def resolve_user(spec: str) -> tuple[int, int, str]:
    """USER[:GROUP], names or numbers; the group defaults to the user's primary group."""
    user, _, group = spec.partition(":")
    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        uid, gid, name = pw.pw_uid, pw.pw_gid, pw.pw_name
    except KeyError:
        if not user.isdigit():
            raise ValueError(f"--runas {spec}: no user {user!r}") from None
        uid, gid, name = int(user), int(user), user  # a bare uid with no passwd entry
    if group:
        try:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise ValueError(f"--runas {spec}: no group {group!r}") from None
    if uid == 0 or gid == 0:
        raise ValueError(f"--runas {spec}: must name an unprivileged user and group, not root")
    return uid, gid, name


def make_plan(runas: str | None, chroot: str | None, max_memory: int | None,
              seccomp: bool) -> Plan:
    """Everything that can be checked before the machine is built; ValueError otherwise."""
    plan = Plan(chroot=chroot, max_memory=max_memory, seccomp=seccomp)
    if (runas or chroot) and os.geteuid() != 0:
        raise ValueError("--runas and --chroot need the daemon to start as root")
    if runas:
        plan.runas = resolve_user(runas)  # looked up now: /etc/passwd is gone after the chroot
    if chroot and not os.path.isdir(chroot):
        raise ValueError(f"--chroot {chroot}: not a directory")
    if seccomp and _arch() is None:
        raise ValueError(f"--seccomp on: not supported on {platform.machine()}")
    if max_memory is not None and max_memory < 16 << 20:
        raise ValueError("--max-memory: below 16M the daemon cannot run")
    return plan


# ---- applying it ---------------------------------------------------------------------------
def preload() -> None:
    """Import what the daemon would import lazily later: inside a chroot the source tree is not
    reachable any more. Optional extras that are not installed (atheris) are skipped."""
    import pkgutil

    import devmodel

    for name in ("asyncio", "json", "uuid", "dataclasses", "stat", "threading", "traceback",
                 "uvloop", "encodings.idna",
                 "encodings.latin_1", "encodings.ascii", "encodings.utf_8"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    for mod in pkgutil.walk_packages(devmodel.__path__, "devmodel."):
        # __main__ would run the command line again; the rest is not part of the daemon.
        if mod.name.endswith("__main__") or mod.name.startswith(
                ("devmodel.fuzz", "devmodel.hvsim", "devmodel.demo", "devmodel.client")):
            continue
        try:
            importlib.import_module(mod.name)
        except Exception as e:  # noqa: BLE001 - an optional extra; the daemon does not need it
            log.debug("not preloaded: %s: %s", mod.name, e)


def set_limits(max_memory: int) -> None:
    """RLIMIT_DATA, not RLIMIT_AS: guest RAM arrives as memfds mapped MAP_SHARED (MEM_ADD), and
    those mappings count toward RLIMIT_AS but not RLIMIT_DATA (Linux >= 4.7 counts private
    writable mappings and brk, i.e. the heap). With RLIMIT_AS at 256M a 1 GiB guest cannot even
    be mapped; RLIMIT_DATA bounds what the daemon itself allocates, whatever the guest size."""
    resource.setrlimit(resource.RLIMIT_DATA, (max_memory, max_memory))
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = MAX_FILES if hard == resource.RLIM_INFINITY else min(hard, MAX_FILES)
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a core would hold guest memory


def drop_privileges(uid: int, gid: int, status_fd: int | None = None) -> None:
    """setgroups([]), setresgid, setresuid, then proof that root cannot be regained. `status_fd`:
    /proc/self/status opened before a chroot, to check that no capability is left."""
    os.setgroups([])  # no supplementary group (disk, kvm...): nothing beyond uid/gid
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise RuntimeError("setuid(0) succeeded after dropping privileges")
    try:
        os.setgid(0)
    except PermissionError:
        pass
    else:
        raise RuntimeError("setgid(0) succeeded after dropping privileges")
    caps = _status_field("CapEff", status_fd)
    if caps is not None and int(caps, 16) != 0:
        raise RuntimeError(f"capabilities remain after dropping privileges: CapEff {caps}")


def apply(plan: Plan) -> None:
    """Lock the process down; raises (RuntimeError, OSError) if any step fails: the caller
    must then exit, never serve half locked down."""
    if not plan:
        return
    if plan.chroot or plan.runas:
        preload()
    if plan.max_memory is not None:
        set_limits(plan.max_memory)
    status_fd = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC) if plan.runas else None
    try:
        if plan.chroot:
            os.chroot(plan.chroot)
            os.chdir("/")
        if plan.runas:
            drop_privileges(plan.runas[0], plan.runas[1], status_fd)
    finally:
        if status_fd is not None:
            os.close(status_fd)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if plan.seccomp:
        install_seccomp()
    log.info("locked down: runas=%s chroot=%s max_memory=%s seccomp=%s threads=%d",
             plan.runas[2] if plan.runas else "-", plan.chroot or "-",
             plan.max_memory or "-", "on" if plan.seccomp else "off", _threads())


def _status_field(name: str, fd: int | None = None) -> str | None:
    try:
        if fd is not None:
            text = os.pread(fd, 1 << 16, 0).decode()
        else:
            with open("/proc/self/status") as f:
                text = f.read()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    return None


def _threads() -> int:
    import threading

    return threading.active_count()


# ---- prctl and seccomp through ctypes ------------------------------------------------------
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
CLONE_THREAD = 0x00010000
X32_SYSCALL_BIT = 0x40000000

# Denied with EPERM: starting programs or processes (clone without CLONE_THREAD is fork), other
# processes' memory, the kernel's and the machine's global state, namespaces and mounts,
# changing credentials back, and kernel attack surface a device model never needs. clone3 gets
# ENOSYS (its flags are in memory, out of a filter's reach), so glibc falls back to clone.
SECCOMP_DENY = (
    "execve execveat fork vfork ptrace process_vm_readv process_vm_writev kcmp pidfd_getfd "
    "mount umount2 pivot_root chroot mount_setattr move_mount open_tree fsopen fsconfig fsmount "
    "fspick unshare setns kexec_load kexec_file_load init_module finit_module delete_module "
    "reboot swapon swapoff acct bpf perf_event_open userfaultfd keyctl add_key request_key "
    "open_by_handle_at name_to_handle_at iopl ioperm personality syslog quotactl settimeofday "
    "clock_settime adjtimex clock_adjtime sethostname setdomainname vhangup lookup_dcookie "
    "fanotify_init setuid setgid setreuid setregid setresuid setresgid setgroups setfsuid "
    "setfsgid capset"
).split()

# From <asm/unistd_64.h> (x86_64) and <asm-generic/unistd.h> (aarch64).
_X86_64 = dict(
    execve=59, execveat=322, fork=57, vfork=58, ptrace=101, process_vm_readv=310,
    process_vm_writev=311, kcmp=312, pidfd_getfd=438, mount=165, umount2=166, pivot_root=155,
    chroot=161, mount_setattr=442, move_mount=429, open_tree=428, fsopen=430, fsconfig=431,
    fsmount=432, fspick=433, unshare=272, setns=308, kexec_load=246, kexec_file_load=320,
    init_module=175, finit_module=313, delete_module=176, reboot=169, swapon=167, swapoff=168,
    acct=163, bpf=321, perf_event_open=298, userfaultfd=323, keyctl=250, add_key=248,
    request_key=249, open_by_handle_at=304, name_to_handle_at=303, iopl=172, ioperm=173,
    personality=135, syslog=103, quotactl=179, settimeofday=164, clock_settime=227, adjtimex=159,
    clock_adjtime=305, sethostname=170, setdomainname=171, vhangup=153, lookup_dcookie=212,
    fanotify_init=300, setuid=105, setgid=106, setreuid=113, setregid=114, setresuid=117,
    setresgid=119, setgroups=116, setfsuid=122, setfsgid=123, capset=126,
    clone=56, clone3=435, seccomp=317)
_AARCH64 = dict(
    execve=221, execveat=281, ptrace=117, process_vm_readv=270, process_vm_writev=271, kcmp=272,
    pidfd_getfd=438, mount=40, umount2=39, pivot_root=41, chroot=51, mount_setattr=442,
    move_mount=429, open_tree=428, fsopen=430, fsconfig=431, fsmount=432, fspick=433, unshare=97,
    setns=268, kexec_load=104, kexec_file_load=294, init_module=105, finit_module=273,
    delete_module=106, reboot=142, swapon=224, swapoff=225, acct=89, bpf=280, perf_event_open=241,
    userfaultfd=282, keyctl=219, add_key=217, request_key=218, open_by_handle_at=265,
    name_to_handle_at=264, personality=92, syslog=116, quotactl=60, settimeofday=170,
    clock_settime=112, adjtimex=171, clock_adjtime=266, sethostname=161, setdomainname=162,
    vhangup=58, lookup_dcookie=18, fanotify_init=262, setuid=146, setgid=144, setreuid=145,
    setregid=143, setresuid=147, setresgid=149, setgroups=159, setfsuid=151, setfsgid=152,
    capset=91, clone=220, clone3=435, seccomp=277)
# AUDIT_ARCH_* (linux/audit.h) and the syscall table of each supported machine.
_ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}


def _arch() -> tuple[int, dict[str, int]] | None:
    return _ARCHES.get(platform.machine())


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


_LD_W_ABS = 0x20
_JEQ = 0x15
_JGE = 0x35
_JSET = 0x45
_RET = 0x06


def build_filter(arch: int, table: dict[str, int], deny: list[str] | tuple[str, ...]):
    """The BPF program as (code, jt, jf, k) tuples. seccomp_data: nr at 0, arch at 4, args
    from 16 (arg 0's low word at 16 on these little-endian machines)."""
    nrs = sorted({table[n] for n in deny if n in table})
    head: list[tuple[int, int | str, int | str, int]] = []
    head.append((_LD_W_ABS, 0, 0, 4))
    head.append((_JEQ, 1, 0, arch))
    head.append((_RET, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM))  # another ABI (i386): nothing
    head.append((_LD_W_ABS, 0, 0, 0))
    if arch == 0xC000003E:
        head.append((_JGE, "EPERM", 0, X32_SYSCALL_BIT))  # the x32 ABI: nothing allowed
    for nr in nrs:
        head.append((_JEQ, "EPERM", 0, nr))
    head.append((_JEQ, "CLONE", 0, table["clone"]))
    head.append((_JEQ, "ENOSYS", 0, table["clone3"]))
    head.append((_RET, 0, 0, SECCOMP_RET_ALLOW))
    labels = {"CLONE": len(head)}
    head.append((_LD_W_ABS, 0, 0, 16))
    head.append((_JSET, "ALLOW", "EPERM", CLONE_THREAD))
    labels["ALLOW"] = len(head)
    head.append((_RET, 0, 0, SECCOMP_RET_ALLOW))
    labels["EPERM"] = len(head)
    head.append((_RET, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM))
    labels["ENOSYS"] = len(head)
    head.append((_RET, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS))
    prog = []
    for i, (code, jt, jf, k) in enumerate(head):
        if isinstance(jt, str):
            jt = labels[jt] - i - 1
        if isinstance(jf, str):
            jf = labels[jf] - i - 1
        assert 0 <= jt < 256 and 0 <= jf < 256
        prog.append((code, jt, jf, k))
    return prog


def install_seccomp(deny: list[str] | tuple[str, ...] = tuple(SECCOMP_DENY)) -> None:
    """Install the denylist filter on every thread of the process (needs NO_NEW_PRIVS or
    CAP_SYS_ADMIN; `apply` sets NO_NEW_PRIVS first)."""
    arch = _arch()
    if arch is None:
        raise RuntimeError(f"seccomp: no syscall table for {platform.machine()}")
    prog = build_filter(arch[0], arch[1], deny)
    arr = (_SockFilter * len(prog))(*(_SockFilter(*ins) for ins in prog))
    fprog = _SockFprog(len(prog), arr)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    libc = _libc()
    rc = libc.syscall(ctypes.c_long(arch[1]["seccomp"]), ctypes.c_uint(SECCOMP_SET_MODE_FILTER),
                      ctypes.c_uint(SECCOMP_FILTER_FLAG_TSYNC), ctypes.byref(fprog))
    if rc != 0:
        err = ctypes.get_errno()
        if rc > 0:
            raise RuntimeError(f"seccomp: thread {rc} could not be synchronised")
        raise OSError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    libc = _libc()
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                           ctypes.c_ulong]
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


__all__ = ["Plan", "apply", "build_filter", "default_allowed", "install_seccomp", "make_plan",
           "peer_creds", "refusal", "resolve_user", "set_limits"]
