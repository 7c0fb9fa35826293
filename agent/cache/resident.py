"""Keeping the credential cache file in memory, so a traveller's lookup never waits for the disk.

A lookup reads a few B-tree pages of the cache file. When the kernel has dropped those pages from
its page cache, the read goes to the disk — and while an install is writing (a 100k-change delta
reads ~1 GB of a 15 M-record file through the worker's memory map and writes ~100 MB of WAL), a
read waits behind that I/O for milliseconds. Measured at 15 M records on the development VM,
whose page cache gives pages back to the host: with the file not locked, 31-45 lookups per delta
took over 5 ms, almost none of them waiting for a CPU; locked, none did (BENCHMARKS.md,
"Credential cache").

:class:`ResidentCache` maps the file in force read-only and shared, and ``mlock``s the mapping:
the kernel reads every page in and keeps it (a shared mapping locks the page-cache pages the
lookups' ``pread`` hits). Nothing reads through the mapping, so an I/O error on the file can
never raise SIGBUS in the agent; it only makes the lock fail. :meth:`ResidentCache.follow` moves
the lock to a new file after a snapshot swap (the new file locked first; the old one released by
:meth:`ResidentCache.release_retired` once the lookups have moved) and extends it when a delta
grew the file. The descriptor of a file is closed only when no SQLite connection of the process
reads it any more: a close cancels every POSIX lock the process holds on the file, SQLite's
included.

Locking needs ``RLIMIT_MEMLOCK`` above the file size (systemd: ``LimitMEMLOCK=``) or
``CAP_IPC_LOCK``. When it fails the agent logs one warning naming the limit and goes on: the lane
keeps working, with lookups that may wait for the disk during installs.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import resource
import threading
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_MAP_FAILED = ctypes.c_void_p(-1).value
_MADV_WILLNEED = 3
"""Start reading the whole mapping ahead before ``mlock`` faults it in page by page."""
_MADV_DONTFORK = 10
"""A child started with fork() gets no copy of the locked mapping's page tables."""
_UNIT_SETTING = "LimitMEMLOCK= in the lane-agent systemd unit"


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: glibc is among them
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
    ]
    for name in ("munmap", "mlock", "munlock"):
        getattr(libc, name).argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        getattr(libc, name).restype = ctypes.c_int
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.madvise.restype = ctypes.c_int
    return libc


_LIBC = _libc()


class LockFailedError(OSError):
    """The file could not be mapped or locked; ``remedy`` says what would let it."""

    def __init__(self, err: int, message: str, remedy: str) -> None:
        super().__init__(err, message)
        self.remedy = remedy


@dataclass(slots=True)
class _Held:
    """A cache file this process holds open for locking, and its locked mapping if any.

    The descriptor stays open for as long as any SQLite connection of this process may use the
    file: closing any descriptor of a file cancels every POSIX lock the process holds on it,
    SQLite's included (its connection keeps a shared lock on a WAL database for its lifetime; an
    install worker that then finds no reader may reset the WAL under the lookups, which read a
    "malformed" database — seen in a benchmark run before the descriptor was kept).
    """

    fd: int
    device: int
    inode: int
    name: str
    address: int | None = None
    length: int = 0

    def unmap(self) -> None:
        """Unlock and unmap; the pages stay in the page cache until the kernel wants them."""
        if self.address is not None:
            _LIBC.munlock(self.address, self.length)
            _LIBC.munmap(self.address, self.length)
        self.address, self.length = None, 0


def _format_bytes(count: int) -> str:
    if count >= 1 << 30:
        return f"{count / (1 << 30):.2f} GiB"
    if count >= 1 << 20:
        return f"{count / (1 << 20):.1f} MiB"
    return f"{count / 1024:.0f} KiB"


def _memlock_limit() -> str:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return "unlimited" if soft == resource.RLIM_INFINITY else _format_bytes(soft)


def _lock(fd: int, length: int, name: str) -> int:
    """Map ``length`` bytes of ``fd`` read-only and shared, lock them; the address.

    Raises LockFailedError, with nothing left mapped.
    """
    if length == 0:
        raise LockFailedError(errno.EINVAL, f"{name} is empty", "import credentials")
    address = _LIBC.mmap(None, length, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if address is None or address == _MAP_FAILED:
        err = ctypes.get_errno()
        raise LockFailedError(err, f"mmap of {name}: {os.strerror(err)}", "")
    _LIBC.madvise(address, length, _MADV_DONTFORK)
    _LIBC.madvise(address, length, _MADV_WILLNEED)
    if _LIBC.mlock(address, length) != 0:
        err = ctypes.get_errno()
        _LIBC.munmap(address, length)  # also drops whatever part was locked
        if err in (errno.ENOMEM, errno.EPERM, errno.EAGAIN):
            remedy = (
                f"RLIMIT_MEMLOCK is {_memlock_limit()}; raise it above the file size "
                f"({_UNIT_SETTING}) or give the process CAP_IPC_LOCK"
            )
        else:
            remedy = "check the file and the memory free on this computer"
        raise LockFailedError(
            err, f"mlock of {name} ({_format_bytes(length)}): {os.strerror(err)}", remedy
        )
    return int(address)


@dataclass(frozen=True, slots=True)
class ResidencyStatus:
    """What is held in memory, for the status topic: counts and a file name, never a record."""

    enabled: bool
    locked_bytes: int
    file: str | None
    error: str | None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form for the status topic."""
        return {
            "enabled": self.enabled,
            "locked_bytes": self.locked_bytes,
            "file": self.file,
            "error": self.error,
        }


class ResidentCache:
    """Keeps the cache file in force locked in memory (``cache.lock_in_memory``).

    Thread-safe. Disabled, every method does nothing and :meth:`status` says so. A failure to
    lock is logged once as a warning (again only after a success in between) and reported by
    :meth:`status`; it never raises. Descriptors of the cache files are closed only by
    :meth:`release_retired`, once no connection of this process reads those files (see
    :class:`_Held`); the one of the file in force lives as long as the process.
    """

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self._lock = threading.Lock()
        self._held: _Held | None = None
        self._retired: list[_Held] = []
        self._error: str | None = None
        self._warned = False

    def follow(self, file: Path) -> bool:
        """Hold ``file`` (the cache file in force) locked, whole; returns whether it is.

        Nothing to do when ``file`` is the file already held and has not grown; a grown file is
        mapped and locked again whole, then the shorter mapping released. A different file is
        locked while the previous one stays locked and open, "retired": call
        :meth:`release_retired` once the lookups have moved to the new file. For that moment both
        count against RLIMIT_MEMLOCK. Reads the file from disk when its pages are not cached:
        seconds for 1 GB, on the calling thread (never the lane's).
        """
        if not self.enabled:
            return False
        started = time.monotonic()
        with self._lock:
            try:
                info = file.stat()
                held = self._held
                if held is None or (held.device, held.inode) != (info.st_dev, info.st_ino):
                    if held is not None:
                        self._retired.append(held)
                    fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
                    self._held = held = _Held(fd, info.st_dev, info.st_ino, file.name)
                elif held.address is not None and held.length >= info.st_size:
                    return True
                address = _lock(held.fd, info.st_size, held.name)
            except LockFailedError as err:
                self._failed(file, err)
                return False
            except OSError as err:
                self._failed(file, LockFailedError(err.errno or 0, str(err), "check the path"))
                return False
            held.unmap()  # the shorter mapping of a grown file, if any
            held.address, held.length = address, info.st_size
            self._error, self._warned = None, False
        logger.info(
            "credential cache %s locked in memory (%s) in %.2f s",
            held.name,
            _format_bytes(info.st_size),
            time.monotonic() - started,
        )
        return True

    def _failed(self, file: Path, err: LockFailedError) -> None:
        """Remember and report a failure; a shorter mapping of the same file stays held."""
        self._error = str(err.strerror or err)
        if self._warned:
            logger.debug("credential cache %s still not locked in memory: %s", file.name, err)
            return
        self._warned = True
        logger.warning(
            "cache.lock_in_memory: cannot keep the credential cache %s in memory (%s); %s. "
            "The lane goes on: lookups may wait for the disk while bundles install",
            file.name,
            err.strerror,
            err.remedy or "see docs/bundles.md",
        )

    def release_retired(self) -> None:
        """Unlock, unmap and close the files :meth:`follow` moved away from.

        Call only once no SQLite connection of this process uses them (after
        ``CredentialCache.reopen``): closing a descriptor cancels the process's locks on a file.
        """
        with self._lock:
            retired, self._retired = self._retired, []
        for held in retired:
            held.unmap()
            os.close(held.fd)

    def release(self) -> None:
        """Unlock and unmap everything (at shutdown); descriptors stay open until exit."""
        with self._lock:
            for held in (*self._retired, *filter(None, (self._held,))):
                held.unmap()

    def status(self) -> ResidencyStatus:
        """Whether it is on, how much is locked, of which file, and the last failure."""
        with self._lock:
            held = self._held
            mapped = held is not None and held.address is not None
            return ResidencyStatus(
                enabled=self.enabled,
                locked_bytes=held.length if held is not None and mapped else 0,
                file=held.name if held is not None and mapped else None,
                error=self._error,
            )
