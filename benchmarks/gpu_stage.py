"""Prepare the GPU tiers for a lent GPU machine that has no package registry and takes at most
64 MiB per call: DALI, the small wheels it imports, and espeak-mini, in three calls' worth.

    python benchmarks/gpu_stage.py [--data ../shared/data/espeak-mini]

DALI 2.4's CUDA 13 wheel is 190 MiB: four calls as a wheel. Packed again as a tar.xz of its
files for Python 3.12 alone (the wheel carries its binary modules for eight Pythons) it is
about 127 MiB: three parts of ~43 MiB, each beside a share of the dataset (train and dev
splits, the stats TSV, the tokenizer) that keeps its call under 60 MiB. Writes, under the
git-ignored ``.device/``:

    parts/dali.part.0{0,1,2}   the tar.xz in three pieces
    small/*.whl                optree, gast, astunparse, soundfile, cffi, pycparser (cp312)
    data{1,2,3}/               the dataset's files, each folder for one call
    install.sh                 on the GPU machine after the last part: join, check, unpack

and prints the three calls to make back to back (a machine goes back ~30 s after a call).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGE = REPO / ".device"
DALI = "nvidia-dali-cuda130==2.4.0"
SMALL = ["optree", "gast", "astunparse", "soundfile", "cffi", "pycparser"]
PY_TAG = "cpython-312"
CALLS = 3
CALL_LIMIT = 60 * 2**20  # of the 64 MiB a call may carry, with room to spare
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64"]  # fmt: skip


def pip_download(specs: list[str], dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
           "--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]  # fmt: skip
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run(cmd + specs, check=True)


def repack(wheel: Path, out: Path) -> None:
    """The wheel's files for Python 3.12 only, as tar.xz (xz's threads when it is there)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(wheel) as zf, tarfile.open(fileobj=buffer, mode="w") as tar:
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or (".cpython-3" in name and PY_TAG + "-" not in name):
                continue
            member = tarfile.TarInfo(name)
            member.size, member.mode = info.file_size, 0o755 if name.endswith(".so") else 0o644
            with zf.open(info) as f:
                tar.addfile(member, f)
    if shutil.which("xz"):
        with open(out, "wb") as f:
            subprocess.run(["xz", "-9", "-T0", "-c"], input=buffer.getvalue(), stdout=f, check=True)
    else:
        import lzma

        out.write_bytes(lzma.compress(buffer.getvalue(), preset=9))


def split(path: Path, parts: int, dest: Path) -> list[Path]:
    data = path.read_bytes()
    size = -(-len(data) // parts)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    out = []
    for i in range(parts):
        part = dest / f"dali.part.{i:02d}"
        part.write_bytes(data[i * size : (i + 1) * size])
        out.append(part)
    return out


def commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def tree_bytes() -> int:
    """What travels with every call: tracked and untracked-not-ignored files."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True,
        check=True,
    ).stdout.split(b"\0")  # fmt: skip
    return sum(
        (REPO / n.decode()).stat().st_size for n in listed if n and (REPO / n.decode()).is_file()
    )


def pack_data(data: Path, room: list[int]) -> tuple[list[list[Path]], list[Path]]:
    """The dataset's train and dev files (largest first) into the calls' spare room."""
    files = [data / "language_distribution_0.tsv", *sorted((data / "tokenizer").iterdir())]
    for split_name in ("dev", "train"):
        files += sorted(data.glob(f"version=0/*/split={split_name}/*/*.parquet"))
    order = files[:3] + sorted(files[3:], key=lambda p: -p.stat().st_size)
    calls: list[list[Path]] = [[] for _ in room]
    left = []
    for f in order:
        size = f.stat().st_size
        best = max(range(len(room)), key=lambda i: room[i])
        if room[best] >= size:
            calls[best].append(f)
            room[best] -= size
        else:
            left.append(f)
    return calls, left


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared/data/espeak-mini")
    args = parser.parse_args()
    (STAGE / "dl").mkdir(parents=True, exist_ok=True)
    wheels = sorted((STAGE / "dl").glob("nvidia_dali_cuda130-2.4.0-*.whl"))
    if not wheels:
        pip_download([DALI], STAGE / "dl")
        wheels = sorted((STAGE / "dl").glob("nvidia_dali_cuda130-2.4.0-*.whl"))
    packed = STAGE / "dali.tar.xz"
    if not packed.exists():
        print("repacking DALI (a few minutes)", file=sys.stderr)
        repack(wheels[0], packed)
    parts = split(packed, CALLS, STAGE / "parts")
    shutil.rmtree(STAGE / "small", ignore_errors=True)
    pip_download(SMALL, STAGE / "small")
    small = sum(p.stat().st_size for p in (STAGE / "small").iterdir())
    tree = tree_bytes()
    room = [CALL_LIMIT - tree - p.stat().st_size - (small if i == CALLS - 1 else 0)
            for i, p in enumerate(parts)]  # fmt: skip
    calls, left = pack_data(args.data.resolve(), room)
    for i, chosen in enumerate(calls, 1):
        dest = STAGE / f"data{i}"
        shutil.rmtree(dest, ignore_errors=True)
        for f in chosen:
            target = dest / f.relative_to(args.data.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
    digest = hashlib.sha256(packed.read_bytes()).hexdigest()
    (STAGE / "install.sh").write_text(INSTALL.format(sha=digest))
    print(f"DALI as {len(parts)} parts of {parts[0].stat().st_size / 2**20:.1f} MiB; "
          f"working tree {tree / 2**20:.1f} MiB; small wheels {small / 2**20:.1f} MiB")  # fmt: skip
    for i, chosen in enumerate(calls, 1):
        size = sum(f.stat().st_size for f in chosen)
        print(f"call {i}: {len(chosen)} data files, {size / 2**20:.1f} MiB")
    if left:
        print(f"left out (no room): {len(left)} files, e.g. {left[0]}")
    print(
        "\nCalls (back to back; each copies its share into /tmp/dali-stage and /tmp/espeak):\n"
        '  1: carry [".device/parts/dali.part.00", ".device/data1"]\n'
        "     stage() { mkdir -p /tmp/dali-stage /tmp/espeak && cp .device/parts/dali.part.* "
        "/tmp/dali-stage/ && cp -r .device/data*/. /tmp/espeak/; }; stage && <tier 1>\n"
        '  2: carry [".device/parts/dali.part.01", ".device/data2"]   same stage\n'
        '  3: carry [".device/parts/dali.part.02", ".device/data3", ".device/small", '
        '".device/install.sh"]\n'
        "     stage && source .device/install.sh && python3 benchmarks/gpu_tier2.py "
        "--data /tmp/espeak\n"
        f"  Prefix the tiers with DALI_ASR_COMMIT={commit()} (the copy's git is not this one)."
    )
    return 0


INSTALL = """#!/usr/bin/env bash
# On the GPU machine, after the last part: join the parts in /tmp/dali-stage, check the sum,
# unpack DALI into /tmp/site, install the small wheels there; exports PYTHONPATH.
# Use: source .device/install.sh
cat /tmp/dali-stage/dali.part.* > /tmp/dali.tar.xz
echo "{sha}  /tmp/dali.tar.xz" | sha256sum -c - \\
  || {{ echo "DALI incomplete: a part is missing"; return 1; }}
python3 -c "import tarfile; tarfile.open('/tmp/dali.tar.xz').extractall('/tmp/site')" \\
  || return 1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \\
  .device/small/*.whl || return 1
export PYTHONPATH=/tmp/site:$PWD${{PYTHONPATH:+:$PYTHONPATH}}
python3 -c "import nvidia.dali as d; print('DALI', d.__version__, 'ready')"
"""

if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
