"""Storage: reading Omnilingual-layout datasets (hive partitions of parquet files, or manifest
TSVs) into examples, I/O only.

An example's ``audio_size`` counts samples at :data:`SAMPLE_RATE`, the rate the whole loader
works at (other rates are resampled when decoded)."""

SAMPLE_RATE = 16_000
