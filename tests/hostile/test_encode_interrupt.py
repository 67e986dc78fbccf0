"""An interrupt while soundfile encodes in memory: libsndfile calls back into Python to write, and cffi
swallows an exception raised there, so the encoder would go on with a short write and the damaged file
would be written as if complete (seen once in CI: an MP3 neither untouched nor complete after SIGINT).
encode_audio holds SIGINT/SIGTERM/SIGHUP back while it encodes and delivers them after."""
from __future__ import annotations

import signal

import numpy as np
import pytest

from minriff import atomic
from minriff.audio import io as audio_io


def test_an_interrupt_during_the_encode_arrives_after_it(monkeypatch):
    sf = audio_io._soundfile()
    real = sf.write
    done = []

    def write(*a, **k):
        signal.raise_signal(signal.SIGINT)  # as if Ctrl-C came in the middle of the encoder
        real(*a, **k)
        done.append(True)

    monkeypatch.setattr(sf, "write", write)
    wave = np.sin(np.linspace(0, 200, 4410)).astype(np.float32)
    with pytest.raises(KeyboardInterrupt):
        audio_io.encode_audio(wave, 44100, "wav")
    assert done == [True]  # the encoder finished undisturbed; the interrupt came afterwards
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is back


def test_deferred_signals_deliver_each_once_in_order():
    seen = []
    old = signal.signal(signal.SIGUSR1, lambda *a: None)
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for s in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, lambda signum, frame: seen.append(signum))
        with atomic.deferred_signals():
            signal.raise_signal(signal.SIGHUP)
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGHUP)
            assert seen == []
        assert seen == [signal.SIGHUP, signal.SIGTERM]
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        signal.signal(signal.SIGUSR1, old)
