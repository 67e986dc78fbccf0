"""File-system situations for the hostile tests (tests/hostile/): targets that are not regular
files, a small tmpfs that fills up, a file-size limit, an unprivileged user, and the listing that
shows what a failed write left behind.

The machine these run on lets root mount tmpfs and make device nodes; where that is not allowed
the tests that need it skip with the reason (the FIFO, folder and symlink cases and the
RLIMIT_FSIZE ones run everywhere)."""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from support import ROOT

NOBODY = 65534


def listing(folder) -> dict[str, tuple]:
    """name -> (kind bits, size, rdev, link target): what a folder holds, to compare before/after."""
    out = {}
    for entry in os.scandir(folder):
        st = entry.stat(follow_symlinks=False)
        link = os.readlink(entry.path) if entry.is_symlink() else None
        out[entry.name] = (stat.S_IFMT(st.st_mode), st.st_size if stat.S_ISREG(st.st_mode) else 0, st.st_rdev, link)
    return out


NON_REGULAR = ("folder", "fifo", "symlink-to-folder", "char-device", "symlink-to-char-device")


def make_non_regular(folder: Path, kind: str, name: str) -> Path:
    """A target of `kind` in `folder` (device nodes need root: a /dev/full twin, major 1 minor 7,
    so a write that wrongly goes through fails instead of vanishing)."""
    path = folder / name
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind.endswith("char-device"):
        real = path if kind == "char-device" else folder / (name + ".dev")
        try:
            os.mknod(real, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        except PermissionError:
            pytest.skip("making a device node needs root (the FIFO and folder cases cover non-root runs)")
        if real != path:
            path.symlink_to(real.name)
    elif kind == "symlink-to-folder":
        (folder / (name + ".d")).mkdir()
        path.symlink_to(name + ".d")
    else:
        raise ValueError(kind)
    return path


@contextlib.contextmanager
def small_tmpfs(folder: Path, size: str = "1m", read_only: bool = False):
    """A tmpfs of `size` mounted on `folder` (root only; skips otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(folder)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode}); "
                    "the RLIMIT_FSIZE tests cover a failing write instead")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> None:
    """Fill the file system of `folder` until a write fails with ENOSPC."""
    with open(folder / "filler", "wb", buffering=0) as f:
        for size in (65536, 512):  # then the last partial pages
            with contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * size)


def python_env() -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def limited(fsize: int | None = None, uid: int | None = None):
    """preexec_fn for a child: a file-size limit (SIGXFSZ back to its default, as a fresh shell has
    it) and/or an unprivileged user."""
    def setup():
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        if uid is not None:
            os.setgid(uid)
            os.setuid(uid)
    return setup


def run_minriff(*argv, fsize: int | None = None, uid: int | None = None, cwd=None, timeout: float = 120):
    """`python -m minriff.cli ARGV` in a child process -> CompletedProcess (text)."""
    return subprocess.run([sys.executable, "-m", "minriff.cli", *map(str, argv)], capture_output=True, text=True,
                          env=python_env(), preexec_fn=limited(fsize, uid), cwd=cwd, timeout=timeout)


def run_python(code: str, *args, fsize: int | None = None, uid: int | None = None, cwd=None, timeout: float = 120):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env=python_env(), preexec_fn=limited(fsize, uid), cwd=cwd, timeout=timeout)


def is_root() -> bool:
    return os.geteuid() == 0
