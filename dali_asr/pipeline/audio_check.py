"""Checks on encoded and decoded audio, so one bad file cannot end a run.

A corrupt or unsupported file kills a whole DALI pipeline (the error invalidates it), so the
encoded bytes are sniffed before DALI sees them; what gets past the sniff and still fails is
found by ``probe`` after the fact, one file at a time in a throwaway pipeline. Decoded audio
is checked against the dataset's ``audio_size`` and for NaN or infinite samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from nvidia.dali import fn, pipeline_def, types

log = logging.getLogger(__name__)

EMPTY = "empty_audio"
UNSUPPORTED = "unsupported_format"
DECODE_ERROR = "decode_error"
LENGTH_MISMATCH = "length_mismatch"
NON_FINITE = "non_finite_audio"

# Formats DALI's bundled libsndfile decodes, by their first bytes.
_MAGIC = {b"fLaC": "flac", b"OggS": "ogg", b"RIFF": "wav", b"RF64": "wav", b"FORM": "aiff"}
# Under this many bytes no supported container holds a header and one frame.
_MIN_BYTES = 44


def sniff(blob: np.ndarray) -> str | None:
    """Why these encoded bytes cannot be decoded, judged from their header; None if they may."""
    if blob is None or len(blob) == 0:
        return EMPTY
    head = bytes(blob[:12])
    kind = _MAGIC.get(head[:4])
    if kind is None:
        return UNSUPPORTED
    if kind == "wav" and head[8:12] not in (b"WAVE",):
        return UNSUPPORTED
    if len(blob) < _MIN_BYTES:
        return DECODE_ERROR
    return None


def describe_format(blob: np.ndarray) -> str:
    """A name for the format of some bytes, for messages (mp3 and others included)."""
    head = bytes(blob[:4]) if blob is not None else b""
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    return _MAGIC.get(head, "unknown")


def length_tolerance(audio_size: int) -> int:
    """Decoded length may differ from ``audio_size`` by max(1,600 samples, 1 %)."""
    return max(1600, audio_size // 100)


def check_decoded(audio_size: int, decoded_length: int, finite: bool) -> str | None:
    """Why a decoded example is unusable (its length is off, or it holds NaN/inf), or None."""
    if abs(decoded_length - audio_size) > length_tolerance(audio_size):
        return LENGTH_MISMATCH
    if not finite:
        return NON_FINITE
    return None


def probe(blobs: Sequence[np.ndarray], num_threads: int = 1) -> list[str | None]:
    """Decode each blob alone in a CPU pipeline: DECODE_ERROR for those DALI rejects. Only run
    after a pipeline failed, so its cost (one small pipeline per failure) does not matter."""
    holder: list[np.ndarray] = []

    @pipeline_def(batch_size=1, num_threads=num_threads, device_id=None, prefetch_queue_depth=1)
    def one_file():
        encoded = fn.external_source(
            source=lambda: [holder[0]], dtype=types.UINT8, ndim=1, batch=True
        )
        audio, _ = fn.decoders.audio(encoded, dtype=types.FLOAT, downmix=True)
        return audio

    results: list[str | None] = []
    pipe = None
    for blob in blobs:
        holder[:] = [blob]
        if pipe is None:
            pipe = one_file()
            pipe.build()
        try:
            pipe.run()
            results.append(None)
        except RuntimeError as e:
            log.debug("probe: %s", str(e).splitlines()[0])
            results.append(DECODE_ERROR)
            pipe = None  # a failed pipeline is no longer valid
    return results
