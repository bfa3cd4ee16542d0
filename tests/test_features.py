"""Features from the real DALI graph and the NumPy path against independent implementations:
soundfile for decoding, torch for the layer norm, kaldi-native-fbank (what the reference
wraps) for the fbank."""

from __future__ import annotations

import io
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from dali_asr.collate import LAYER_NORM, STANDARDIZE, collate_audio, fbank_features
from dali_asr.fbank import mel_matrix, num_fbank_frames
from dali_asr.graph import build_pipeline


def _blobs(root: Path, count: int) -> list[np.ndarray]:
    """Encoded files of the train split, FLAC, OGG and WAV alike."""
    out: list[np.ndarray] = []
    for path in sorted((root / "version=0").rglob("split=train/**/*.parquet")):
        for row in pq.read_table(path, columns=["audio_bytes"]).column(0).to_pylist():
            out.append(np.asarray(row, dtype=np.int8).view(np.uint8))
    return out[:: max(1, len(out) // count)][:count]


def _run_graph(blobs: list[np.ndarray]) -> list[np.ndarray]:
    batches = iter([blobs])
    pipe = build_pipeline(lambda: next(batches), max_batch_size=len(blobs), num_threads=2)
    pipe.build()
    audio, lengths = pipe.run()
    out = [np.asarray(audio[i]).copy() for i in range(len(blobs))]
    assert [int(np.asarray(lengths[i])[0]) for i in range(len(blobs))] == [len(a) for a in out]
    return out


def _decode(blob: np.ndarray) -> np.ndarray:
    audio, rate = sf.read(io.BytesIO(blob.tobytes()), dtype="float32")
    assert rate == 16_000
    return audio


def _knf_fbank(audio: np.ndarray) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.frame_opts.snip_edges = True
    opts.mel_opts.num_bins = 80
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(16_000, (audio * 32768.0).tolist())
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def _standardize(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=0)) / x.std(axis=0, ddof=1)


@pytest.fixture(scope="module")
def blobs(espeak_root: Path) -> list[np.ndarray]:
    return _blobs(espeak_root, 48)


@pytest.fixture(scope="module")
def decoded(blobs: list[np.ndarray]) -> list[np.ndarray]:
    return _run_graph(blobs)


def test_formats_are_mixed(blobs: list[np.ndarray]) -> None:
    magic = {bytes(b[:4]) for b in blobs}
    assert {b"fLaC", b"OggS"} <= magic


def test_graph_decodes_like_soundfile(blobs: list[np.ndarray], decoded: list) -> None:
    for blob, got in zip(blobs, decoded, strict=True):
        ref = _decode(blob)
        assert got.dtype == np.float32 and got.shape == ref.shape
        np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)


def test_layer_norm_equals_torch(decoded: list[np.ndarray]) -> None:
    """The reference layer-norms the waveform with torch (no affine, eps 1e-5)."""
    out, mask = collate_audio(decoded[:8], norm=LAYER_NORM)
    for b, audio in enumerate(decoded[:8]):
        t = torch.from_numpy(audio)
        ref = torch.nn.functional.layer_norm(t, t.shape).numpy()
        np.testing.assert_allclose(out[b, : len(audio)], ref, atol=1e-5, rtol=0)
        assert not mask[b, : len(audio)].any() and mask[b, len(audio) :].all()


def test_fbank_matches_kaldi_within_1e_3(decoded: list[np.ndarray]) -> None:
    """The standardised fbank equals kaldi-native-fbank's within 1e-3 on every bin, wherever
    float32 resolves the cell: a mel energy of at least 1e-9 of its frame's power. Below
    that, in the lowest bins of loud frames of this synthetic (no energy under ~100 Hz)
    corpus, both implementations compute float32 FFT rounding noise: 5 cells of 1.76 M, up
    to 4.5e-3 (the same distance whether we compute in float32 or float64)."""
    features = fbank_features(decoded)
    source, _ = collate_audio(features, norm=STANDARDIZE)
    errors, conditioned, raw = [], [], []
    for b, audio in enumerate(decoded):
        ref = _knf_fbank(audio)
        frames = num_fbank_frames(len(audio))
        assert ref.shape == features[b].shape == (frames, 80)
        errors.append(np.abs(source[b, :frames] - _standardize(ref)))
        conditioned.append(_well_conditioned(audio, features[b]))
        raw.append(np.abs(features[b] - ref)[conditioned[-1]].max())
    err, ok = np.concatenate(errors), np.concatenate(conditioned)
    assert err[ok].max() < 1e-3
    assert ok.mean() > 0.995
    assert np.percentile(err, 99.99) < 1e-3
    assert err.max() < 1e-2
    assert max(raw) < 5e-3  # the log energies before standardising, in nats


def _well_conditioned(audio: np.ndarray, log_mel: np.ndarray) -> np.ndarray:
    """Cells whose mel energy is at least 1e-9 of the frame's total power."""
    view = np.lib.stride_tricks.sliding_window_view(audio.astype(np.float64) * 32768, 400)
    frames = view[::160][: len(log_mel)]
    power = ((frames - frames.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    return np.exp(log_mel.astype(np.float64)) >= 1e-9 * power[:, None]


def test_standardised_fbank_has_zero_mean_unit_std(decoded: list[np.ndarray]) -> None:
    source, _ = collate_audio(fbank_features(decoded[:1]), norm=STANDARDIZE)
    np.testing.assert_allclose(source[0].mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(source[0].std(axis=0, ddof=1), 1, atol=1e-3)


def test_mel_matrix_is_kaldis() -> None:
    """Kaldi's triangles: 80 bins, 20 Hz to Nyquist, linear in mel, peak 1, Nyquist unused."""
    m = mel_matrix()
    assert m.shape == (257, 80) and not m[256].any()
    assert np.all(m.max(axis=0) > 0) and m.max() <= 1.0
    centers = m.argmax(axis=0)
    assert np.all(np.diff(centers) >= 0)


def test_frame_count_formula() -> None:
    assert num_fbank_frames(32_123) == 199
    assert num_fbank_frames(399) == 0
    assert num_fbank_frames(400) == 1
