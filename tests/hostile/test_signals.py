"""SIGINT and SIGTERM at random moments of a writing `minriff` process: the target is absent or
untouched (when it existed before), or complete and byte-identical to an uninterrupted run, and no
temporary file remains. Then the library's side: minriff.atomic's handlers defer to the ones
installed before, are put back afterwards, leave threads and ignored signals alone, and a signal
during a bookkeeping step is handled right after it."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from minriff import atomic
from minriff.cli import main
from support.hostile_fs import listing, python_env, run_python

OUT_NAME = "out.mp3"  # the target in every run folder: image2audio writes MP3 (encoding is slow enough that
# writing it in place, as before minriff.atomic, left a long window); init-random writes safetensors whatever the name
RNG_SEED = int(os.environ.get("MINRIFF_SIGNAL_SEED", time.time_ns() % 2**32))


@pytest.fixture(scope="module")
def spectrogram_png(tmp_path_factory):
    from minriff.audio.spectrogram import audio_to_image, save_image

    path = tmp_path_factory.mktemp("inputs") / "clip.png"
    t = np.arange(128 * 441) / 44100.0
    save_image(audio_to_image((0.3 * np.sin(2 * np.pi * 330 * t))[None].astype(np.float32)), path)
    return path


def command(name, png):
    return {"init-random": ["init-random", "--config", "tiny", "--seed", "5", "-o", "OUT"],
            "image2audio": ["image2audio", str(png), "-o", "OUT", "--quiet", "--iters", "8"]}[name]


def start(argv, target):
    return subprocess.Popen([sys.executable, "-m", "minriff.cli", *[str(target) if a == "OUT" else a for a in argv]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())


def reference(argv, folder):
    """The bytes and the duration of an uninterrupted run."""
    folder.mkdir()
    t0 = time.perf_counter()
    p = start(argv, folder / OUT_NAME)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 0, err
    return (folder / OUT_NAME).read_bytes(), time.perf_counter() - t0


def signal_once(argv, folder, sig, trigger, delay, old: bytes | None):
    """Start, wait for the trigger (a moment after the start, or the first change in the folder: a
    new file, or the target growing or shrinking, i.e. the write has begun), sleep `delay`, send
    `sig`. -> (returncode, stderr, write seen)."""
    folder.mkdir()
    target = folder / OUT_NAME
    if old is not None:
        target.write_bytes(old)
    before = listing(folder)
    p = start(argv, target)
    seen = False
    if trigger == "temp":
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            try:
                if listing(folder) != before:
                    seen = True
                    break
            except FileNotFoundError:  # a file vanished while being listed: a change too
                seen = True
                break
            time.sleep(0.0002)
    end = time.monotonic() + delay
    while p.poll() is None and time.monotonic() < end:
        time.sleep(min(0.001, delay))
    if p.poll() is None:
        p.send_signal(sig)
    _, err = p.communicate(timeout=120)
    return p.returncode, err, seen


def check_outcome(folder, old, ref, code, err, sig):
    """Absent/untouched or complete; no other file; an exit that fits."""
    names = set(os.listdir(folder))
    assert names <= {OUT_NAME}, f"left behind: {names - {OUT_NAME}}"
    now = (folder / OUT_NAME).read_bytes() if names else None
    assert now in (old, ref), f"target is neither untouched nor complete ({0 if now is None else len(now)} bytes)"
    if code == 0:
        assert now == ref, "exit 0 without the complete file"
    elif sig == signal.SIGTERM:
        assert code == -signal.SIGTERM, (code, err)
    elif code == 130:  # Ctrl-C: one line
        assert err.strip().splitlines()[-1:] == ["interrupted"] and "Traceback" not in err, err
    else:  # Ctrl-C before minriff's main() runs: Python's own start-up KeyboardInterrupt (or death by SIGINT)
        assert code in (1, -signal.SIGINT) and "minriff" not in err.split("Traceback")[0], (code, err)
    return "complete" if now == ref else "untouched"  # (a signal after the rename: complete, and exit 130/-15)


@pytest.mark.parametrize("name,runs", [("init-random", 6), ("image2audio", 2)])
def test_signals_at_random_moments(tmp_path, spectrogram_png, name, runs):
    argv = command(name, spectrogram_png)
    ref, duration = reference(argv, tmp_path / "reference")
    rng = np.random.default_rng(RNG_SEED)
    outcomes = []
    for i in range(runs):
        for sig in (signal.SIGINT, signal.SIGTERM):
            trigger = "temp" if i % 2 == 0 else "clock"  # half aimed at the write, half anywhere in the run
            # right after the write began (i % 4 == 0), within its first 30 ms, or anywhere in the run
            window = (0.002 if i % 4 == 0 else 0.03) if trigger == "temp" else 1.2 * duration
            delay = float(rng.uniform(0, window))
            old = b"the old file" if i % 4 < 2 else None
            folder = tmp_path / f"run{i}-{sig.name}"
            code, err, seen = signal_once(argv, folder, sig, trigger, delay, old)
            what = f"{name} {sig.name} {trigger} +{delay * 1000:.1f} ms (MINRIFF_SIGNAL_SEED={RNG_SEED})"
            try:
                outcomes.append((sig, seen, check_outcome(folder, old, ref, code, err, sig)))
            except AssertionError as e:
                raise AssertionError(f"{what}: {e}") from None
    print(f"{name}: {[(s.name, seen, o) for s, seen, o in outcomes]}")
    if name == "init-random":  # a 20+ ms write: some signal sent after the temporary file appeared must land in it
        for sig in (signal.SIGINT, signal.SIGTERM):
            # On a loaded machine the random delays can all miss the write; aim more runs at its start (each
            # outcome still checked) before concluding that signals during a write are not handled.
            for extra in range(30):  # at load 6-9 ten were not always enough (the write is ~20 ms)
                if any(s == sig and seen and o == "untouched" for s, seen, o in outcomes):
                    break
                folder = tmp_path / f"extra{extra}-{sig.name}"
                delay = float(rng.uniform(0, 0.004 if extra < 10 else 0.001))
                code, err, seen = signal_once(argv, folder, sig, "temp", delay, b"the old file")
                outcomes.append((sig, seen, check_outcome(folder, b"the old file", ref, code, err, sig)))
            assert any(s == sig and seen and o == "untouched" for s, seen, o in outcomes), \
                f"no {sig.name} landed during the write (seed {RNG_SEED}): {outcomes}"


def test_a_library_write_killed_by_sigterm_leaves_nothing(tmp_path):
    """SIGTERM at its default in a program using minriff: the process still dies by SIGTERM."""
    (tmp_path / "x.bin").write_bytes(b"old")
    code = ("import os, signal, sys, time\nfrom minriff import atomic\n"
            "with atomic.atomic_write(sys.argv[1]) as f:\n"
            "    f.write(b'new' * 1000)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(10)\n")
    r = run_python(code, tmp_path / "x.bin", timeout=60)
    assert r.returncode == -signal.SIGTERM, r.stderr
    assert os.listdir(tmp_path) == ["x.bin"] and (tmp_path / "x.bin").read_bytes() == b"old"


def test_sigterm_while_the_temporary_file_is_being_created(tmp_path):
    """The signal lands between creating the file and registering it: it is handled right after."""
    code = ("import os, signal, sys\nfrom minriff import atomic\nreal = os.open\n"
            "def open_then_signal(*a, **k):\n"
            "    fd = real(*a, **k)\n"
            "    signal.raise_signal(signal.SIGTERM)\n"
            "    return fd\n"
            "os.open = open_then_signal\n"
            "atomic.write_bytes(sys.argv[1], b'data')\n")
    r = run_python(code, tmp_path / "x.bin", timeout=60)
    assert r.returncode == -signal.SIGTERM, r.stderr
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- the library's manners

GUARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def handlers():
    """Record and restore this process's handlers around a test."""
    saved = {s: signal.getsignal(s) for s in (*GUARDED, signal.SIGXFSZ)}
    yield saved
    for s, h in saved.items():
        signal.signal(s, h)


def test_handlers_are_put_back(tmp_path, handlers):
    mine = {s: (lambda *a: None) for s in GUARDED}
    for s, h in mine.items():
        signal.signal(s, h)
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    with atomic.atomic_write(tmp_path / "x") as f:
        assert all(signal.getsignal(s) is not mine[s] for s in GUARDED)
        assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
        with atomic.atomic_write(tmp_path / "y") as g:  # nested: still ours after the inner one
            g.write(b"y")
        assert all(signal.getsignal(s) is not mine[s] for s in GUARDED)
        f.write(b"x")
    assert all(signal.getsignal(s) is mine[s] for s in GUARDED)
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_DFL


def test_a_previous_python_handler_is_called_and_the_write_goes_on(tmp_path, handlers):
    calls = []
    signal.signal(signal.SIGINT, lambda s, frame: calls.append(s))
    with atomic.atomic_write(tmp_path / "x") as f:
        f.write(b"a")
        signal.raise_signal(signal.SIGINT)
        f.write(b"b")
    assert calls == [signal.SIGINT] and (tmp_path / "x").read_bytes() == b"ab"


def test_ctrl_c_interrupts_the_write_and_leaves_the_old_file(tmp_path, handlers):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    (tmp_path / "x").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_write(tmp_path / "x") as f:
            f.write(b"new")
            signal.raise_signal(signal.SIGINT)
            f.write(b"never")
    assert os.listdir(tmp_path) == ["x"] and (tmp_path / "x").read_bytes() == b"old"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored(tmp_path, handlers):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with atomic.atomic_write(tmp_path / "x") as f:
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        signal.raise_signal(signal.SIGTERM)
        f.write(b"x")
    assert (tmp_path / "x").read_bytes() == b"x"


def test_ctrl_c_while_the_temporary_file_is_being_created(tmp_path, handlers, monkeypatch):
    """KeyboardInterrupt is raised after the file is registered, so it is removed."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real = os.open

    def open_then_interrupt(*a, **k):
        fd = real(*a, **k)
        signal.raise_signal(signal.SIGINT)
        return fd
    monkeypatch.setattr(os, "open", open_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes(tmp_path / "x", b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_ctrl_c_during_the_rename_comes_after_it(tmp_path, handlers, monkeypatch):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    real = os.replace

    def replace_with_interrupt(a, b):
        signal.raise_signal(signal.SIGINT)
        real(a, b)
    monkeypatch.setattr(os, "replace", replace_with_interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_bytes(tmp_path / "x", b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["x"] and (tmp_path / "x").read_bytes() == b"data"


def test_a_handler_replaced_meanwhile_is_left_alone(tmp_path, handlers):
    def theirs(*a):
        return None
    with atomic.atomic_write(tmp_path / "x") as f:
        signal.signal(signal.SIGTERM, theirs)
        f.write(b"x")
    assert signal.getsignal(signal.SIGTERM) is theirs


def test_writes_in_threads_install_nothing(tmp_path, handlers):
    seen, errors = [], []

    def write():
        try:
            with atomic.atomic_write(tmp_path / "t") as f:
                seen.append({s: signal.getsignal(s) for s in GUARDED})
                f.write(b"t")
        except BaseException as e:
            errors.append(e)
    t = threading.Thread(target=write)
    t.start()
    t.join()
    assert not errors and seen == [{s: handlers[s] for s in GUARDED}]
    assert (tmp_path / "t").read_bytes() == b"t"


def test_remove_temporaries_for_programs_with_their_own_handlers(tmp_path):
    """A thread is writing; the program's SIGTERM handler calls remove_temporaries(): the file goes,
    the write fails cleanly."""
    started, go, errors = threading.Event(), threading.Event(), []

    def write():
        try:
            with atomic.atomic_write(tmp_path / "t") as f:
                f.write(b"t")
                started.set()
                go.wait(10)
        except Exception as e:
            errors.append(e)
    t = threading.Thread(target=write)
    t.start()
    started.wait(10)
    assert len(os.listdir(tmp_path)) == 1
    atomic.remove_temporaries()
    assert os.listdir(tmp_path) == []
    go.set()
    t.join()
    assert len(errors) == 1 and "cannot write" in str(errors[0]) and os.listdir(tmp_path) == []


def test_cli_ctrl_c_during_the_write_is_one_line(tmp_path, spectrogram_png, handlers, capsys, monkeypatch):
    """In-process: Ctrl-C while the file is being synced -> "interrupted", exit 130, nothing written."""
    real = os.fsync

    def fsync_then_interrupt(fd):
        real(fd)
        signal.raise_signal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    monkeypatch.setattr(os, "fsync", fsync_then_interrupt)
    code = main(["image2audio", str(spectrogram_png), "-o", str(tmp_path / "a.wav"), "--quiet", "--iters", "1"])
    monkeypatch.undo()
    assert code == 130 and capsys.readouterr().err == "interrupted\n"
    assert os.listdir(tmp_path) == []
