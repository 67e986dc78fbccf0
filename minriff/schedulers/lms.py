"""Linear multistep (LMS, k-diffusion) on the Euler sigma table, up to 4 past derivatives.

The coefficients integrate the Lagrange basis polynomials over [sigma_i, sigma_{i+1}] numerically
(scipy `quad`, epsrel 1e-4) with the integrand evaluated in float32, as diffusers does (its sigmas are
float32 tensors), so the coefficients agree to the last bits.
"""
from __future__ import annotations

from scipy import integrate

from minriff.schedulers.common import F32
from minriff.schedulers.euler import EulerScheduler


class LMSScheduler(EulerScheduler):
    name = "lms"
    supports_karras = True

    def set_timesteps(self, n: int) -> None:
        super().set_timesteps(n)
        self.derivatives: list = []

    def _coefficient(self, order: int, i: int, current: int) -> float:
        s = self.sigmas

        def basis(tau: float) -> float:
            prod = None
            for k in range(order):
                if k == current:
                    continue
                term = (F32(tau) - s[i - k]) / (s[i - current] - s[i - k])
                prod = term if prod is None else prod * term
            return 1.0 if prod is None else float(prod)

        return integrate.quad(basis, float(s[i]), float(s[i + 1]), epsrel=1e-4)[0]

    def step(self, eps, t, x, generator=None, order: int = 4, **_):
        self._require_timesteps()
        self._init_step_index(t)
        i = self._step_index
        sigma = self.sigmas[i]
        x0 = x - sigma * eps
        self.derivatives.append((x - x0) / sigma)
        if len(self.derivatives) > order:
            self.derivatives.pop(0)
        order = min(i + 1, order)
        coeffs = [self._coefficient(order, i, c) for c in range(order)]
        update = None
        for coeff, d in zip(coeffs, reversed(self.derivatives)):
            term = F32(coeff) * d
            update = term if update is None else update + term
        self._step_index += 1
        return x + update
