"""Features from the real DALI graph and the CPU path against independent implementations:
soundfile for decoding, torch for the layer norm, kaldi-native-fbank (what the reference
wraps) for the fbank; and the GPU's fbank recipe (``graph.kaldi_power`` + ``log_mel``), run on
the CPU, against Kaldi's algorithm and the CPU fbank."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from dali_asr.pipeline.collate import LAYER_NORM, STANDARDIZE, collate_audio
from dali_asr.pipeline.fbank import kaldi_fbank, log_mel, mel_matrix, num_fbank_frames
from dali_asr.pipeline.graph import build_pipeline, kaldi_power

# the criterion is shared with the GPU tiers (GPU fbank against CPU fbank)
sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fbank_agreement


def _train_blobs(root: Path) -> list[np.ndarray]:
    """Encoded files of the train split, FLAC, OGG and WAV alike, in path order."""
    out: list[np.ndarray] = []
    for path in sorted((root / "version=0").rglob("split=train/**/*.parquet")):
        for row in pq.read_table(path, columns=["audio_bytes"]).column(0).to_pylist():
            out.append(np.asarray(row, dtype=np.int8).view(np.uint8))
    return out


def _blobs(root: Path, count: int) -> list[np.ndarray]:
    out = _train_blobs(root)
    return out[:: max(1, len(out) // count)][:count]


def _run_graph(blobs: list[np.ndarray], fbank: bool = False) -> list[np.ndarray]:
    """The CPU graph's outputs: the decoded waveform, with ``fbank`` as without."""
    batches = iter([blobs])
    pipe = build_pipeline(
        lambda: next(batches), max_batch_size=len(blobs), num_threads=2, fbank=fbank
    )
    pipe.build()
    out, lengths = pipe.run()
    arrays = [np.asarray(out[i]).copy() for i in range(len(blobs))]
    assert [len(a) for a in arrays] == [int(np.asarray(lengths[i])[0]) for i in range(len(blobs))]
    return arrays


def _gpu_recipe_power(audio: list[np.ndarray]) -> list[np.ndarray]:
    """``graph.kaldi_power``, the GPU graph's fbank framing, run by DALI on the CPU."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(audio), num_threads=2, device_id=None, exec_dynamic=True)
    def power():
        wav = fn.external_source(source=lambda: audio, batch=True, dtype=types.FLOAT, ndim=1)
        return kaldi_power(wav, "cpu")

    pipe = power()
    pipe.build()
    (out,) = pipe.run()
    spectra = [np.asarray(out[i]).copy() for i in range(len(audio))]
    assert [len(p) for p in spectra] == [num_fbank_frames(len(a)) for a in audio]
    return spectra


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


@pytest.fixture(scope="module")
def fbank(blobs: list[np.ndarray]) -> list[np.ndarray]:
    """The CPU path's fbank: the graph's output with fbank on, through ``kaldi_fbank``."""
    return kaldi_fbank(_run_graph(blobs, fbank=True))


@pytest.fixture(scope="module")
def clips(espeak_root: Path) -> dict[str, np.ndarray]:
    """Real audio of each format (the first two train files of each, decoded by the graph),
    and cuts of one around the frame boundaries: under 400 samples Kaldi has no frame, and
    ours is that audio zero-padded to 400."""
    by_format: dict[bytes, list[np.ndarray]] = {b"fLaC": [], b"OggS": [], b"RIFF": []}
    for blob in _train_blobs(espeak_root):
        kind = by_format.get(bytes(blob[:4]))
        if kind is not None and len(kind) < 2:
            kind.append(blob)
    names = [f"{magic.decode()} {i}" for magic, found in by_format.items() for i in range(2)]
    audio = _run_graph([blob for found in by_format.values() for blob in found])
    out = dict(zip(names, audio, strict=True))
    voiced = audio[0][8_000:]  # past the leading silence
    for n in (1, 399, 400, 559, 560, 4_000):
        out[f"{n} samples"] = voiced[:n].copy()
    return out


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


def test_fbank_matches_kaldi_within_1e_3(decoded: list[np.ndarray], fbank: list) -> None:
    """The standardised fbank equals kaldi-native-fbank's within 1e-3 on every bin, wherever
    float32 resolves the cell: a mel energy of at least 1e-8 of its frame's power (99.93 % of
    the cells). Below that, in the lowest bins of loud frames of this synthetic corpus (no
    energy under ~100 Hz), both float32 FFTs compute rounding noise: 15 cells of 1.76 M differ
    by more than 1e-3, up to 4.7e-3 (measured)."""
    features = fbank
    source, _ = collate_audio(features, norm=STANDARDIZE)
    errors, resolved, raw = [], [], []
    for b, audio in enumerate(decoded):
        ref = _knf_fbank(audio)
        frames = num_fbank_frames(len(audio))
        assert ref.shape == features[b].shape == (frames, 80)
        errors.append(np.abs(source[b, :frames] - _standardize(ref)))
        resolved.append(fbank_agreement.resolved_cells(audio, features[b]))
        raw.append(np.abs(features[b] - ref)[resolved[-1]].max())
    figures = fbank_agreement.agreement(errors, resolved)
    assert fbank_agreement.agrees(figures), fbank_agreement.describe(figures)
    assert figures["resolved_share"] > 0.999
    assert max(raw) < 5e-3  # the log energies before standardising, in nats


def test_standardised_fbank_has_zero_mean_unit_std(fbank: list[np.ndarray]) -> None:
    source, _ = collate_audio(fbank[:1], norm=STANDARDIZE)
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
    assert num_fbank_frames(400) == num_fbank_frames(559) == 1
    assert num_fbank_frames(560) == 2
    assert num_fbank_frames(399) == num_fbank_frames(1) == 1  # one zero-padded frame


def test_cpu_graph_outputs_the_waveform_for_fbank(blobs: list, decoded: list) -> None:
    """The CPU graph runs no feature operator: ``BatchMaker`` computes the fbank after it."""
    for got, want in zip(_run_graph(blobs[:8], fbank=True), decoded[:8], strict=False):
        np.testing.assert_array_equal(got, want)


def test_kaldi_fbank_equals_kaldi_native_fbank(clips: dict[str, np.ndarray]) -> None:
    """The CPU fbank of each clip alone and of all of them in one batch against
    kaldi-native-fbank's, in log energies, wherever float32 resolves the cell (see above):
    FLAC, OGG and WAV, and cuts of 1, 399, 400, 559, 560 and 4,000 samples."""
    batch = kaldi_fbank(list(clips.values()))
    for (name, audio), together in zip(clips.items(), batch, strict=True):
        ref = _knf_fbank(np.pad(audio, (0, max(0, 400 - len(audio)))))
        (alone,) = kaldi_fbank([audio])
        assert alone.shape == together.shape == ref.shape == (num_fbank_frames(len(audio)), 80)
        # the same up to the FFT's rounding, which depends on a frame's place in memory
        np.testing.assert_allclose(alone, together, rtol=0, atol=1e-5)
        resolved = fbank_agreement.resolved_cells(np.pad(audio, (0, 400)), alone)
        assert resolved.mean() > 0.99, name
        error = np.abs(alone - ref)[resolved].max()
        assert error < 5e-3, f"{name}: {error:.2e}"  # nats, as for the 48 utterances above


def test_kaldi_fbank_leaves_the_callers_torch_threads(clips: dict[str, np.ndarray]) -> None:
    """It runs its torch ops on one thread (beside DALI's) and restores the caller's count."""
    before = torch.get_num_threads()
    kaldi_fbank(list(clips.values()))
    assert torch.get_num_threads() == before


def test_kaldi_fbank_equals_the_gpu_recipe_on_the_cpu(clips: dict[str, np.ndarray]) -> None:
    """The GPU computes the fbank with ``kaldi_power`` and ``log_mel`` (its NumPy reference
    here, DALI on the CPU): the GPU tiers compare it with ``kaldi_fbank``, by the criterion
    of ``fbank_agreement``."""
    audio = list(clips.values())
    cpu = kaldi_fbank(audio)
    gpu_recipe = [log_mel(power) for power in _gpu_recipe_power(audio)]
    errors, resolved = [], []
    for b, (clip, mel) in enumerate(zip(audio, cpu, strict=True)):
        pair, _ = collate_audio([mel, gpu_recipe[b]], norm=STANDARDIZE)
        errors.append(np.abs(pair[0] - pair[1])[: len(mel)])
        resolved.append(fbank_agreement.resolved_cells(np.pad(clip, (0, 400)), mel))
    figures = fbank_agreement.agreement(errors, resolved)
    assert fbank_agreement.agrees(figures), fbank_agreement.describe(figures)


def test_gpu_recipe_power_spectra_are_kaldis_frames(clips: dict[str, np.ndarray]) -> None:
    """The DALI framing of ``kaldi_power`` against Kaldi's ProcessWindow written out frame by
    frame in float64, on real audio and on cuts around the frame boundaries (1 and 399 samples
    zero-padded to a frame, pre-emphasised after the padding as Kaldi does)."""
    audio = list(clips.values())
    for clip, p in zip(audio, _gpu_recipe_power(audio), strict=True):
        ref = _kaldi_power(clip)
        assert p.shape == ref.shape
        # relative to each frame's total power: float32 FFT rounding
        assert (np.abs(p - ref) / ref.sum(axis=1, keepdims=True)).max() < 1e-6


def _kaldi_power(audio: np.ndarray) -> np.ndarray:
    frames = []
    for i in range(num_fbank_frames(len(audio))):
        x = np.zeros(400)
        chunk = audio[160 * i : 160 * i + 400].astype(np.float64) * 32768
        x[: len(chunk)] = chunk
        x -= x.mean()
        x[1:] -= 0.97 * x[:-1].copy()
        x[0] -= 0.97 * x[0]
        n = np.arange(400)
        window = (0.5 - 0.5 * np.cos(2 * np.pi * n / 399)) ** 0.85
        spectrum = np.fft.rfft(x * window, n=512)
        frames.append(spectrum.real**2 + spectrum.imag**2)
    return np.array(frames)
