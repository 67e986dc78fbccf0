"""Audio: mel spectrogram <-> waveform, and audio files. Knows no model (imports only numpy,
numba, scipy, PIL and minriff's leaf modules: errors, rng, values, images, progress, atomic).

    spectrogram.py  Riffusion's SpectrogramParams (checked ranges), audio <-> mel <-> 8-bit image
                    (+ EXIF); long audio streamed, long images converted in pieces
    stft.py         STFT / least-squares iSTFT with torch.stft's conventions
    melscale.py     HTK/Slaney mel filterbanks (torchaudio's melscale_fbanks), banded storage
    invmel.py       mel -> linear magnitude: NNLS (exact) or the original's SGD
    griffinlim.py   fast Griffin-Lim (momentum 0.99) as torchaudio
    phaseinit.py    peak-locked phase initialisation for Griffin-Lim
    seamless.py     consecutive clips -> one waveform: phase and loudness run on across joins
    join.py         pieces of long spectrograms: sizes and the crossfade
    io.py           read/write WAV/FLAC/OGG/MP3 (whole, a part, or block by block: AudioFile),
                    resampling, the original's loudness stage
    seams.py        how audible a join is: a spectral-flux seam measure (long pieces, remixes)
    controlmaps.py  ControlNet control images from music: control_image(prep, source, width), PREPROCESSORS
    canny.py        Canny edges on NumPy with OpenCV's conventions (what the SD 1.5 canny ControlNet saw)
    musicmaps.py    rhythm (spectral-flux onsets as lines) and melody (dominant pitch as a line) maps

The file functions are re-exported here: `minriff.audio.read_audio(path)`.
"""
from minriff.audio.io import (  # noqa: F401
    FORMATS,
    MAX_SECONDS,
    AudioFile,
    load_audio,
    loudness_riffusion,
    read_audio,
    resample,
    write_audio,
)
