"""Weights for a run that names none, the way `from_pretrained` gets them: `ensure_weights()`.

    1. what `find_weights` finds: $MINRIFF_WEIGHTS, ./weights/, minriff's home folder
       (~/.cache/minriff, `hub.minriff_home`);
    2. else a riffusion-model-v1 already in the Hugging Face cache, converted into the home folder
       without downloading;
    3. else, unless offline ($MINRIFF_OFFLINE / $HF_HUB_OFFLINE): one notice line, then the download
       (progress bars, resumable: run again after a cut), the conversion, and the run goes on.

The converted file is `<minriff home>/riffusion-v1.safetensors` (or inside $MINRIFF_WEIGHTS when
that names an existing folder); step 1 finds it on every later run.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from minriff.errors import WeightsError
from minriff.weights import hub
from minriff.weights.convert import convert
from minriff.weights.download import download_and_convert, exclusive
from minriff.weights.format import WEIGHTS_ENV, find_weights

DOWNLOAD_SIZE = "about 4.3 GB"  # the diffusers .bin files download.FILES names


def first_run_folder() -> Path:
    """Where a first run puts the converted file: $MINRIFF_WEIGHTS if it is a folder, else minriff's home."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env and Path(env).is_dir() else hub.minriff_home()


def ensure_weights(path=None, quiet: bool = False, stream=None) -> Path:
    """A converted weights file: `path` if given (never downloads then), else found, else made from
    the Hugging Face cache or downloaded (module docstring). Errors: WeightsError (offline and
    nothing found: how to get weights), DownloadError (network; run again to resume)."""
    stream = stream or sys.stderr
    if path is not None:
        return find_weights(path)
    try:
        return find_weights()
    except WeightsError as e:
        missing = e
    folder = first_run_folder()
    try:
        return _first_run(folder, missing, quiet, stream)
    except OSError as e:  # an unwritable or full home folder: say which folder, and how to choose another
        raise WeightsError(f"cannot write the converted weights to {folder}: {e.strerror or e} (set MINRIFF_HOME to a "
                           "writable folder)") from None


def _first_run(folder: Path, missing: WeightsError, quiet: bool, stream) -> Path:
    out = folder / "riffusion-v1.safetensors"
    snapshot, partial = hub.cached_snapshot()
    if snapshot is not None:
        stream.write(f"no minriff weights yet: converting {hub.REPO} from the Hugging Face cache ({snapshot}) "
                     f"to {out} (once; later runs load it from there)\n")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with exclusive(folder):  # another first run may be converting the same copy
                if not out.is_file():
                    convert(snapshot, out, log=lambda m: None if quiet else stream.write(m + "\n"), quiet=quiet)
            return out
        except WeightsError as e:
            stream.write(f"could not convert the cached copy ({e}); downloading instead\n")
    off = hub.offline()
    if off:
        raise WeightsError(f"{missing}. Offline mode is on ({off}), so {hub.REPO} was not downloaded; unset it to "
                           "let the first run download it") from None
    where = f" (the Hugging Face cache copy at {partial} is incomplete)" if partial else ""
    stream.write(f"no weights found{where}: downloading {hub.REPO} ({DOWNLOAD_SIZE}, once) from {hub.endpoint()} "
                 f"and converting it to {out}; later runs load it from there. MINRIFF_OFFLINE=1 turns this off.\n")
    return download_and_convert(folder, stream=stream, quiet=quiet, reuse=True)
