"""Datasets on object storage: espeak-mini on a real S3 server (moto's, on localhost), read
through URIs by ``AsrLoader`` and the ``dali-asr`` commands, against the same files on disk.

The server authenticates requests (moto's IAM checks, switched on after the upload), so wrong
credentials are refused as a real S3 would refuse them.
"""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import boto3
import numpy as np
import pyarrow.fs as pafs
import pytest
from conftest import MILESTONE_TASK
from moto.server import ThreadedMotoServer

from dali_asr.config import LoaderConfig, config_from_dict
from dali_asr.errors import ConfigError, DatasetError
from dali_asr.loader import AsrLoader
from dali_asr.tools.cli import main

BUCKET = "asr"
PREFIX = "espeak-mini"
REGION = "us-east-1"
TSV = "language_distribution_0.tsv"
ALLOW_S3 = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
}


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    """``host:port``"""
    access_key: str
    secret_key: str

    @property
    def url(self) -> str:
        return f"http://{self.endpoint}"

    def uri(self, key: str = f"{PREFIX}/version=0", query: bool = False) -> str:
        """``s3://asr/<key>``, with the endpoint in the query when asked (else it comes from
        AWS_ENDPOINT_URL)."""
        tail = f"?endpoint_override={self.endpoint}&scheme=http" if query else ""
        return f"s3://{BUCKET}/{key}{tail}"


def _moto_auth(url: str, initial_free_requests: str) -> None:
    """Moto's switch for IAM authentication: requests after the first N are checked."""
    request = urllib.request.Request(
        f"{url}/moto-api/reset-auth",
        data=initial_free_requests.encode(),
        method="POST",
        headers={"Content-Type": "text/plain"},  # a form body would reach moto empty
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="session")
def s3_server(espeak_root: Path) -> Iterator[S3Server]:
    """espeak-mini's parquet files, stats TSV and a manifest folder in bucket ``asr`` of a
    moto server on a free localhost port, with one IAM user allowed ``s3:*``."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"{host}:{port}"
    url = f"http://{endpoint}"
    try:
        # before authentication is on, moto takes any key
        iam = boto3.client(
            "iam",
            endpoint_url=url,
            region_name=REGION,
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="loader")
        iam.put_user_policy(UserName="loader", PolicyName="s3", PolicyDocument=json.dumps(ALLOW_S3))
        key = iam.create_access_key(UserName="loader")["AccessKey"]
        fs = pafs.S3FileSystem(
            access_key="setup",
            secret_key="setup",
            endpoint_override=endpoint,
            scheme="http",
            region=REGION,
            allow_bucket_creation=True,
        )
        fs.create_dir(BUCKET)
        pafs.copy_files(
            str(espeak_root / "version=0"),
            f"{BUCKET}/{PREFIX}/version=0",
            destination_filesystem=fs,
        )
        pafs.copy_files(
            str(espeak_root / TSV), f"{BUCKET}/{PREFIX}/{TSV}", destination_filesystem=fs
        )
        for name, text in (("dev.tsv", "/audio\na.flac\t16000\n"), ("dev.wrd", "hello\n")):
            with fs.open_output_stream(f"{BUCKET}/manifest/{name}") as out:
                out.write(text.encode())
        _moto_auth(url, "0")
        yield S3Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        _moto_auth(url, "inf")  # moto's settings are this process's
        server.stop()


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server, with this test's environment holding its endpoint and credentials."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.url)
    # no instance-metadata lookups for credentials or region off EC2
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return s3_server


def single_pass() -> LoaderConfig:
    return config_from_dict(
        {
            "asr_task_config": MILESTONE_TASK,
            "mixture_parquet_storage_config": {"sync_mode": "UNTIL_LAST"},
        }
    )


def train_stream(summary: str) -> LoaderConfig:
    return config_from_dict(
        {
            "asr_task_config": {**MILESTONE_TASK, "example_shuffle_window": 100},
            "mixture_parquet_storage_config": {
                "dataset_summary_path": summary,
                "beta_corpus": 0.5,
                "beta_language": 0.5,
            },
        }
    )


def batches(loader: AsrLoader, limit: int | None = None) -> list[tuple[list, float, float]]:
    """Per batch: keys, and float64 sums of the unpadded audio and of its absolute values."""
    out = []
    try:
        for batch in islice(loader, limit):
            audio = [
                row[:n].double().numpy()
                for row, n in zip(batch.source_seqs, batch.source_seq_lens.tolist(), strict=True)
            ]
            values = np.concatenate(audio)
            keys = [(k.file, k.row_group, k.row) for k in batch.keys]
            out.append((keys, float(values.sum()), float(np.abs(values).sum())))
    finally:
        loader.close()
    return out


def plan_keys(loader: AsrLoader, limit: int | None = None) -> list[list[tuple[str, int, int]]]:
    planner = loader.planner()
    return [
        [(k.file, k.row_group, k.row) for k in map(planner.key, batch)]
        for batch in islice(planner.batches(), limit)
    ]


# --- the same data, read from S3 and from disk -------------------------------------------------


def test_single_pass_equals_local(
    s3: S3Server, espeak_root: Path, espeak_tokenizer: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the endpoint from the URI's query alone
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    remote = AsrLoader(s3.uri(query=True), "dev", single_pass(), espeak_tokenizer)
    local = AsrLoader(espeak_root, "dev", single_pass(), espeak_tokenizer)
    assert isinstance(remote.filesystem, pafs.S3FileSystem)
    assert remote.root == f"{BUCKET}/{PREFIX}/version=0"
    assert [f.rel for f in remote.files.files] == [f.rel for f in local.files.files]
    assert plan_keys(remote) == plan_keys(local)
    assert batches(remote) == batches(local)


def test_training_stream_with_the_stats_tsv_on_s3_equals_local(
    s3: S3Server, espeak_root: Path, espeak_tokenizer: Path
) -> None:
    remote = AsrLoader(s3.uri(), "train", train_stream(s3.uri(f"{PREFIX}/{TSV}")), espeak_tokenizer)
    local = AsrLoader(espeak_root, "train", train_stream(str(espeak_root / TSV)), espeak_tokenizer)
    weights = remote.planner().weights
    assert len(weights) == 12 and weights == local.planner().weights
    assert plan_keys(remote, 12) == plan_keys(local, 12)
    assert batches(remote, 4) == batches(local, 4)


def test_stats_command_equals_local(
    s3: S3Server, espeak_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stats", str(espeak_root)]) == 0
    local = capsys.readouterr().out
    assert main(["stats", s3.uri()]) == 0
    assert capsys.readouterr().out == local
    assert main(["stats", "--data", s3.uri(query=True), "--split", "dev"]) == 0
    assert "== split dev:" in capsys.readouterr().out


def _summary(text: str) -> list[str]:
    """The ``run`` summary without its timings."""
    timed = ("audio s per s", "wall seconds", "loader stalls")
    return [line for line in text.splitlines() if not line.startswith(timed)]


def test_plan_and_run_commands_equal_local(
    s3: S3Server,
    espeak_root: Path,
    espeak_tokenizer: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = tmp_path / "train.yaml"
    config.write_text(
        "mixture_parquet_storage_config: {dataset_summary_path: "
        f"'{s3.uri(f'{PREFIX}/{TSV}')}', beta_corpus: 0.5, beta_language: 0.5}}\n"
        f"asr_task_config: {json.dumps({**MILESTONE_TASK, 'example_shuffle_window': 100})}\n",
        encoding="utf-8",
    )
    common = ["--tokenizer", str(espeak_tokenizer), "--config", str(config)]
    plan = ["plan", "--split", "train", "--max-batches", "5", *common]
    assert main([*plan, "--data", str(espeak_root)]) == 0
    local = capsys.readouterr().out
    assert main([*plan, "--data", s3.uri()]) == 0
    assert capsys.readouterr().out == local and len(local.splitlines()) == 5

    config.write_text(
        "mixture_parquet_storage_config: {sync_mode: UNTIL_LAST}\n"
        f"asr_task_config: {json.dumps(MILESTONE_TASK)}\n",
        encoding="utf-8",
    )
    outputs = []
    for data in (str(espeak_root), s3.uri()):
        dump = tmp_path / f"{len(outputs)}.jsonl"
        run = ["run", "--data", data, "--split", "dev", *common, "--dump-batches", str(dump)]
        assert main(run) == 0
        outputs.append((_summary(capsys.readouterr().out), dump.read_text(encoding="utf-8")))
    assert outputs[0] == outputs[1]
    assert outputs[0][0][0].startswith("batches") and outputs[0][1]


# --- errors: what went wrong, and where -----------------------------------------------------


def test_missing_bucket(
    s3: S3Server, espeak_tokenizer: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    uri = f"s3://nobucket/{PREFIX}/version=0"
    with pytest.raises(DatasetError, match="no bucket 'nobucket'") as info:
        AsrLoader(uri, "dev", single_pass(), espeak_tokenizer)
    assert uri in str(info.value)
    assert main(["plan", "--data", uri, "--split", "dev"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and uri in err and len(err.splitlines()) == 1
    missing = s3.uri(f"{PREFIX}/version=9")
    with pytest.raises(
        DatasetError, match=re.escape(f"dataset path {missing} does not exist") + "$"
    ):
        AsrLoader(missing, "dev", single_pass(), espeak_tokenizer)


def test_wrong_credentials(
    s3: S3Server,
    espeak_tokenizer: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(DatasetError, match="ACCESS_DENIED") as info:
        AsrLoader(s3.uri(), "dev", single_pass(), espeak_tokenizer)
    message = str(info.value)
    assert s3.uri() in message and "AWS_SECRET_ACCESS_KEY" in message
    assert main(["stats", s3.uri(), "--split", "dev"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and s3.uri() in err and len(err.splitlines()) == 1


def test_unreachable_endpoint(s3: S3Server, espeak_tokenizer: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    # a filesystem object, to retry once: a URI's filesystem retries for about 6 s
    fs = pafs.S3FileSystem(
        endpoint_override=f"127.0.0.1:{port}",
        scheme="http",
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=1),
    )
    inside = f"{BUCKET}/{PREFIX}/version=0"
    with pytest.raises(DatasetError, match="NETWORK_CONNECTION") as info:
        AsrLoader(inside, "dev", single_pass(), espeak_tokenizer, filesystem=fs)
    assert f"s3://{inside}" in str(info.value) and "AWS_ENDPOINT_URL" in str(info.value)


def test_stats_tsv_missing_on_s3(s3: S3Server, espeak_tokenizer: Path) -> None:
    summary = s3.uri(f"{PREFIX}/nothing.tsv")
    loader = AsrLoader(s3.uri(), "train", train_stream(summary), espeak_tokenizer)
    with pytest.raises(DatasetError, match=re.escape(f"stats TSV {summary}: cannot be read")):
        loader.planner()


def test_manifest_storage_is_local_only(s3: S3Server, espeak_tokenizer: Path) -> None:
    uri = s3.uri("manifest")
    with pytest.raises(DatasetError, match=r"manifest storage .* local folders only") as info:
        AsrLoader(uri, "dev", single_pass(), espeak_tokenizer)
    assert uri in str(info.value) and "dev.tsv" in str(info.value)


def test_a_remote_dataset_needs_a_tokenizer(s3: S3Server) -> None:
    with pytest.raises(ConfigError, match="--tokenizer") as info:
        AsrLoader(s3.uri(), "dev", single_pass())
    assert s3.uri() in str(info.value)


def test_a_bad_uri_names_itself(s3: S3Server) -> None:
    uri = s3.uri(query=True) + "&endpointoverride=x"
    with pytest.raises(DatasetError, match="endpointoverride") as info:
        AsrLoader(uri, "dev", single_pass())
    assert uri in str(info.value)
    fs = pafs.S3FileSystem(endpoint_override=s3.endpoint, scheme="http")
    with pytest.raises(DatasetError, match="expected the path inside it") as info:
        AsrLoader(s3.uri(), "dev", single_pass(), filesystem=fs)
    assert s3.uri() in str(info.value)
