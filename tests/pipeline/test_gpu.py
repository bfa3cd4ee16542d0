"""GPU-only checks (skipped without CUDA): the kernels against their NumPy references with
poisoned outputs, zero copy, the GPU batch maker against the CPU one, and GPU features equal to
the CPU path's through the graph and the whole loader. ``benchmarks/gpu_tier1.py`` and
``gpu_tier2.py`` run these rows and more (timings, throughput, memory) as tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.gpu
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

sys.path.append(str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_kernel_checks as kc  # noqa: E402
from gpu_rows import Rows  # noqa: E402


@pytest.fixture
def rows(tmp_path: Path):
    table = Rows("pytest", tmp_path)
    yield table
    assert table.rows and not table.failed, table.failed


def test_kernels_equal_their_references(rows: Rows) -> None:
    with kc.stream_context():
        kc.check_kernels(rows)


def test_kernel_outputs_are_the_torch_tensors(rows: Rows) -> None:
    kc.check_zero_copy(rows)


@pytest.mark.parametrize(("fbank", "norm"), [(False, False), (False, True), (True, True)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_gpu_maker_equals_cpu_maker(fbank: bool, norm: bool, dtype: str) -> None:
    worst = kc.compare_makers(fbank, norm, dtype, 8)
    assert worst, "nothing compared"
    for name, error in worst.items():
        assert error <= kc.MAKER_LIMITS[name], (name, error)


@pytest.mark.parametrize("fbank", [False, True])
def test_gpu_features_equal_cpu_features(espeak_root: Path, fbank: bool) -> None:
    pytest.importorskip("nvidia.dali")
    import gpu_loader_checks as lc

    ok, value, goal = lc.graph_gpu_equals_cpu(espeak_root, fbank, "gpu", limit=48)
    assert ok, (value, goal)
    ok, value, goal = lc.loader_gpu_equals_cpu(espeak_root, fbank, "gpu", None)
    assert ok, (value, goal)
