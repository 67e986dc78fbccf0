"""STFT / iSTFT with torch.stft / torch.istft semantics (center=True, reflect padding, onesided,
not normalised), the periodic Hann window of `win_length` zero-padded symmetrically to `n_fft`.

Only the `win_length` non-zero samples of each frame are read or written: frames are gathered and
overlap-added by small Numba kernels; the FFTs are float32 scipy.fft (pocketfft) transforms.
Internally spectra are (C, T, F) — frames outermost, so each FFT row is contiguous; the public
`stft`/`istft` use torch's (C, F, T) layout."""
from __future__ import annotations

import numpy as np
import scipy.fft
from numba import njit

from minriff.errors import InputError

KEEP_BUFFER_BYTES = 80 << 20  # a 512-frame stereo riffusion clip needs 72 MB


def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window (torch.hann_window default), float64."""
    n = np.arange(length)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * n / length)


@njit(cache=True)
def _gather_frames(xp, base, hop, window, left, out):  # xp (C, Np) f32, out (C, T, n_fft) f32
    C, T, _ = out.shape
    W = window.shape[0]
    for c in range(C):
        for t in range(T):
            s = base + t * hop
            for j in range(W):
                out[c, t, left + j] = xp[c, s + j] * window[j]


@njit(cache=True)
def _overlap_add(frames, window, left, hop, out):  # frames (C, T, n_fft) f32, out (C, L) f32
    C, T, _ = frames.shape
    W = window.shape[0]
    for c in range(C):
        for t in range(T):
            s = t * hop
            for j in range(W):
                out[c, s + j] += frames[c, t, left + j] * window[j]


class STFT:
    """A plan for one (n_fft, hop, win_length): window, offsets, reusable frame buffer."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int | None = None, workers: int = -1):
        win_length = n_fft if win_length is None else win_length
        if not (0 < win_length <= n_fft) or hop_length < 1 or n_fft < 2:
            raise InputError(f"bad STFT sizes: n_fft={n_fft}, hop={hop_length}, win_length={win_length}")
        self.n_fft, self.hop, self.win = n_fft, hop_length, win_length
        self.n_freqs = n_fft // 2 + 1
        self.left = (n_fft - win_length) // 2  # window position inside the n_fft frame
        self.offset = self.left - n_fft // 2  # first windowed sample of frame t is t*hop + offset
        self.window = hann_window(win_length).astype(np.float32)
        self.workers = workers
        self._buf = None
        self._env = {}

    def n_frames(self, n_samples: int) -> int:
        return 1 + n_samples // self.hop

    def frames(self, x: np.ndarray) -> np.ndarray:
        """x (C, N) real -> complex64 spectra (C, T, F)."""
        xp, base, T = self._padded(x)
        return self._block(xp, base, 0, T)

    def frame_blocks(self, x: np.ndarray, block: int = 1024):
        """Yield (t0, spectra (C, t1-t0, F)) block by block: bounded memory for long signals."""
        xp, base, T = self._padded(x)
        for t0 in range(0, T, block):
            yield t0, self._block(xp, base, t0, min(T, t0 + block))

    def frame_stream(self, pieces, n_samples: int, block: int = 1024):
        """`frame_blocks` for a signal that arrives as consecutive pieces (C, n_i), `n_samples` in
        all (a file read block by block): only the samples the current block of frames reads are
        held, plus copies of the ends for the reflect padding. Bit-identical to `frame_blocks`."""
        N, hop, win = int(n_samples), self.hop, self.win
        T = self.n_frames(N)
        pad_left = max(0, -self.offset)
        pad_right = max(0, (T - 1) * hop + self.offset + win - N)
        if max(pad_left, pad_right) >= N:
            raise InputError(f"signal of {N} samples is too short for reflect padding by "
                             f"{max(pad_left, pad_right)} (window {win})")
        base = self.offset + pad_left  # padded-signal index of frame 0's first windowed sample
        feed = _PaddedFeed(iter(pieces), N, pad_left, pad_right)
        for t0 in range(0, T, block):
            t1 = min(T, t0 + block)
            xp, start = feed.upto(base + (t1 - 1) * hop + win)  # xp[:, 0] is padded sample `start`
            yield t0, self._block(xp, base - start, t0, t1)
            feed.drop_before(base + t1 * hop)

    def _padded(self, x: np.ndarray):
        x = np.ascontiguousarray(x, dtype=np.float32)
        C, N = x.shape
        T = self.n_frames(N)
        pad_left = max(0, -self.offset)
        pad_right = max(0, (T - 1) * self.hop + self.offset + self.win - N)
        if max(pad_left, pad_right) >= N:
            raise InputError(f"signal of {N} samples is too short for reflect padding by "
                             f"{max(pad_left, pad_right)} (window {self.win})")
        xp = np.pad(x, ((0, 0), (pad_left, pad_right)), mode="reflect")
        return xp, self.offset + pad_left, T

    def _block(self, xp, base, t0, t1):
        buf = self._frame_buffer(xp.shape[0], t1 - t0)
        _gather_frames(xp, base + t0 * self.hop, self.hop, self.window, self.left, buf)
        return scipy.fft.rfft(buf, axis=-1, workers=self.workers)

    def _frame_buffer(self, C: int, T: int) -> np.ndarray:
        # the zero margins around the window are never written, so a buffer is reused as is (saves
        # ~10 % per transform in Griffin-Lim); large ones are not kept alive between calls
        if self._buf is not None and self._buf.shape == (C, T, self.n_fft):
            return self._buf
        buf = np.zeros((C, T, self.n_fft), np.float32)
        self._buf = buf if buf.nbytes <= KEEP_BUFFER_BYTES else None
        return buf

    def envelope(self, T: int) -> np.ndarray:
        """Sum of squared windows over the output samples 0 .. (T-1)*hop - 1 + (overhang)."""
        if T not in self._env:
            sq = (self.window.astype(np.float64) ** 2)
            env = np.zeros((T - 1) * self.hop + self.win)
            for t in range(T):
                env[t * self.hop : t * self.hop + self.win] += sq
            self._env[T] = env
        return self._env[T]

    def inverse(self, spec: np.ndarray, length: int | None = None) -> np.ndarray:
        """complex spectra (C, T, F) -> (C, length) float32, least-squares overlap-add
        (torch.istft, center=True). Default length (T-1)*hop."""
        C, T, F = spec.shape
        if F != self.n_freqs:
            raise InputError(f"spectrum has {F} bins, expected {self.n_freqs} for n_fft={self.n_fft}")
        frames = scipy.fft.irfft(spec, n=self.n_fft, axis=-1, workers=self.workers).astype(np.float32, copy=False)
        ola = np.zeros((C, (T - 1) * self.hop + self.win), np.float32)
        _overlap_add(np.ascontiguousarray(frames), self.window, self.left, self.hop, ola)
        env = self.envelope(T)
        L = (T - 1) * self.hop if length is None else int(length)
        lo = -self.offset  # ola index of output sample 0
        hi = min(lo + L, ola.shape[1])
        seg_env = env[lo:hi]
        if hi > lo and seg_env.min() < 1e-11:
            raise InputError("window overlap-add envelope is zero inside the signal (hop too large for the window)")
        out = np.zeros((C, L), np.float32)
        out[:, : hi - lo] = ola[:, lo:hi] / seg_env.astype(np.float32)
        return out


class _PaddedFeed:
    """The reflect-padded signal of `frame_stream`, assembled from pieces as far as it is read."""

    def __init__(self, pieces, n: int, pad_left: int, pad_right: int):
        self.pieces, self.n, self.pad_left, self.pad_right = pieces, n, pad_left, pad_right
        self.buf, self.start, self.seen, self.done = None, 0, 0, False
        self.tail = None  # the last pad_right + 1 samples seen, for the right reflection

    def _next(self) -> np.ndarray | None:
        piece = next(self.pieces, None)
        if piece is None:
            if self.seen != self.n:
                raise InputError(f"signal ended after {self.seen} of {self.n} samples")
            return None
        piece = np.ascontiguousarray(piece, dtype=np.float32)
        self.seen += piece.shape[1]
        if self.seen > self.n:
            raise InputError(f"signal has more than the {self.n} samples announced")
        self.tail = piece if self.tail is None else np.concatenate([self.tail, piece], axis=1)
        self.tail = self.tail[:, -(self.pad_right + 1):]
        return piece

    def upto(self, end: int) -> tuple[np.ndarray, int]:
        """The padded samples [start, end) (and possibly more) with their first index."""
        while not self.done and (self.buf is None or self.start + self.buf.shape[1] < end):
            piece = self._next()
            if self.buf is None:  # gather at least pad_left + 1 samples for the left reflection
                head = piece if piece is not None else np.zeros((0, 0), np.float32)
                while head.shape[1] <= self.pad_left and (piece := self._next()) is not None:
                    head = np.concatenate([head, piece], axis=1)
                self.buf = np.concatenate([head[:, self.pad_left:0:-1], head], axis=1)
                continue
            if piece is None:
                self.done = True
                piece = self.tail[:, ::-1][:, 1:self.pad_right + 1]  # x[N-2], x[N-3], ...
            self.buf = np.concatenate([self.buf, piece], axis=1)
        return self.buf, self.start

    def drop_before(self, index: int) -> None:
        k = max(0, index - self.start)
        self.buf = self.buf[:, k:]
        self.start += k


def stft(x: np.ndarray, n_fft: int, hop_length: int, win_length: int | None = None) -> np.ndarray:
    """torch.stft(x, n_fft, hop, win_length, hann_window(win_length), center=True,
    pad_mode="reflect", onesided=True) for x (C, N) or (N,): complex64 (C, F, T) or (F, T)."""
    x = np.asarray(x)
    X = STFT(n_fft, hop_length, win_length).frames(np.atleast_2d(x)).transpose(0, 2, 1)
    return X[0] if x.ndim == 1 else X


def istft(spec: np.ndarray, n_fft: int, hop_length: int, win_length: int | None = None,
          length: int | None = None) -> np.ndarray:
    """Inverse of `stft` (torch.istft semantics): spec (C, F, T) or (F, T) -> (C, L) or (L,)."""
    spec = np.asarray(spec)
    S = np.atleast_3d(spec) if spec.ndim == 3 else spec[None]
    y = STFT(n_fft, hop_length, win_length).inverse(np.ascontiguousarray(S.transpose(0, 2, 1)), length)
    return y[0] if spec.ndim == 2 else y
