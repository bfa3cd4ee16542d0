"""From planned examples and their encoded bytes to batches: the DALI graph (decode, resample,
waveform or Kaldi fbank), audio checks, augmentation, the feeding threads, and collation on the
CPU (NumPy references) or the GPU (the CUDA kernels of the top-level ``kernels/``)."""
