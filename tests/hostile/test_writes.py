"""Every file minriff writes goes through minriff.atomic, and every writer keeps its promise:
a target that is not a regular file is refused and left as it was; a full disk, a file-size limit,
a read-only file system or a missing permission is one clear OutputError; an existing file is
untouched after any failure, and no temporary file remains.

The writers of the product are listed in WRITERS; `test_writer_inventory` fails when a function
starts writing through the helper without being listed here, and `test_no_raw_writes` fails
when product code writes a file any other way (open for writing, PIL's save to a path,
soundfile.write to a path, write_text, os.replace, tempfile, ...) outside the short allow-list."""
from __future__ import annotations

import ast
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from minriff import atomic
from minriff.cli import main
from minriff.errors import OutputError
from support import ROOT
from support.hostile_fs import (
    NOBODY,
    NON_REGULAR,
    fill,
    is_root,
    listing,
    make_non_regular,
    run_minriff,
    run_python,
    small_tmpfs,
)

# ----------------------------------------------------------------------------- the writers


@dataclass
class Writer:
    function: str  # module:qualname of the product function that writes through minriff.atomic
    write: Callable[[Path], None]  # writes > 256 KB (so a small limit always cuts it) ...
    check: Callable[[Path], None]  # ... and this reads it back completely


def _noise(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _audio(suffix):
    def write(path):
        from minriff.audio.io import write_audio

        t = np.arange(441000) / 44100.0  # 10 s
        wave = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(1).standard_normal(t.size)
        write_audio(path, np.clip(wave, -1, 1)[None], 44100)

    def check(path):
        assert sf.info(str(path)).frames >= 441000 - 2048  # MP3 may pad/trim a frame
        sf.read(str(path))
    return write, check


def _image(suffix):
    def write(path):
        from minriff.audio.spectrogram import save_image

        save_image(Image.fromarray(_noise((512, 700, 3))), path)

    def check(path):
        with Image.open(path) as im:
            im.load()
            assert im.size == (700, 512)
    return write, check


def _safetensors(path):
    from minriff.weights.safetensors import write_safetensors

    x = np.random.default_rng(2).standard_normal((512, 600)).astype(np.float32)
    write_safetensors(path, [("x", x.shape, "F32", lambda: x), ("y", (3,), "F32", lambda: np.ones(3, np.float32))],
                      {"what": "test"})


def _check_safetensors(path):
    from minriff.weights.safetensors import SafetensorsFile

    f = SafetensorsFile(path)
    assert f.shape("x") == (512, 600) and np.all(f["y"] == 1)


def _response_json(path):
    from minriff.cli.generate import riffuse

    t = np.arange(441000) / 44100.0
    riff = SimpleNamespace(spectrogram_to_audio=lambda image, method: (0.5 * np.sin(2 * np.pi * 220 * t))[None])
    riffuse.write_json(SimpleNamespace(output_json=str(path), method="nnls", quiet=True), riff, _noise((512, 512, 3)))


def _check_response(path):
    resp = json.loads(Path(path).read_text())
    assert resp["image"].startswith("data:image/jpeg;base64,") and resp["duration_s"] == 10.0


def _gpu_record(path):
    """gpu_record.record with RECORD pointed at `path` and an old record big enough for the limits."""
    from minriff.kernels.cuda import gpu_record

    old = {f"old/{i}.cu": [{"sha256": f"{i:064x}", "device": "x", "date": "2000-01-01"}] for i in range(3000)}
    saved = gpu_record.RECORD, gpu_record.load
    gpu_record.RECORD, gpu_record.load = Path(path), lambda: json.loads(json.dumps(old))
    try:
        gpu_record.record("hostile-test")
    finally:
        gpu_record.RECORD, gpu_record.load = saved


def _check_record(path):
    rec = json.loads(Path(path).read_text())
    assert any(e["device"] == "hostile-test" for v in rec.values() for e in v)


WRITERS = {
    "write_audio.wav": Writer("minriff.audio.io:write_audio", *_audio(".wav")),
    "save_image.png": Writer("minriff.audio.spectrogram:save_image", *_image(".png")),
    "save_image.jpg": Writer("minriff.audio.spectrogram:save_image", *_image(".jpg")),
    "write_safetensors": Writer("minriff.weights.safetensors:write_safetensors", _safetensors, _check_safetensors),
    "riffuse.write_json": Writer("minriff.cli.generate:_Riffuse.write_json", _response_json, _check_response),
    "gpu_record": Writer("minriff.kernels.cuda.gpu_record:record", _gpu_record, _check_record),
}
for _suffix in (".mp3", ".ogg", ".flac"):
    WRITERS[f"write_audio{_suffix}"] = Writer("minriff.audio.io:write_audio", *_audio(_suffix))


def suffix_of(key: str) -> str:
    return {"write_safetensors": ".safetensors", "riffuse.write_json": ".json", "gpu_record": ".json"}.get(
        key, "." + key.rsplit(".", 1)[-1])


# ----------------------------------------------------------------------------- the source scan

SOURCES = [p for base in (ROOT / "minriff", ROOT / "kernels") for p in sorted(base.rglob("*.py"))]
HELPER = {"atomic_write", "write_bytes", "write_text"}
# (file, function) -> why it may write without the helper
ALLOWED = {
    ("minriff/atomic.py", "*"): "the helper itself",
    ("minriff/weights/download.py", "fetch"):
        "resumable download: appends to NAME.part inside minriff's own staging folder (weights/.download/) "
        "and renames it when complete; the converted weights are written by write_safetensors",
    ("minriff/batch/manifest.py", "Writer.__init__"):
        "the batch manifest is an append-only journal (O_APPEND, one fsync'ed line per finished job, written "
        "after the job's files exist); a line cut by a kill is ignored when read, so resume loses nothing",
    ("minriff/batch/manifest.py", "Writer.append"): "the same journal's appends",
    ("minriff/bench/batch.py", "run"): "a scratch TemporaryDirectory for the bench's own outputs, removed after",
    ("minriff/bench/clip.py", "run"): "a scratch TemporaryDirectory for the bench's own outputs, removed after",
    ("minriff/bench/lora.py", "run"): "a scratch TemporaryDirectory for the bench's own outputs, removed after",
    ("kernels/cuda/loader.py", "compile_emulated"):
        "build cache: g++ writes into a private temporary folder inside the cache, renamed into place",
    ("minriff/bench/serve.py", "_seed_folder"):
        "bench scratch: a seed image saved into a fresh private folder from tempfile.mkdtemp, nobody else's file",
}
WRITE_CALLS = {("os", "replace"), ("os", "rename"), ("os", "renames"), ("os", "write"), ("os", "link"),
               ("os", "truncate"), ("os", "ftruncate"), ("shutil", "move"), ("shutil", "copy"),
               ("shutil", "copy2"), ("shutil", "copyfile"), ("shutil", "copyfileobj"), ("np", "save"),
               ("np", "savez"), ("np", "savetxt"), ("numpy", "save"), ("json", "dump"), ("pickle", "dump"),
               ("sf", "write"), ("soundfile", "write")}
WRITE_FLAGS = {"O_WRONLY", "O_RDWR", "O_CREAT", "O_APPEND", "O_TRUNC"}


def _dotted(node) -> tuple[str, str] | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.value.id, node.attr
    return None


def _safe_sinks(func) -> set[str]:
    """Names bound to an in-memory buffer or to an atomic_write file in this function."""
    safe = set()
    for node in ast.walk(func):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            callee = node.value.func
            name = callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")
            if name in ("BytesIO", "StringIO"):
                safe |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and isinstance(item.optional_vars, ast.Name):
                    callee = call.func
                    if (callee.attr if isinstance(callee, ast.Attribute) else getattr(callee, "id", "")) in HELPER:
                        safe.add(item.optional_vars.id)
    return safe


def _mode(call, position: int) -> str | None:
    args = [k.value for k in call.keywords if k.arg == "mode"] or call.args[position:position + 1]
    if not args:
        return "r"
    return args[0].value if isinstance(args[0], ast.Constant) and isinstance(args[0].value, str) else None


def raw_write(call: ast.Call, safe: set[str]) -> str | None:
    """What kind of raw write `call` is, or None."""
    f = call.func
    first = call.args[0] if call.args else None
    to_memory = isinstance(first, ast.Name) and first.id in safe
    if isinstance(f, ast.Name) and f.id == "open":
        mode = _mode(call, 1)
        return None if mode is not None and not set(mode) & set("wax+") else f"open(mode={mode!r})"
    if not isinstance(f, ast.Attribute):
        return None
    dotted = _dotted(f)
    if dotted == ("os", "open"):
        flags = {n.attr if isinstance(n, ast.Attribute) else getattr(n, "id", "") for a in call.args[1:2]
                 for n in ast.walk(a)}
        return "os.open for writing" if flags & WRITE_FLAGS else None
    if dotted in WRITE_CALLS:
        return None if to_memory else ".".join(dotted)
    if dotted and dotted[0] == "tempfile":
        return ".".join(dotted)
    if f.attr == "open":  # Path.open(mode) / io.open
        mode = _mode(call, 0 if not dotted or dotted[0] != "io" else 1)
        return f".open(mode={mode!r})" if mode and set(mode) & set("wax+") else None
    if f.attr in ("write_text", "write_bytes", "tofile", "savez"):
        return None if dotted and dotted[0] == "atomic" else f".{f.attr}()"
    if f.attr == "save":
        return None if to_memory else ".save()"
    if f.attr in ("replace", "rename") and len(call.args) == 1 and not call.keywords:
        return f".{f.attr}() (Path)"
    return None


def _is_helper_call(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute):
        return f.attr in HELPER and isinstance(f.value, ast.Name) and f.value.id == "atomic"
    return isinstance(f, ast.Name) and f.id == "atomic_write"


def _walk_functions(node, qual, rel, module, raw, users):
    """Visit calls with the dotted name of the function they are in."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            _walk_functions(child, [*qual, child], rel, module, raw, users)
            continue
        if isinstance(child, ast.Call):
            func = ".".join(q.name for q in qual) or "<module>"
            defs = [q for q in qual if not isinstance(q, ast.ClassDef)]
            kind = raw_write(child, _safe_sinks(defs[-1]) if defs else set())
            if kind:
                raw.append((rel, func, child.lineno, kind))
            if _is_helper_call(child) and rel != "minriff/atomic.py":
                users.add(f"{module}:{func}")
        _walk_functions(child, qual, rel, module, raw, users)


def scan():
    """-> (raw writes [(file, function, line, kind)], functions calling the helper {module:qualname})."""
    raw, users = [], set()
    for path in SOURCES:
        rel = path.relative_to(ROOT).as_posix()
        module = ("minriff/" + rel if rel.startswith("kernels/") else rel)[:-3].replace("/", ".")
        _walk_functions(ast.parse(path.read_text(), rel), [], rel, module.removesuffix(".__init__"), raw, users)
    return raw, users


def _allowed(rel, func):
    return (rel, "*") in ALLOWED or (rel, func) in ALLOWED


def test_no_raw_writes():
    raw, _ = scan()
    outside = [f"{rel}:{line} in {func}: {kind}" for rel, func, line, kind in raw if not _allowed(rel, func)]
    assert not outside, ("product code writes a file without minriff.atomic (use atomic_write / write_bytes / "
                         "write_text, or add it to ALLOWED with the reason):\n" + "\n".join(outside))
    used = {(rel, func) for rel, func, _, _ in raw}
    stale = [k for k in ALLOWED if k[1] != "*" and k not in used]
    assert not stale, f"allow-list entries that no longer write: {stale}"


def test_the_scan_sees_raw_writes():
    """The scanner is not vacuous: each way of writing a file is caught, in-memory ones are not."""
    code = '''
import io, os, shutil, tempfile
import soundfile as sf
def bad(path, image, data):
    open(path, "wb").write(data)
    Path(path).write_text("x")
    image.save(path)
    sf.write(path, data, 44100)
    os.replace("a", path)
    Path("a").replace(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    tempfile.mkstemp()
    shutil.copy("a", path)
    with Path(path).open("w") as f:
        pass
def good(path, image, data):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    sf.write(buf, data, 44100, format="WAV")
    open(path, "rb").read()
    "a-b".replace("-", "_")
    with atomic.atomic_write(path) as f:
        image.save(f, format="PNG")
    atomic.write_text(path, "x")
'''
    tree = ast.parse(code)
    found = {}
    for func in tree.body:
        if isinstance(func, ast.FunctionDef):
            safe = _safe_sinks(func)
            found[func.name] = [raw_write(c, safe) for c in ast.walk(func) if isinstance(c, ast.Call)]
    assert sum(k is not None for k in found["bad"]) == 10, found["bad"]
    assert not any(found["good"]), found["good"]


# helper users that write minriff's own bookkeeping, not a user's output: exercised where they live
BOOKKEEPING = {
    "minriff.weights.download:staging_folder": "the staging folder's mark (tests/weights/test_download.py)",
}


def test_writer_inventory():
    """Every function that writes through the helper is exercised below (WRITERS) or is bookkeeping
    tested elsewhere (BOOKKEEPING), and only those."""
    _, users = scan()
    listed = {w.function for w in WRITERS.values()} | set(BOOKKEEPING)
    assert users == listed, f"writers not listed in WRITERS: {sorted(users - listed)}; " \
                            f"listed but not writing: {sorted(listed - users)}"


def test_atomic_is_a_leaf():
    tree = ast.parse((ROOT / "minriff" / "atomic.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    froms = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in imported if m not in sys.stdlib_module_names} == {"minriff"}
    assert {m for m in froms if m.startswith("minriff")} == {"minriff.errors"}


# ----------------------------------------------------------------------------- each writer


@pytest.fixture(params=sorted(WRITERS))
def writer(request):
    return request.param, WRITERS[request.param]


def test_writer_writes_a_complete_file(writer, tmp_path):
    key, w = writer
    target = tmp_path / f"out{suffix_of(key)}"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    w.write(target)
    w.check(target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # an existing file keeps its permissions
    assert sorted(listing(tmp_path)) == [target.name]


@pytest.mark.parametrize("kind", NON_REGULAR)
def test_writer_refuses_a_target_that_is_not_a_regular_file(writer, kind, tmp_path):
    key, w = writer
    target = make_non_regular(tmp_path, kind, f"out{suffix_of(key)}")
    before = listing(tmp_path)
    with pytest.raises(OutputError, match="is (a symlink to )?(a folder|a FIFO|a character device)"):
        w.write(target)
    assert listing(tmp_path) == before


def test_writer_on_a_full_disk_leaves_the_old_file(writer, tmp_path):
    key, w = writer
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        target = disk / f"out{suffix_of(key)}"
        target.write_bytes(b"the old file")
        fill(disk)
        before = listing(disk)
        with pytest.raises(OutputError, match="no space left on the device"):
            w.write(target)
        assert target.read_bytes() == b"the old file"
        assert listing(disk) == before


DRIVER = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("hostile_writes", sys.argv[1])
module = sys.modules["hostile_writes"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
from minriff.errors import MinriffError
if len(sys.argv) > 4:  # run as this user from here on (root can write anywhere); imports first
    import os
    importlib.import_module(module.WRITERS[sys.argv[2]].function.split(":")[0])
    os.setgid(int(sys.argv[4]))
    os.setuid(int(sys.argv[4]))
try:
    module.WRITERS[sys.argv[2]].write(sys.argv[3])
except MinriffError as e:
    print(type(e).__name__, e)
    sys.exit(3)
"""


def test_writer_over_the_file_size_limit_is_a_clear_error(writer, tmp_path):
    """`ulimit -f` sends SIGXFSZ, which kills a process unless ignored: the write must fail with a
    clear error instead (the child has SIGXFSZ at its default and a 64 KB limit)."""
    key, w = writer
    target = tmp_path / f"out{suffix_of(key)}"
    target.write_bytes(b"the old file")
    r = run_python(DRIVER, __file__, key, target, fsize=64 * 1024)
    assert r.returncode == 3, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert r.stdout.startswith("OutputError cannot write") and "file too large" in r.stdout, r.stdout
    assert target.read_bytes() == b"the old file"
    assert sorted(listing(tmp_path)) == [target.name]


def test_permission_denied_and_read_only_are_clear_errors(tmp_path):
    w = WRITERS["write_safetensors"]
    with small_tmpfs(tmp_path / "ro", "64k", read_only=True) as ro:
        with pytest.raises(OutputError, match="read-only file system"):
            w.write(ro / "x.safetensors")
    open_to_all = Path(tempfile.mkdtemp(prefix="minriff-hostile-"))  # pytest's tmp_path is root-only
    try:
        os.chmod(open_to_all, 0o755)
        locked = open_to_all / "locked"
        locked.mkdir()
        (locked / "x.safetensors").write_bytes(b"the old file")
        os.chmod(locked, 0o555)
        if is_root():  # root may write anywhere: the child drops to nobody after its imports
            r = run_python(DRIVER, __file__, "write_safetensors", locked / "x.safetensors", NOBODY)
            assert r.returncode == 3, r.stderr[-2000:]
            assert r.stdout.startswith("OutputError cannot write") and "permission denied" in r.stdout, r.stdout
        else:
            with pytest.raises(OutputError, match="permission denied"):
                w.write(locked / "x.safetensors")
        assert (locked / "x.safetensors").read_bytes() == b"the old file"
        assert sorted(os.listdir(locked)) == ["x.safetensors"]
    finally:
        shutil.rmtree(open_to_all, ignore_errors=True)


# ----------------------------------------------------------------------------- the helper itself


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt, OSError])
def test_an_error_while_writing_leaves_nothing(tmp_path, exc):
    target = tmp_path / "x.bin"
    target.write_bytes(b"old")
    with pytest.raises(exc):
        with atomic.atomic_write(target) as f:
            f.write(b"new data")
            assert len(os.listdir(tmp_path)) == 2  # the temporary file beside the target
            raise exc("from the caller")
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["x.bin"]


def test_a_write_error_wrapped_by_a_library_is_still_named(tmp_path):
    """PIL or soundfile may turn our OSError into their own exception: the reason is kept."""
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        fill(disk)
        with pytest.raises(OutputError, match="no space left"):
            with atomic.atomic_write(disk / "x.bin") as f:
                try:
                    f.write(b"x" * 100000)
                except OSError as e:
                    raise RuntimeError("encoder error -2") from e


def test_a_symlink_to_a_regular_file_is_replaced_not_written_through(tmp_path):
    (tmp_path / "real.txt").write_text("keep")
    (tmp_path / "link.txt").symlink_to("real.txt")
    atomic.write_text(tmp_path / "link.txt", "new")
    assert (tmp_path / "real.txt").read_text() == "keep"
    assert not (tmp_path / "link.txt").is_symlink() and (tmp_path / "link.txt").read_text() == "new"


def test_a_target_turned_into_a_device_meanwhile_is_refused_at_rename(tmp_path):
    target = tmp_path / "x.bin"
    with pytest.raises(OutputError, match="a FIFO"):
        with atomic.atomic_write(target) as f:
            f.write(b"data")
            os.mkfifo(target)
    assert stat.S_ISFIFO(os.lstat(target).st_mode) and os.listdir(tmp_path) == ["x.bin"]


def test_short_writes_are_completed_not_truncated(tmp_path, monkeypatch):
    """os.write may write less than asked (a size limit reached mid-buffer): the rest follows."""
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(memoryview(data)[:1000])))
    data = bytes(range(256)) * 100
    atomic.write_bytes(tmp_path / "x.bin", data)
    monkeypatch.undo()
    assert (tmp_path / "x.bin").read_bytes() == data


@pytest.mark.parametrize("bad,reason", [
    ("missing/x.wav", "the folder missing does not exist"),
    ("", "no output file name"),
    ("a\0b", "NUL byte"),
])
def test_bad_paths_are_clear_errors(tmp_path, monkeypatch, bad, reason):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match=reason):
        atomic.write_bytes(bad, b"x")
    assert os.listdir(tmp_path) == []


def test_error_reasons_name_the_cause():
    for code, words in ((errno.ENOSPC, "no space"), (errno.EFBIG, "ulimit -f"), (errno.EROFS, "read-only"),
                        (errno.EACCES, "permission denied"), (errno.EISDIR, "folder")):
        assert words in str(atomic._error("p", OSError(code, os.strerror(code))))


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    assert main(["init-random", "--config", "tiny", "-o", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def spectrogram_png(tmp_path_factory):
    from minriff.audio.spectrogram import audio_to_image, save_image

    path = tmp_path_factory.mktemp("inputs") / "clip.png"
    t = np.arange(64 * 441) / 44100.0
    save_image(audio_to_image((0.3 * np.sin(2 * np.pi * 330 * t))[None].astype(np.float32)), path)
    wav = path.with_suffix(".wav")  # 2 s of noise: its spectrogram PNG does not compress below the limits
    sf.write(str(wav), 0.3 * np.random.default_rng(3).uniform(-1, 1, 88200), 44100)
    return path


def cli_cases(tiny, png):
    """(argv with OUT for the target, which output) for every command that writes a file. Weights
    and inputs that would take time are bogus on purpose: the output check must come first."""
    wav, bogus = png.with_suffix(".wav"), "/nonexistent/weights.safetensors"
    return {
        "init-random -o": ["init-random", "--config", "sd15", "-o", "OUT"],
        "convert -o": ["convert", tiny, "-o", "OUT"],
        "generate -o": ["generate", "jazz", "-o", "OUT", "--weights", bogus],
        "generate --image": ["generate", "jazz", "--image", "OUT.png", "--weights", bogus],
        "interpolate -o": ["interpolate", "a", "b", "-o", "OUT", "--weights", bogus],
        "riffuse -o": ["riffuse", "--start", "a", "-o", "OUT", "--seed-image", png, "--weights", bogus],
        "riffuse --output-json": ["riffuse", "--start", "a", "--output-json", "OUT", "--seed-image", png,
                                  "--weights", bogus],
        "audio2image -o": ["audio2image", wav, "-o", "OUT.png"],
        "image2audio -o": ["image2audio", png, "-o", "OUT"],
        "control-image -o": ["control-image", "canny", wav, "-o", "OUT.png"],
    }


@pytest.mark.parametrize("case", ["init-random -o", "convert -o", "generate -o", "generate --image", "interpolate -o",
                                  "riffuse -o", "riffuse --output-json", "audio2image -o", "image2audio -o",
                                  "control-image -o"])
@pytest.mark.parametrize("kind", ["char-device", "fifo", "folder"])
def test_cli_refuses_bad_targets_before_any_work(tiny, spectrogram_png, tmp_path, capsys, case, kind):
    """The reproduction was `init-random -o /dev/full` replacing the device node (exit 0); here
    a /dev/full twin (and a FIFO, a folder) for every command's output. `init-random --config
    sd15` would take a minute and bogus weights would fail: a quick error naming the output
    shows the check runs first."""
    argv = cli_cases(tiny, spectrogram_png)[case]
    name = "out.png" if "OUT.png" in argv else "out.wav"
    target = make_non_regular(tmp_path, kind, name)
    before = listing(tmp_path)
    argv = [str(target) if a in ("OUT", "OUT.png") else str(a) for a in argv]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and f"cannot write {target}: it exists and is" in err and err.count("\n") == 1, err
    assert listing(tmp_path) == before


def test_cli_init_random_on_a_full_disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", "256k") as disk:
        (disk / "w.safetensors").write_bytes(b"the old file")
        r = run_minriff("init-random", "--config", "tiny", "-o", disk / "w.safetensors")
        assert r.returncode == 2 and r.stderr.strip() == \
            f"minriff init-random: error: cannot write {disk / 'w.safetensors'}: no space left on the device"
        assert (disk / "w.safetensors").read_bytes() == b"the old file" and os.listdir(disk) == ["w.safetensors"]


@pytest.mark.parametrize("argv,out", [
    (["init-random", "--config", "tiny", "-o", "OUT"], "w.safetensors"),
    (["image2audio", "PNG", "-o", "OUT", "--quiet"], "a.wav"),
    (["audio2image", "WAV", "-o", "OUT", "--quiet"], "a.png"),
])
def test_cli_under_ulimit_f(spectrogram_png, tmp_path, argv, out):
    """A shell's `ulimit -f`: SIGXFSZ at its default would kill the process and leave a partial file."""
    target = tmp_path / out
    target.write_bytes(b"the old file")
    subst = {"OUT": target, "PNG": spectrogram_png, "WAV": spectrogram_png.with_suffix(".wav")}
    r = run_minriff(*[subst.get(a, a) for a in argv], fsize=16 * 1024)
    assert r.returncode == 2, f"exit {r.returncode}: {r.stderr[-2000:]}"
    assert "file too large" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert target.read_bytes() == b"the old file" and os.listdir(tmp_path) == [out]
