"""The CUDA sources of dali-asr's kernels, one kernel a file with its launch contract in the
header; installed as the package data ``dali_asr.kernels`` and compiled at run time by CuPy
(``dali_asr.pipeline.gpu_collate``)."""
