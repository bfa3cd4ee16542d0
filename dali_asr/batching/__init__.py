"""Batching: fairseq2-exact bucket tables, greedy length bucketing and static batching."""

from __future__ import annotations

from dali_asr.batching.bucket_sizes import (
    create_bucket_sizes,
    effective_max_num_elements,
    length_bucket_sizes,
)
from dali_asr.batching.length import LengthBucketer, bucket_by_length
from dali_asr.batching.static import StaticBatcher, static_batches

__all__ = [
    "LengthBucketer",
    "StaticBatcher",
    "bucket_by_length",
    "create_bucket_sizes",
    "effective_max_num_elements",
    "length_bucket_sizes",
    "static_batches",
]
