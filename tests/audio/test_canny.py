"""Canny edges (minriff.audio.canny): hand-computed small cases, a pixel-by-pixel reference written
here from OpenCV's rules, properties under hypothesis, and OpenCV's own edge maps of spectrograms
(committed by tests/fixtures/make_controlmaps.py; the live comparison is test_canny_oracle.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from minriff.audio.canny import canny, canny_mask
from minriff.errors import InputError
from support import FIXTURES, fixture_script


def step(height: int, h: int = 6, w: int = 10, at: int = 5) -> np.ndarray:
    """Columns < at are 0, the others `height`: a vertical step edge."""
    img = np.zeros((h, w), np.uint8)
    img[:, at:] = height
    return img


def test_step_edge_is_one_column_on_the_dark_side():
    # Sobel gives |gx| = 4 * 200 = 800 on both columns beside the step (4 and 5), 0 elsewhere; the
    # tie goes to the pixel whose left neighbour is smaller (OpenCV: m > left and m >= right)
    edges = canny_mask(step(200))
    expected = np.zeros_like(edges)
    expected[:, 4] = True
    np.testing.assert_array_equal(edges, expected)


def test_thresholds_are_strict_as_opencv():
    # a step of 50 has magnitude 4 * 50 = 200: not above high = 200, so no strong pixel, no edge
    assert not canny_mask(step(50)).any()
    assert canny_mask(step(51))[:, 4].all()  # 204 > 200
    assert not canny_mask(step(51), 100, 204).any()
    assert canny_mask(step(51), 100, 203.9).any()  # thresholds are floored: 203.9 -> 203
    # with L2 the squared magnitude (4h)^2 is compared with squared thresholds
    assert not canny_mask(step(50), 100, 200, l2_gradient=True).any()
    assert canny_mask(step(51), 100, 200, l2_gradient=True)[:, 4].all()


def test_hysteresis_keeps_weak_edges_only_when_connected_to_strong_ones():
    weak = step(30, h=12)  # magnitude 120: above low = 100, below high = 200
    assert not canny_mask(weak).any()
    joined = weak.copy()
    joined[:3, 5:] = 100  # the top three rows are a strong step (400), the rest a weak one touching it
    edges = canny_mask(joined)
    # the weak rows far from the junction (whose vertical gradient bends the edge around it) are kept
    assert edges[:2, 4].all() and edges[5:, 4].all()
    assert canny_mask(weak, 100, 119).any() and not canny_mask(weak, 120, 300).any()


def test_square_outline_is_a_thin_closed_ring():
    img = np.zeros((16, 16), np.uint8)
    img[4:12, 4:12] = 255  # rows/cols 4..11 bright
    edges = canny_mask(img)
    # left side on the dark column 3, right side on the bright column 11 (tie -> the left one of two
    # equal pixels); top on row 3, bottom on row 11 (same rule vertically)
    for r in range(6, 10):
        assert list(np.flatnonzero(edges[r])) == [3, 11]
    for c in range(6, 10):
        assert list(np.flatnonzero(edges[:, c])) == [3, 11]
    assert not edges[:3].any() and not edges[12:].any() and not edges[:, :3].any() and not edges[:, 12:].any()
    assert not edges[5:11, 5:11].any()  # the inside of the square stays empty
    ring = np.argwhere(edges)
    # closed: every edge pixel has at least two 8-neighbours on the ring
    for y, x in ring:
        assert edges[max(0, y - 1):y + 2, max(0, x - 1):x + 2].sum() - 1 >= 2


def test_output_is_three_equal_channels_of_0_or_255():
    out = canny(step(200))
    assert out.shape == (6, 10, 3) and out.dtype == np.uint8
    assert set(np.unique(out)) == {0, 255}
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def reference(image: np.ndarray, low: float, high: float, l2: bool = False) -> np.ndarray:
    """Pixel by pixel from OpenCV's rules (canny.cpp): Sobel with replicated borders, per pixel the
    channel of largest magnitude, the tan(22.5 deg) fixed-point sector test, strict/non-strict
    neighbour comparisons, floored thresholds, 8-connected hysteresis by a stack."""
    img = image[:, :, None] if image.ndim == 2 else image
    h, w, c = img.shape
    low, high = sorted((low, high))
    if l2:
        low, high = low * low, high * high
    low, high = int(np.floor(low)), int(np.floor(high))

    def px(y, x, k):
        return int(img[min(max(y, 0), h - 1), min(max(x, 0), w - 1), k])

    dx = np.zeros((h, w), np.int64)
    dy = np.zeros((h, w), np.int64)
    mag = np.zeros((h + 2, w + 2), np.int64)  # zero border
    for y in range(h):
        for x in range(w):
            best = None
            for k in range(c):
                gx = sum(wt * (px(y + d, x + 1, k) - px(y + d, x - 1, k)) for d, wt in ((-1, 1), (0, 2), (1, 1)))
                gy = sum(wt * (px(y + 1, x + d, k) - px(y - 1, x + d, k)) for d, wt in ((-1, 1), (0, 2), (1, 1)))
                m = gx * gx + gy * gy if l2 else abs(gx) + abs(gy)
                if best is None or m > best[0]:
                    best = (m, gx, gy)
            mag[y + 1, x + 1], dx[y, x], dy[y, x] = best
    state = np.zeros((h, w), np.int8)  # 0 none, 1 candidate, 2 strong
    for y in range(h):
        for x in range(w):
            m = mag[y + 1, x + 1]
            if m <= low:
                continue
            ax, ay = abs(dx[y, x]), abs(dy[y, x]) << 15
            t22 = ax * 13573
            if ay < t22:
                keep = m > mag[y + 1, x] and m >= mag[y + 1, x + 2]
            elif ay > t22 + (ax << 16):
                keep = m > mag[y, x + 1] and m >= mag[y + 2, x + 1]
            else:
                s = -1 if (dx[y, x] < 0) != (dy[y, x] < 0) else 1
                keep = m > mag[y, x + 1 - s] and m > mag[y + 2, x + 1 + s]
            if keep:
                state[y, x] = 2 if m > high else 1
    stack = [tuple(p) for p in np.argwhere(state == 2)]
    out = state == 2
    while stack:
        y, x = stack.pop()
        for yy in range(max(0, y - 1), min(h, y + 2)):
            for xx in range(max(0, x - 1), min(w, x + 2)):
                if state[yy, xx] == 1 and not out[yy, xx]:
                    out[yy, xx] = True
                    stack.append((yy, xx))
    return out


images = st.one_of(
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 14), st.integers(1, 14))),
    hnp.arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))),
)
thresholds = st.tuples(st.integers(0, 1200), st.integers(0, 1200))


@settings(max_examples=60, deadline=None)
@given(image=images, th=thresholds, l2=st.booleans())
def test_equals_the_pixel_by_pixel_reference(image, th, l2):
    np.testing.assert_array_equal(canny_mask(image, *th, l2_gradient=l2), reference(image, *th, l2))


@settings(max_examples=40, deadline=None)
@given(image=hnp.arrays(np.uint8, st.tuples(st.integers(1, 24), st.integers(1, 24))), th=thresholds,
       extra=st.integers(0, 300))
def test_properties(image, th, extra):
    low, high = sorted(th)
    edges = canny_mask(image, low, high)
    rgb = np.repeat(image[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(canny_mask(rgb, low, high), edges)  # grey == the same grey in 3 channels
    np.testing.assert_array_equal(canny_mask(255 - image, low, high), edges)  # inverting flips gx, gy only
    np.testing.assert_array_equal(canny_mask(image, high, low), edges)  # the thresholds are swapped
    assert not (canny_mask(image, low, high + extra) & ~edges).any()  # a higher high keeps a subset
    assert not (canny_mask(image, min(low + extra, high), high) & ~edges).any()  # so does a higher low


@settings(max_examples=40, deadline=None)
@given(row=hnp.arrays(np.uint8, st.integers(2, 40)), h=st.integers(1, 6), th=thresholds)
def test_edges_are_one_pixel_thin_across_the_gradient(row, h, th):
    edges = canny_mask(np.repeat(row[None], h, axis=0), *th)  # every column constant: gradients are horizontal
    assert not (edges[:, 1:] & edges[:, :-1]).any()
    assert (edges == edges[:1]).all()


def test_matches_opencv_on_committed_spectrogram_edges():
    data = np.load(FIXTURES / "controlmaps" / "opencv_canny.npz")
    make = fixture_script("make_controlmaps")
    meta = json.loads(data["meta"].tobytes())
    assert [c[0] for c in meta["cases"]] == [c[0] for c in make.CASES]
    for name, source, low, high, l2 in make.CASES:
        image = data[f"{name}.image"] if f"{name}.image" in data else make.load(source)
        expected = np.unpackbits(data[f"{name}.edges"], axis=-1, count=image.shape[1]).astype(bool)
        assert expected.sum() > 400, name  # the case has edges to compare
        got = canny_mask(image, low, high, l2_gradient=l2)
        assert (got != expected).sum() == 0, f"{name}: {(got != expected).sum()} pixels differ from OpenCV"


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((4,), np.uint8), np.zeros((0, 3), np.uint8),
                                 np.zeros((3, 3, 2), np.uint8)])
def test_bad_images_are_refused(bad):
    with pytest.raises(InputError):
        canny(bad)


@pytest.mark.parametrize("low, high", [(-1, 200), (100, float("nan")), (100, 1e9), ("100", 200)])
def test_bad_thresholds_are_refused(low, high):
    with pytest.raises(InputError, match="threshold"):
        canny(step(200), low, high)


def test_blur_smooths_before_the_gradient():
    noisy = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    assert canny_mask(noisy, 100, 200, sigma=2.0).sum() < canny_mask(noisy, 100, 200).sum()
    with pytest.raises(InputError, match="sigma"):
        canny(noisy, sigma=-1.0)
