"""The training stream read from an S3 server on localhost against local disk: first batch and
audio-s/s, with ``fragment_loading.num_parallel_fragments`` / ``nb_prefetch`` at their defaults
(1 / 1) and raised.

espeak-mini (``version=0`` and the stats TSV) is uploaded to moto's S3 server, run in its own
process (``python -m moto.server``) so that its request handling is not the loader's GIL's.
Moto answers at once; a real object store is milliseconds away, so ``--latency-ms`` adds rows
read through a proxy (a process of its own, this script with ``--proxy``) that holds every chunk
the client sends for that long: about one delay per request. The loader finds the server
through ``AWS_ENDPOINT_URL``, as a user would.

The stream is baseline.md's train mode (LENGTH, windows 1000 / 20, β 0.5 / 0.5 over the stats
TSV, waveform), ``--batches`` batches per run, DALI's threads at their default. One untimed
local warm-up, then ``--rounds`` rounds of every row in a fixed order; the table gives medians.
First batch: from the start of construction; audio-s/s: Σ audio_size / 16,000 over the wall
time from the end of construction to the last batch; requests: what the server logged per run.

    .venv/bin/python benchmarks/object_storage.py [--batches 300] [--rounds 2]
        [--latency-ms 20 ...] [--raised 8/4 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench_common import LENGTH_SETTINGS, SAMPLE_RATE, TRAIN_SHUFFLE

SHARED = Path(__file__).resolve().parents[2] / "shared"
ESPEAK = Path(os.environ.get("DALI_ASR_ESPEAK") or SHARED / "data" / "espeak-mini")
TSV = "language_distribution_0.tsv"
BUCKET, PREFIX = "asr", "espeak-mini"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process meant to listen on port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


# --- the delaying proxy (runs as ``object_storage.py --proxy LISTEN TARGET MS``) -----------------


def _pump(source: socket.socket, sink: socket.socket, delay: float) -> None:
    try:
        while chunk := source.recv(1 << 16):
            if delay:
                time.sleep(delay)
            sink.sendall(chunk)
    except OSError:
        pass  # the other side closed: the finally below closes this side
    finally:
        for s in (source, sink):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def serve_proxy(listen: int, target: int, delay_ms: float) -> None:
    """Forward 127.0.0.1:listen to 127.0.0.1:target, holding what clients send ``delay_ms``."""
    server = socket.create_server(("127.0.0.1", listen))
    while True:
        ready, _, _ = select.select([server], [], [], 1.0)
        if not ready:
            continue
        client, _ = server.accept()
        upstream = socket.create_connection(("127.0.0.1", target))
        for args in ((client, upstream, delay_ms / 1000), (upstream, client, 0.0)):
            threading.Thread(target=_pump, args=args, daemon=True).start()


# --- the server and the data ---------------------------------------------------------------


class Server:
    """moto's S3 server in its own process, logging one line per request to a file."""

    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = log_dir / "moto.log"
        self._log = open(self.log, "wb")  # noqa: SIM115
        command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        self.proxies: list[subprocess.Popen] = []
        wait_listening(self.port, self.process)

    def requests(self) -> int:
        with open(self.log, "rb") as lines:
            return sum(1 for line in lines if b'"GET ' in line or b'"HEAD ' in line)

    def proxy(self, delay_ms: float) -> int:
        port = free_port()
        command = [sys.executable, __file__, "--proxy", str(port), str(self.port), str(delay_ms)]
        process = subprocess.Popen(command)
        self.proxies.append(process)
        wait_listening(port, process)
        return port

    def close(self) -> None:
        for process in [*self.proxies, self.process]:
            process.terminate()
            process.wait(timeout=10)
        self._log.close()


def upload(port: int) -> float:
    """espeak-mini's version=0 and stats TSV into s3://asr/espeak-mini/; returns the MB sent."""
    import pyarrow.fs as pafs

    fs = pafs.S3FileSystem(
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        region="us-east-1",
        allow_bucket_creation=True,
    )
    fs.create_dir(BUCKET)
    version = f"{BUCKET}/{PREFIX}/version=0"
    pafs.copy_files(str(ESPEAK / "version=0"), version, destination_filesystem=fs)
    pafs.copy_files(str(ESPEAK / TSV), f"{BUCKET}/{PREFIX}/{TSV}", destination_filesystem=fs)
    infos = fs.get_file_info(pafs.FileSelector(BUCKET, recursive=True))
    return sum(i.size or 0 for i in infos) / 1e6


# --- one run ----------------------------------------------------------------------------------


def config(tsv: str, batches: int, parallel: int, prefetch: int) -> Any:
    from dali_asr.config import config_from_dict

    return config_from_dict(
        {
            "asr_task_config": {**LENGTH_SETTINGS, **TRAIN_SHUFFLE, "max_num_batches": batches},
            "mixture_parquet_storage_config": {
                "dataset_summary_path": tsv,
                "beta_corpus": 0.5,
                "beta_language": 0.5,
                "fragment_loading": {
                    "num_parallel_fragments": parallel,
                    "nb_prefetch": prefetch,
                },
            },
        }
    )


def run_once(data: str, tsv: str, batches: int, parallel: int, prefetch: int) -> dict[str, float]:
    from dali_asr.loader import AsrLoader

    tokenizer = ESPEAK / "tokenizer" / "char_spm.model"
    start = time.perf_counter()
    loader = AsrLoader(data, "train", config(tsv, batches, parallel, prefetch), tokenizer)
    built = time.perf_counter()
    first = None
    samples = count = 0
    try:
        for batch in loader:
            if first is None:
                first = time.perf_counter() - start
            samples += int(batch.source_seq_lens.sum())
            count += 1
    finally:
        loader.close()
    wall = time.perf_counter() - built
    return {
        "first_s": first or 0.0,
        "audio_s_per_s": samples / SAMPLE_RATE / wall,
        "batches": count,
        "row_groups_read": loader.files.row_groups_read,
    }


# --- the table --------------------------------------------------------------------------------


def rows(args: argparse.Namespace, server: Server) -> list[tuple[str, str, int | None]]:
    """(source, data URI or path, endpoint port; None for local)."""
    uri = f"s3://{BUCKET}/{PREFIX}/version=0"
    found = [("local disk", str(ESPEAK / "version=0"), None), ("S3 (moto)", uri, server.port)]
    for ms in args.latency_ms:
        found.append((f"S3 + {ms:g} ms", uri, server.proxy(ms)))
    return found


def measure(args: argparse.Namespace, server: Server) -> dict[tuple[str, str], list[dict]]:
    loadings = [("1 / 1 (defaults)", 1, 1)]
    for pair in args.raised:
        parallel, prefetch = (int(n) for n in pair.split("/"))
        loadings.append((f"{parallel} / {prefetch}", parallel, prefetch))
    sources = rows(args, server)
    results: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.rounds):
        for source, data, port in sources:
            if port is not None:
                os.environ["AWS_ENDPOINT_URL"] = f"http://127.0.0.1:{port}"
            tsv = str(ESPEAK / TSV) if port is None else f"s3://{BUCKET}/{PREFIX}/{TSV}"
            for loading, parallel, prefetch in loadings:
                before = server.requests()
                result = run_once(data, tsv, args.batches, parallel, prefetch)
                result["requests"] = server.requests() - before
                results.setdefault((source, loading), []).append(result)
                print(
                    f"round {round_ + 1} {source:<14} {loading:<17} "
                    f"first {result['first_s']:6.2f} s  {result['audio_s_per_s']:7.0f} audio-s/s  "
                    f"{result['requests']:5d} requests",
                    file=sys.stderr,
                    flush=True,
                )
    return results


def table(results: dict[tuple[str, str], list[dict]]) -> str:
    lines = [
        "| source | num_parallel_fragments / nb_prefetch | first batch s | audio-s/s | requests "
        "| row groups read |",
        "|---|---|---|---|---|---|",
    ]
    for (source, loading), runs in results.items():

        def median(key: str, runs: list[dict] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        lines.append(
            f"| {source} | {loading} | {median('first_s'):.2f} | {median('audio_s_per_s'):.0f} "
            f"| {median('requests'):.0f} | {median('row_groups_read'):.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--proxy":
        serve_proxy(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=300, help="batches per run (default 300)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of every row (default 2)")
    parser.add_argument(
        "--latency-ms",
        type=float,
        nargs="*",
        default=[20.0],
        help="per-request delays, one proxied row each (default 20; none: no proxied row)",
    )
    parser.add_argument(
        "--raised",
        nargs="*",
        default=["8/4"],
        metavar="P/D",
        help="num_parallel_fragments/nb_prefetch settings beside the defaults (default 8/4)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.update(CREDENTIALS, AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)  # it would win over AWS_ENDPOINT_URL
    print(f"load average at the start: {os.getloadavg()}", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp))
        try:
            mb = upload(server.port)
            print(f"uploaded {mb:.1f} MB to s3://{BUCKET}/{PREFIX}", file=sys.stderr)
            run_once(str(ESPEAK / "version=0"), str(ESPEAK / TSV), 3, 1, 1)  # warm-up
            results = measure(args, server)
        finally:
            server.close()
    print(
        f"training stream, {args.batches} batches per run, median of {args.rounds} rounds; "
        f"load average at the end: {os.getloadavg()}"
    )
    print(table(results))


if __name__ == "__main__":
    main()
