"""Inverse mel: mel amplitudes (C, M, T) -> linear STFT magnitudes (C, T, F).

method="nnls" — exact non-negative least squares per frame, min ||fb.T x - mel||² s.t. x >= 0.
  The problem is under-determined (4000 used bins, 512 mels) so we solve the Tikhonov-regularised
  version min ½||fb.T x - mel||² + ½·eps||x||² (eps ~ 1e-9 of the filter energy), whose minimiser
  tends to the minimum-norm NNLS solution as eps -> 0. Its dual is x = max(0, fb @ lam) with
      fb.T max(0, fb @ lam) + eps·lam = mel,
  a piecewise-linear monotone equation in the 512 mel unknowns. A linear bin lies in at most two
  adjacent filters, so every Newton matrix fb.T D fb + eps·I is tridiagonal: each semismooth Newton
  step (with Armijo backtracking on the dual objective) costs O(nnz). A frame stops when the
  residual of the dual equation is below tol·|mel|, when a full step keeps the active pattern (the
  equation is linear on that piece, so the step was exact), or when the dual objective stalls at
  rounding level (bins with fb @ lam ~ 0 flipping). Real spectrogram images take 1-4 steps/frame.
method="sgd" — torchaudio<=2.0 InverseMelScale as Riffusion used it: uniform [0,1) init, 200 SGD
  steps (lr 0.1, momentum 0.9) on mean over frames of sum over mels of squared error, clamp >= 0.
  Only bins inside some filter receive gradient, so the kernel touches just those."""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from minriff.audio.melscale import BandedFilterbank
from minriff.errors import InputError

NNLS_EPS_REL = 1e-9


@njit(cache=True)
def _fb_t(lam, start, length, offset, w, u):  # u = fb @ lam over the used bins
    u[:] = 0.0
    for m in range(start.shape[0]):
        lm = lam[m]
        o = offset[m]
        s = start[m]
        for j in range(length[m]):
            u[s + j] += w[o + j] * lm


@njit(cache=True)
def _fb_apply(x, start, length, offset, w, out):  # out = fb.T @ x
    for m in range(start.shape[0]):
        acc = 0.0
        o = offset[m]
        s = start[m]
        for j in range(length[m]):
            acc += w[o + j] * x[s + j]
        out[m] = acc


@njit(cache=True)
def _tridiag(u, start, length, offset, w, eps, diag, off):
    """diag/off of fb.T D fb + eps I with D = (u > 0)."""
    M = start.shape[0]
    for m in range(M):
        acc = eps
        o = offset[m]
        s = start[m]
        for j in range(length[m]):
            if u[s + j] > 0.0:
                acc += w[o + j] * w[o + j]
        diag[m] = acc
    for m in range(M - 1):
        lo = max(start[m], start[m + 1])
        hi = min(start[m] + length[m], start[m + 1] + length[m + 1])
        acc = 0.0
        for k in range(lo, hi):
            if u[k] > 0.0:
                acc += w[offset[m] + k - start[m]] * w[offset[m + 1] + k - start[m + 1]]
        off[m] = acc


@njit(cache=True)
def _thomas(diag, off, rhs, out, cp):  # symmetric tridiagonal solve (SPD: no pivoting needed)
    M = diag.shape[0]
    b = diag[0]
    out[0] = rhs[0] / b
    for m in range(1, M):
        cp[m - 1] = off[m - 1] / b
        b = diag[m] - off[m - 1] * cp[m - 1]
        out[m] = (rhs[m] - off[m - 1] * out[m - 1]) / b
    for m in range(M - 2, -1, -1):
        out[m] -= cp[m] * out[m + 1]


@njit(cache=True)
def _dual_objective(lam, u, mel, eps):
    acc = 0.0
    for k in range(u.shape[0]):
        if u[k] > 0.0:
            acc += 0.5 * u[k] * u[k]
    for m in range(lam.shape[0]):
        acc += 0.5 * eps * lam[m] * lam[m] - mel[m] * lam[m]
    return acc


@njit(cache=True, parallel=True)
def _nnls_frames(mel, start, length, offset, w, n_used, eps, tol, max_iter, out, iters):
    K, M = mel.shape
    for f in prange(K):
        m_vec = mel[f]
        lam = np.zeros(M)
        step = np.zeros(M)
        trial = np.zeros(M)
        g = np.zeros(M)
        diag = np.zeros(M)
        off = np.zeros(max(M - 1, 1))
        cp = np.zeros(max(M - 1, 1))
        u = np.ones(n_used)
        x = np.zeros(n_used)
        norm_m = np.sqrt(np.sum(m_vec * m_vec))
        it = 0
        if norm_m > 0.0:
            # start from the all-active solution (fb.T fb + eps I) lam = mel
            _tridiag(u, start, length, offset, w, eps, diag, off)
            _thomas(diag, off, m_vec, lam, cp)
            _fb_t(lam, start, length, offset, w, u)
            theta = _dual_objective(lam, u, m_vec, eps)
            stall = 0
            while it < max_iter:
                for k in range(n_used):
                    x[k] = u[k] if u[k] > 0.0 else 0.0
                _fb_apply(x, start, length, offset, w, g)
                gn = 0.0
                for m in range(M):
                    g[m] += eps * lam[m] - m_vec[m]
                    gn += g[m] * g[m]
                gn = np.sqrt(gn)
                if gn <= tol * norm_m:
                    break
                it += 1
                _tridiag(u, start, length, offset, w, eps, diag, off)
                for m in range(M):
                    trial[m] = -g[m]
                _thomas(diag, off, trial, step, cp)
                slope = 0.0
                for m in range(M):
                    slope += g[m] * step[m]
                for k in range(n_used):
                    x[k] = 1.0 if u[k] > 0.0 else 0.0  # x now holds the active pattern
                t = 1.0
                same_pattern = False
                for _ in range(60):  # Armijo backtracking on the dual objective
                    for m in range(M):
                        trial[m] = lam[m] + t * step[m]
                    _fb_t(trial, start, length, offset, w, u)
                    if t == 1.0:
                        same_pattern = True
                        for k in range(n_used):
                            if (u[k] > 0.0) != (x[k] > 0.0):
                                same_pattern = False
                                break
                        if same_pattern:  # the equation is linear on this piece: the step is exact
                            break
                    th = _dual_objective(trial, u, m_vec, eps)
                    if th <= theta + 1e-4 * t * slope:
                        break
                    t *= 0.5
                lam[:] = trial
                if same_pattern:
                    break
                new_theta = _dual_objective(lam, u, m_vec, eps)
                # stagnation: rounding-level flips of bins at u ~ 0 can cycle without progress
                if theta - new_theta <= 1e-14 * abs(theta):
                    stall += 1
                    if stall >= 3:
                        break
                else:
                    stall = 0
                theta = new_theta
        for k in range(n_used):
            out[f, k] = u[k] if (u[k] > 0.0 and norm_m > 0.0) else 0.0
        iters[f] = it


def nnls(mel: np.ndarray, fb: BandedFilterbank, eps_rel: float = NNLS_EPS_REL, tol: float = 1e-9,
         max_iter: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """mel (K, M) non-negative -> (x (K, used_bins) float64 >= 0, Newton iterations (K,))."""
    mel = np.ascontiguousarray(mel, dtype=np.float64)
    if mel.ndim != 2 or mel.shape[1] != fb.n_mels:
        raise InputError(f"mel frames must be (K, {fb.n_mels}), got {mel.shape}")
    if np.any(mel < 0) or not np.all(np.isfinite(mel)):
        raise InputError("mel amplitudes must be finite and non-negative")
    U = fb.used_bins
    energy = np.zeros(fb.n_mels)
    for m in range(fb.n_mels):
        o, n = fb.offset[m], fb.length[m]
        energy[m] = np.sum(fb.weights[o : o + n] ** 2)
    eps = eps_rel * max(float(energy.max()), 1e-300)
    out = np.zeros((mel.shape[0], U))
    iters = np.zeros(mel.shape[0], np.int64)
    _nnls_frames(mel, fb.start, fb.length, fb.offset, fb.weights, U, eps, tol, max_iter, out, iters)
    return out, iters


@njit(cache=True, parallel=True)
def _sgd_step(mel, L, buf, diff, start, length, offset, w, scale, lr, momentum, first, losses):
    """One torch SGD(momentum) step + clamp for every frame; losses[f] = pre-step sum of squares.
    grad = -scale * fb @ diff (scale = 2 / (batch * frames)) is added straight into the momentum
    buffer: buf = grad on the first step, momentum * buf + grad afterwards."""
    K, M = mel.shape
    n_used = buf.shape[1]
    for f in prange(K):
        acc_loss = 0.0
        for m in range(M):
            acc = 0.0
            o = offset[m]
            s = start[m]
            for j in range(length[m]):
                acc += L[f, s + j] * w[o + j]
            d = mel[f, m] - acc
            diff[f, m] = d
            acc_loss += d * d
        losses[f] = acc_loss
        for k in range(n_used):
            buf[f, k] = 0.0 if first else momentum * buf[f, k]
        for m in range(M):
            o = offset[m]
            s = start[m]
            dm = scale * diff[f, m]
            for j in range(length[m]):
                buf[f, s + j] -= w[o + j] * dm
        for k in range(n_used):
            v = L[f, k] - lr * buf[f, k]
            L[f, k] = v if v > 0.0 else 0.0


def sgd(mel: np.ndarray, fb: BandedFilterbank, init: np.ndarray, max_iter: int = 200, lr: float = 0.1,
        momentum: float = 0.9, tolerance_loss: float = 1e-5, tolerance_change: float = 1e-8,
        progress=None) -> np.ndarray:
    """mel (K, M), init (K, n_freqs) float32 uniform [0,1) -> (K, n_freqs) float32 (in place on init)."""
    mel = np.ascontiguousarray(mel, dtype=np.float32)
    L = np.ascontiguousarray(init, dtype=np.float32)
    K = mel.shape[0]
    buf = np.zeros((K, fb.used_bins), np.float32)
    diff = np.zeros((K, fb.n_mels))
    losses = np.zeros(K)
    scale = 2.0 / K
    loss = float("inf")
    for i in range(max_iter):
        _sgd_step(mel, L, buf, diff, fb.start, fb.length, fb.offset, fb.weights, scale, lr, momentum, i == 0, losses)
        new_loss = float(losses.sum()) / K
        if progress is not None:
            progress("inverse mel (sgd)", i + 1, max_iter)
        if new_loss < tolerance_loss or abs(loss - new_loss) < tolerance_change:
            break
        loss = new_loss
    return np.maximum(L, 0.0, out=L)


def uniform(rng, shape) -> np.ndarray:
    """U[0,1) float32 from a numpy Generator or a minriff.rng.Generator (torch-compatible .rand)."""
    if hasattr(rng, "rand"):
        return np.asarray(rng.rand(tuple(shape)), dtype=np.float32)
    return rng.random(tuple(shape), dtype=np.float32)


def inverse_mel(mel: np.ndarray, fb: BandedFilterbank, method: str = "nnls", rng=None, max_iter: int = 200,
                progress=None) -> np.ndarray:
    """mel (C, M, T) -> linear magnitudes (C, T, n_freqs) float32."""
    C, M, T = mel.shape
    frames = mel.transpose(0, 2, 1).reshape(C * T, M)
    if method == "nnls":
        x, _ = nnls(frames, fb)
        out = np.zeros((C * T, fb.n_freqs), np.float32)
        out[:, : fb.used_bins] = x
        if progress is not None:
            progress("inverse mel (nnls)", 1, 1)
    elif method == "sgd":
        rng = np.random.default_rng(0) if rng is None else rng
        out = sgd(frames, fb, uniform(rng, (C * T, fb.n_freqs)), max_iter=max_iter, progress=progress)
    else:
        raise InputError(f"inverse mel method must be 'nnls' or 'sgd', got {method!r}")
    return out.reshape(C, T, fb.n_freqs)
