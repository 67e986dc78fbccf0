"""Every file minriff writes goes through here: it appears whole, or not at all.

    check_target(path)                 # the early check: commands run it before any work
    with atomic_write(path) as f:      # a binary file on a temporary file beside `path`
        f.write(data)                  # (PIL's image.save(f, format=...) works too)
    write_bytes(path, data);  write_text(path, text)

How: the data goes to `.NAME.<random>.minriff-tmp` in the target's folder (hidden, so `*.wav`
globs never see it), which is fsync'ed and then renamed over the target (a rename within one file
system is atomic), and the folder is fsync'ed. So a reader sees the old file or the new one, never a
mix, and a crash or power cut leaves at most a `*.minriff-tmp` file, never a partial target.

Refused, with an OutputError naming the path: a target that exists and is not a regular file (a
folder, a device node such as /dev/full, a FIFO, a socket, or a symlink to one of these), checked by
`check_target` and again just before the rename. A symlink to a regular file is replaced by the new
file; the file it pointed to is left alone (a rename never writes through a link). An existing
target keeps its permission bits.

On any error the temporary file is removed and an existing target is untouched; an OSError of the
write itself (disk full, file too large, read-only file system, permission denied, ...) becomes
OutputError("cannot write PATH: REASON"). Other exceptions pass through unchanged.

Signals, while a write is open in the main thread (Python lets only it install handlers):
- SIGINT, SIGTERM and SIGHUP go through a handler that defers to whatever was installed before:
  a Python handler (e.g. the default SIGINT one that raises KeyboardInterrupt) is called, and the
  exception it raises unwinds through the write, which removes its temporary file; a signal whose
  previous disposition was to end the process (SIGTERM's default) removes every open temporary file,
  restores the previous handlers and re-raises the signal, so the process still ends by it.
  Signals that arrive during the few bookkeeping steps (creating, renaming, removing the
  temporary file) are handled right after them. The previous handlers are back when the last write
  ends, unless someone replaced ours meanwhile.
- SIGXFSZ (sent when a write crosses `ulimit -f`) is ignored, so the write fails with EFBIG and
  becomes an OutputError instead of killing the process (the CLI ignores it for its whole run).
In other threads nothing is installed; a program that runs minriff there and handles SIGTERM itself
can call `remove_temporaries()` from its handler. SIGKILL cannot be caught: it may leave a
`*.minriff-tmp` file (never a partial target)."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import signal
import stat
import threading
from pathlib import Path

from minriff.errors import OutputError

TEMP_SUFFIX = ".minriff-tmp"
_GUARDED = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
_XFSZ = getattr(signal, "SIGXFSZ", None)

REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (over the file-size limit, see `ulimit -f`, or the file system's maximum)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "it is a folder",
    errno.ENOTDIR: "a part of the path is not a folder",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EIO: "input/output error",
}


def _error(path, e: OSError) -> OutputError:
    reason = REASONS.get(e.errno) or e.strerror or str(e)
    return OutputError(f"cannot write {path}: {reason}")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _existing(path: Path) -> os.stat_result | None:
    """stat of the target (through symlinks) or None when absent; refuses non-regular files."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None  # absent, or a dangling symlink (which the rename replaces)
    except ValueError:
        raise OutputError(f"cannot write {str(path)!r}: the path contains a NUL byte") from None
    except OSError as e:
        raise _error(path, e) from None
    if not stat.S_ISREG(st.st_mode):
        link = "a symlink to " if os.path.islink(path) else ""
        raise OutputError(f"cannot write {path}: it exists and is {link}{_kind(st.st_mode)}; "
                          "minriff only creates or replaces regular files")
    return st


def check_target(path, make_parents: bool = False) -> Path:
    """Can `path` be written? Raises OutputError now, before any work, if it cannot: it exists and
    is not a regular file, its folder is missing (unless make_parents), not a folder, read-only or
    not writable. Returns it as a Path."""
    if path is None or not os.fspath(path):
        raise OutputError("no output file name given")
    target = Path(os.fspath(path))
    _existing(target)
    folder = target.parent
    while make_parents and not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent  # the first existing ancestor is where the folders get made
    if not folder.is_dir():
        why = "does not exist" if not os.path.lexists(folder) else "is not a folder"
        raise OutputError(f"cannot write {target}: the folder {folder} {why}")
    if not os.access(folder, os.W_OK | os.X_OK):
        read_only = os.statvfs(folder).f_flag & os.ST_RDONLY
        raise OutputError(f"cannot write {target}: {REASONS[errno.EROFS if read_only else errno.EACCES]}")
    return target


@contextlib.contextmanager
def deferred_signals():
    """SIGINT, SIGTERM and SIGHUP held back for the block (main thread only; elsewhere a no-op) and
    delivered when it ends, as during a write's bookkeeping steps (`_critical`). For C code that calls
    back into Python, e.g. libsndfile encoding into a BytesIO through soundfile's callbacks: an
    exception raised inside such a callback is printed and swallowed by cffi, and the encoder carries
    on with a short write, so an interrupt there would have yielded a damaged file that then got
    written as if complete."""
    with _signal_guard(), _critical():
        yield


# ----------------------------------------------------------------------------- temporary files

_live: set[str] = set()  # temporary files open right now, in any thread
_live_lock = threading.RLock()  # reentrant: a signal handler may run while its thread holds it


def remove_temporaries() -> None:
    """Remove every temporary file of a write still in progress (for programs that handle
    SIGTERM themselves in a thread other than minriff's). Their writes then fail."""
    with _live_lock:
        for name in list(_live):
            with contextlib.suppress(OSError):
                os.unlink(name)
            _live.discard(name)


def _temp_name(target: Path) -> Path:
    stem = target.name if len(os.fsencode(target.name)) <= 200 else target.name[:50]
    return target.with_name(f".{stem}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


class _TempFile(io.RawIOBase):
    """The temporary file: every write is complete or raises (short writes are retried, so a
    write that crosses a size limit fails instead of truncating). No fileno(), so libraries
    (PIL) write through write() and every failure is seen here; it is kept in `failed`."""

    def __init__(self, target: Path, mode: int | None):
        super().__init__()
        self.failed: OSError | None = None
        self._fd = -1
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        for _ in range(100):
            self.path = _temp_name(target)
            try:
                with _live_lock:
                    self._fd = os.open(self.path, flags, 0o666)
                    _live.add(str(self.path))
                break
            except FileExistsError:
                continue
        else:
            raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target))
        if mode is not None:
            try:
                os.fchmod(self._fd, stat.S_IMODE(mode))
            except OSError:
                pass  # the permissions of the old file are a courtesy, not a requirement

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        done = 0
        try:
            while done < len(view):
                done += os.write(self._fd, view[done:])
        except OSError as e:
            self.failed = e
            raise
        return done

    def seek(self, offset: int, whence: int = 0) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)

    def close(self) -> None:
        if not self.closed:
            super().close()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def commit(self, target: Path) -> None:
        """fsync, then rename over `target` (checked again: it must still be absent or regular)."""
        try:
            os.fsync(self._fd)
        except OSError as e:
            self.failed = e
            raise
        with _critical():
            self.close()
            _existing(target)
            try:
                os.replace(self.path, target)
            except OSError as e:
                self.failed = e
                raise
            with _live_lock:
                _live.discard(str(self.path))

    def discard(self) -> None:
        with _critical():
            with contextlib.suppress(OSError):
                self.close()
            with _live_lock:
                if str(self.path) in _live:
                    with contextlib.suppress(OSError):
                        os.unlink(self.path)
                    _live.discard(str(self.path))


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every file system can sync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path, make_parents: bool = False):
    """Yields a binary file object; on a clean exit its content replaces `path` in one step.
    make_parents: create missing folders (otherwise a missing folder is an OutputError)."""
    target = check_target(path, make_parents)
    if make_parents:
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise _error(target, e) from None
    old = _existing(target)
    with _signal_guard():
        f = None
        try:
            with _critical():
                f = _TempFile(target, old.st_mode if old else None)
            yield f
            f.commit(target)
        except BaseException as e:
            if f is not None:
                f.discard()
            if isinstance(e, OSError) and f is None:
                raise _error(target, e) from None
            if isinstance(e, Exception) and f is not None and f.failed is not None:
                raise _error(target, f.failed) from None  # however a library wrapped our write error
            raise
    _fsync_folder(target.parent)


def write_bytes(path, data, make_parents: bool = False) -> None:
    with atomic_write(path, make_parents) as f:
        f.write(data)


def write_text(path, text: str, encoding: str = "utf-8", make_parents: bool = False) -> None:
    write_bytes(path, text.encode(encoding), make_parents)


# ----------------------------------------------------------------------------- signals


class _SignalState:
    depth = 0  # nested writes in the main thread
    previous: dict = {}  # signal -> handler installed before ours
    pending: list = []  # signals that arrived during a bookkeeping step


_state = _SignalState()
_local = threading.local()  # .critical: depth of bookkeeping steps in this thread


def _on_signal(signum, frame):
    if getattr(_local, "critical", 0):
        _state.pending.append(signum)
        return
    previous = _state.previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)  # e.g. KeyboardInterrupt: unwinding through the write removes its file
    elif previous != signal.SIG_IGN:  # SIG_DFL: the signal ends the process; end it the same way
        remove_temporaries()
        _uninstall()
        signal.raise_signal(signum)


@contextlib.contextmanager
def _critical():
    """A bookkeeping step: signals that arrive meanwhile are handled right after it."""
    _local.critical = getattr(_local, "critical", 0) + 1
    try:
        yield
    finally:
        _local.critical -= 1
        if not _local.critical and _state.pending and threading.current_thread() is threading.main_thread():
            pending, _state.pending = _state.pending, []
            for signum in dict.fromkeys(pending):  # each once, in arrival order, as the OS delivers a held signal
                if signal.getsignal(signum) is _on_signal:
                    _on_signal(signum, None)
                else:  # the previous handlers are back: deliver it to them
                    signal.raise_signal(signum)


def _install() -> None:
    _state.previous, _state.pending = {}, []
    for signum in _GUARDED:
        previous = signal.getsignal(signum)
        if previous is None or previous == signal.SIG_IGN or previous is _on_signal:
            continue  # None: installed outside Python, so it could not be put back
        _state.previous[signum] = previous
        signal.signal(signum, _on_signal)
    if _XFSZ is not None and signal.getsignal(_XFSZ) == signal.SIG_DFL:
        _state.previous[_XFSZ] = signal.SIG_DFL
        signal.signal(_XFSZ, signal.SIG_IGN)


def _uninstall() -> None:
    for signum, previous in _state.previous.items():
        ours = signal.SIG_IGN if signum == _XFSZ else _on_signal
        if signal.getsignal(signum) == ours:  # else someone replaced ours meanwhile: leave theirs
            signal.signal(signum, previous)
    _state.previous = {}


@contextlib.contextmanager
def _signal_guard():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _state.depth == 0:
        try:
            _install()
        except ValueError:  # not the main interpreter: no handlers here either
            yield
            return
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if _state.depth == 0:
            with _critical():
                _uninstall()
