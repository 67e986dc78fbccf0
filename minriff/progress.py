"""Progress on stderr for everything long: denoising steps, audio stages, downloads, weight loading.

One line per bar. On a terminal it is redrawn in place (at most every `redraw_s` seconds, and
always at the end); in a log or a pipe only the finished line is written. `quiet=True` writes nothing.

    bar = Progress(30, "denoising")            # "denoising [######..........] 12/30 4.1s"
    bar.update()                               # one more done
    bar = Progress(n_bytes, "unet.bin", unit="MB", scale=1e6)   # sizes and a rate: "... 12.3 MB/s"
    stages = StageProgress()                   # stages(stage, done, total): one bar per stage name
"""
from __future__ import annotations

import sys
import time

WIDTH = 24


class Progress:
    def __init__(self, total: int | None, label: str, quiet: bool = False, stream=None, unit: str = "",
                 scale: float = 1.0, start: int = 0, redraw_s: float = 0.0):
        self.total, self.label, self.quiet = total, label, quiet
        self.unit, self.scale = unit, scale
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.done = self.start = start
        self._last_draw, self.redraw_s = 0.0, redraw_s
        self.finished = False
        self._draw()

    def _line(self) -> str:
        secs = time.perf_counter() - self.t0
        if self.unit:
            count = f"{self.done / self.scale:.1f}" + (f"/{self.total / self.scale:.1f}" if self.total else "")
            rate = (self.done - self.start) / self.scale / max(secs, 1e-6)
            percent = f"{100 * self.done / self.total:5.1f}% " if self.total else ""
            tail = f"{percent}{count} {self.unit} {rate:.1f} {self.unit}/s"
        else:
            tail = f"{self.done}/{self.total} {secs:.1f}s"
        if not self.total:
            return f"{self.label} {tail}"
        filled = WIDTH * min(self.done, self.total) // self.total
        return f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {tail}"

    def _draw(self, final: bool = False):
        if self.quiet or (not final and not self.tty):  # logs and pipes get the finished line only
            return
        now = time.perf_counter()
        if not final and self.done and now - self._last_draw < self.redraw_s:
            return
        self._last_draw = now
        self.stream.write("\r" + self._line() + ("\n" if final else ""))
        self.stream.flush()

    def update(self, n: int = 1):
        self.set(self.done + n)

    def set(self, done: int):
        self.done = done
        if self.total is not None and self.done >= self.total:
            self.close()
        else:
            self._draw()

    def close(self):
        """Write the final line (once); for bars whose total was unknown or not reached."""
        if not self.finished:
            self.finished = True
            self._draw(final=True)


class StageProgress:
    """A `progress(stage, done, total)` callback (the audio functions take one) drawing one bar per stage."""

    def __init__(self, quiet: bool = False, stream=None, width: int = 18):
        self.quiet, self.stream, self.width = quiet, stream, width
        self.bars: dict[str, Progress] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = Progress(total, f"{stage:<{self.width}}", self.quiet, self.stream)
        if done > bar.done:
            bar.set(min(done, total))


class JobProgress(Progress):
    """A bar over jobs with throughput and ETA: "jobs [####....] 12/40 1 failed 3.2 clips/min ETA 8m45s"."""

    def __init__(self, total: int, label: str = "jobs", quiet: bool = False, stream=None, redraw_s: float = 0.5):
        self.failed = 0
        super().__init__(total, label, quiet, stream, redraw_s=redraw_s)

    def job_done(self, ok: bool) -> None:
        self.failed += not ok
        self.update()

    def _line(self) -> str:
        secs = time.perf_counter() - self.t0
        done = self.done - self.start
        per_min = 60.0 * done / max(secs, 1e-6)
        left = (self.total - self.done) * secs / done if done else None
        eta = "?" if left is None else (f"{int(left // 60)}m{int(left % 60):02d}s" if left >= 60 else f"{left:.0f}s")
        filled = WIDTH * min(self.done, self.total) // max(self.total, 1)
        failed = f" {self.failed} failed" if self.failed else ""
        return (f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done}/{self.total}{failed} "
                f"{per_min:.1f} clips/min ETA {eta} ({secs:.0f}s)")
