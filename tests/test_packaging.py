"""What the wheel carries: the CUDA sources as the package data ``dali_asr.kernels`` (read with
importlib.resources, so no other package's ``kernels/`` folder can be picked up), every
package of the tree, and the GPU extras' cuFFT kept out of the CPU install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

from dali_asr.pipeline.gpu_kernels import KERNEL_FUNCTIONS, kernel_files

REPO = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_every_package_of_the_tree_is_listed() -> None:
    on_disk = {
        ".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "dali_asr").rglob("__init__.py")
    }
    listed = set(PROJECT["tool"]["setuptools"]["packages"])
    assert on_disk | {"dali_asr.kernels"} == listed


def test_gpu_extras_bring_cufft_and_the_cpu_extra_does_not() -> None:
    extras = PROJECT["project"]["optional-dependencies"]
    assert any(d.startswith("nvidia-cufft-cu12") for d in extras["gpu12"])
    assert "dali-asr[cuda12]" in extras["gpu12"]
    assert any(d.startswith("nvidia-cufft>=") for d in extras["gpu13"])
    assert "dali-asr[cuda13]" in extras["gpu13"]
    assert not any("cufft" in d for d in extras["cuda12"] + extras["dev"])


def test_kernels_are_read_from_the_installed_package() -> None:
    names = {p.name for p in kernel_files().iterdir() if p.name.endswith(".cu")}
    assert names == {f"{k}.cu" for k in KERNEL_FUNCTIONS}


def test_a_source_checkout_without_an_install_finds_its_own_kernels(tmp_path: Path) -> None:
    """PYTHONPATH=<checkout>, with the install's finder out of the way (as on a machine where
    dali-asr is not installed): the checkout's kernels/, recognised by its pyproject.toml."""
    code = (
        "import sys; sys.meta_path[:] = [f for f in sys.meta_path "
        "if 'editable' not in type(f).__module__ and 'editable' not in str(f)]; "
        f"sys.path.insert(0, {str(REPO)!r}); "
        "from dali_asr.pipeline.gpu_kernels import kernel_files, kernel_source; "
        "print(kernel_files()); print(len(kernel_source('log_mel')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    where, size = done.stdout.split()
    assert Path(where) == REPO / "kernels" and int(size) > 0


def test_the_wheel_ships_the_kernels_inside_the_package(tmp_path: Path) -> None:
    """Built from a clean copy of the sources: a checkout's build/ folder would hand setuptools
    files that an earlier configuration put there."""
    source = tmp_path / "src"
    skip = (".git", ".venv", ".device", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*skip))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("dali_asr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for kernel in KERNEL_FUNCTIONS:
        assert f"dali_asr/kernels/{kernel}.cu" in names
    assert not any(n.startswith(("kernels/", "share/")) or "/share/" in n for n in names)
