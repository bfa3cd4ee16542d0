"""A/B of dali-asr's settings on one machine: the arms' children alternate round by round
(A B, B A, A B, ...), so the machine's drift falls on every arm alike.

    .venv/bin/python benchmarks/ab.py --arm pool '{}' \\
        --arm no-pool '{"host_pool_threshold": null}' [--configs 'length/*/single'] \\
        [--rounds 6] [--min-pass-s 10] [--data PATH] [--json FILE]

Each arm is a name and its ``dali_asr`` settings (JSON; ``{}`` is the defaults). A warm-up
round (two epochs per arm) sizes each configuration's passes like ``run.py``; then every round
runs one pass per arm, each in its own process. Prints each arm's audio-s/s and CPU ms per
audio-second (min / median / max over the rounds) and, for every arm after the first, its
ratios to the first paired round by round (min / median / max). Two runs on these shared
machines differ by up to a third; arms alternated within one run show differences of a few
percent, which is what a setting's change needs (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from bench_common import BenchConfig
from run import (
    HERE,
    SCRIPTS,
    WARM_EPOCHS,
    Dataset,
    Subject,
    child_spec,
    resolve_dataset,
    run_child,
    select_configs,
    single_pass_batches,
    size_epochs,
)
from tqdm import tqdm

METRICS = (
    (lambda r: r["audio_s"] / max(r["wall_s"], 1e-9), "{:,.0f}"),  # audio-s/s
    (lambda r: 1000.0 * r["cpu_s"] / max(r["audio_s"], 1e-9), "{:.3f}"),  # CPU ms per audio-s
)


def spread(values: list[float], fmt: str) -> str:
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


class Runner:
    """One configuration's children: each arm's ``dali_asr`` settings, the same spec else."""

    def __init__(self, ds: Dataset, split: str, config: BenchConfig, threads: int, timeout: float):
        self.ds, self.split, self.config, self.timeout = ds, split, config, timeout
        self.subject = Subject("dali-asr", threads, sys.executable, HERE / SCRIPTS["dali-asr"])
        # a training stream never ends: it is capped at the single pass's batches × epochs
        self.single = single_pass_batches(ds, split, config, {}) if config.mode == "train" else 0

    def run(self, dali: dict[str, Any], epochs: int) -> dict[str, Any]:
        cap = self.single * epochs or None
        # the child takes num_threads from its subject's threads, which would hide the arm's
        threads = dali.get("num_threads", self.subject.threads)
        subject = dataclasses.replace(self.subject, threads=threads)
        spec = child_spec(self.ds, self.split, self.config, subject, cap, epochs, dali=dali)
        result = run_child(subject, spec, self.timeout)
        if "error" in result:
            raise SystemExit(f"{self.config.name} with {json.dumps(dali)}: {result['error']}")
        return result


def measure(
    runner: Runner, arms: dict[str, dict[str, Any]], rounds: int, min_pass_s: float, bar: tqdm
) -> dict[str, list[dict[str, Any]]]:
    """Each arm's pass results, one per round, the arms' order reversed every other round."""
    warm = [runner.run(dali, WARM_EPOCHS) for dali in arms.values()]
    bar.update(len(arms))
    epochs = size_epochs(warm, min_pass_s, WARM_EPOCHS)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    names = list(arms)
    order = [n for k in range(rounds) for n in (names if k % 2 == 0 else names[::-1])]
    for i, name in enumerate(order):
        bar.set_postfix_str(f"{runner.config.name} {name} round {i // len(names) + 1}")
        out[name].append({**runner.run(arms[name], epochs), "epochs": epochs, "order": i})
        bar.update()
    return out


def report(config: str, results: dict[str, list[dict[str, Any]]]) -> str:
    """A markdown table: each arm's figures, and each later arm's ratios to the first."""
    names = list(results)
    base = results[names[0]]
    lines = [
        f"### {config} ({len(base)} rounds of {base[0]['epochs']} epochs)",
        "",
        "| arm | audio-s/s min / med / max | CPU ms per audio-s min / med / max "
        f"| audio-s/s × {names[0]} | CPU × {names[0]} |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in names:
        runs = results[name]
        cells = [spread([f(r) for r in runs], fmt) for f, fmt in METRICS]
        ratios = ["—", "—"]
        if name != names[0]:
            pairs = list(zip(runs, base, strict=True))
            ratios = [spread([f(r) / f(b) for r, b in pairs], "{:.3f}") for f, _ in METRICS]
        lines.append(f"| {name} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--arm",
        nargs=2,
        action="append",
        metavar=("NAME", "JSON"),
        required=True,
        help="an arm: its name and dali_asr settings (two or more arms)",
    )
    p.add_argument("--configs", nargs="+", default=["length/*/single"])
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--min-pass-s", type=float, default=10.0)
    p.add_argument("--threads", type=int, default=2, help="DALI CPU threads")
    p.add_argument("--data", help="dataset folder (default: espeak-mini, else the demo data)")
    p.add_argument("--split", default="train")
    p.add_argument("--tokenizer")
    p.add_argument("--timeout", type=float, default=900.0, help="per child process, seconds")
    p.add_argument("--json", type=Path, help="write every pass's results here")
    args = p.parse_args(argv)
    arms = {name: json.loads(settings) for name, settings in args.arm}
    if len(arms) < 2:
        p.error("give two or more arms with distinct names")
    ds = resolve_dataset(args.data, args.tokenizer)
    configs = select_configs(args.configs)
    total = len(configs) * len(arms) * (args.rounds + 1)
    bar = tqdm(total=total, desc="A/B", unit="run", file=sys.stderr, dynamic_ncols=True)
    everything = {}
    for config in configs:
        runner = Runner(ds, args.split, config, args.threads, args.timeout)
        everything[config.name] = measure(runner, arms, args.rounds, args.min_pass_s, bar)
        tqdm.write(report(config.name, everything[config.name]) + "\n", file=sys.stdout)
    bar.close()
    if args.json:
        args.json.write_text(json.dumps({"arms": arms, "results": everything}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
