"""Batching: fairseq2-exact bucket tables, greedy length bucketing and static batching."""

from __future__ import annotations

from dali_asr.batching.bucket_sizes import (
    create_bucket_sizes,
    effective_max_num_elements,
    length_bucket_sizes,
)
from dali_asr.batching.length import LengthBucketer
from dali_asr.batching.static import StaticBatcher

__all__ = [
    "LengthBucketer",
    "StaticBatcher",
    "create_bucket_sizes",
    "effective_max_num_elements",
    "length_bucket_sizes",
]
