"""GPU-only checks (skipped without CUDA): the kernels against their NumPy references with
poisoned outputs, zero copy, and GPU features equal to the CPU path's. ``benchmarks/
gpu_check.py`` runs these rows and more (memory, throughput, bandwidth) as one table."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

sys.path.append(str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check  # noqa: E402


@pytest.fixture(autouse=True)
def _rows():
    gpu_check.ROWS.clear()
    yield
    failed = [r for r in gpu_check.ROWS if r["ok"] is False]
    assert gpu_check.ROWS and not failed, failed


def test_kernels_equal_their_references() -> None:
    gpu_check.check_kernels()


def test_kernel_outputs_are_the_torch_tensors() -> None:
    gpu_check.check_zero_copy()


def test_gpu_features_equal_cpu_features(espeak_root: Path) -> None:
    gpu_check.check_gpu_equals_cpu(espeak_root, 4)
