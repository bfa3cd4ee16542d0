"""Elastic resume of the training stream: the states of N ranks loaded on M ranks.

The exact check (``test_every_unconsumed_example_is_consumed_exactly_once``) counts examples
in the first permutation of every partition's row-group cycle, where each row group sits at
exactly one cycle position, so an example key names one read. At any moment the dataset's
examples are then split, with no overlap, into: consumed (in a yielded batch, or dropped by a
filter and reported), and still to come for exactly one rank (the keys waiting in its state,
and the rows of the cycle positions its state has yet to read). The test checks that split
before the change, that the deal keeps the old ranks' "still to come" exactly, and again after
the new ranks have run for as long as no stream has asked for a row group past the first
permutation (asked, not served: read-ahead makes the check conservative).

That ledger reads the states with the package's helpers; the same claim is also checked
against an oracle independent of ``dali_asr.resume.elastic`` and of the state format
(``test_every_unconsumed_example_is_delivered_once_by_delivered_batches``): examples counted
as the batches deliver them, until the first permutation is used up.
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import partition_dir, read_espeak_rows, write_parquet, write_stats_tsv

from dali_asr.config import config_from_dict
from dali_asr.errors import ConfigError
from dali_asr.loader import AsrLoader
from dali_asr.planning.sources import MixtureSource
from dali_asr.planning.stages import waiting_keys
from dali_asr.planning.streaming import Cursor, PartitionStream, row_group_order
from dali_asr.resume.elastic import own_state
from dali_asr.storage.examples import example_key

LANGUAGES = ["deu_Latn", "eng_Latn", "fra_Latn", "spa_Latn"]
ROUNDS_BEFORE = 3


@pytest.fixture(scope="module")
def many_groups(espeak_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four espeak_read train partitions, their 48 rows written 4 times over (keys differ) in
    row groups of 2: 96 cycle positions per permutation, so ranks get far (LENGTH buckets fill
    slowly) before any reaches the second permutation."""
    base = tmp_path_factory.mktemp("many_groups")
    hours = {}
    for language in LANGUAGES:
        table = pa.concat_tables([read_espeak_rows("espeak_read", "train", language)] * 4)
        folder = partition_dir(base / "version=0", "espeak_read", "train", language)
        write_parquet(folder / "part-00000.parquet", table, 2)
        hours["espeak_read", language] = 1.0 + len(hours)
    write_stats_tsv(base / "language_distribution_0.tsv", hours)
    return base / "version=0"


def settings(root: Path, shuffle: bool, state_every: int = 16) -> dict:
    """LENGTH batches of a four-partition mixture, with or without shuffles (as YAML has it)."""
    return {
        "asr_task_config": {
            "min_audio_len": 16_000,
            "max_audio_len": 480_000,
            "max_num_elements": 480_000,
            "batching_strategy": "LENGTH",
            "example_shuffle_window": 12 if shuffle else 1,
            "batch_shuffle_window": 3 if shuffle else 1,
        },
        "mixture_parquet_storage_config": {
            "dataset_summary_path": str(root.parent / "language_distribution_0.tsv"),
            "beta_corpus": 0.5,
            "beta_language": 0.5,
        },
        "dali_asr": {"state_every": state_every},
    }


def config(root: Path, shuffle: bool, state_every: int = 16):
    return config_from_dict(settings(root, shuffle, state_every))


@pytest.fixture
def furthest(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """The furthest cycle position any stream has asked for, per partition."""
    seen: dict[str, int] = {}
    original = PartitionStream.ref_at

    def ref_at(self: PartitionStream, position: int):
        seen[self.partition.name] = max(seen.get(self.partition.name, -1), position)
        return original(self, position)

    monkeypatch.setattr(PartitionStream, "ref_at", ref_at)
    return seen


class Ledger:
    """Example keys as ``file:row_group:row`` strings, and the split described above."""

    def __init__(self, loader: AsrLoader) -> None:
        self.planner = loader.planner()
        self.files = loader.files.files
        self.seed = loader.config.mixture_parquet_storage_config.fragment_streaming.seed
        self.everything = Counter(
            self.name([ref.file_index, ref.row_group, row])
            for part in self.planner.partitions
            for ref in part.row_groups
            for row in range(ref.num_rows)
        )

    def name(self, key: list[int]) -> str:
        return f"{self.files[key[0]].rel}:{key[1]}:{key[2]}"

    def first_permutation(self, furthest: dict[str, int]) -> bool:
        return all(furthest.get(p.name, -1) < len(p.row_groups) for p in self.planner.partitions)

    def to_come(self, state: dict) -> Counter[str]:
        """One rank's examples still to come, in the first permutation."""
        plan = state["plan_state"]
        keys = waiting_keys(plan["stages"]) + plan["source"]["prefix"]
        for part, saved in zip(self.planner.partitions, plan["source"]["streams"], strict=True):
            cursor, size = Cursor.from_state(saved), len(part.row_groups)
            order = row_group_order(size, self.seed + part.index)
            runs = [(p, 0) for p in range(cursor.next, size, cursor.step)]
            for position, first in cursor.pending + runs:
                if position < size:
                    ref = part.row_groups[order[position]]
                    keys += [[ref.file_index, ref.row_group, r] for r in range(first, ref.num_rows)]
        return Counter(self.name(k) for k in keys)


def take_round(plans, loaders) -> Counter[str]:
    """One batch from every rank (lockstep, as DDP)."""
    return Counter(
        str(example_key(x.files.files, ex))
        for p, x in zip(plans, loaders, strict=True)
        for ex in next(p)
    )


def plan_keys(loader: AsrLoader, batches: int) -> list[list]:
    return [[example_key(loader.files.files, e) for e in b] for b in islice(loader.plan(), batches)]


def saved(loaders) -> list[dict]:
    return [json.loads(json.dumps(x.plan_state())) for x in loaders]


def ranks(root: Path, tokenizer: Path, cfg, world: int, states=()) -> list[AsrLoader]:
    """The loaders of ``world`` ranks, each given ``states`` (all old ranks') when there are."""
    loaders = [AsrLoader(root, "train", cfg, tokenizer, r, world) for r in range(world)]
    for x in loaders:
        if states:
            x.load_state_dict(list(states))
    return loaders


def skipped(loaders) -> Counter[str]:
    return Counter(str(k) for x in loaders for keys in x.report.keys.values() for k in keys)


@pytest.mark.parametrize("worlds", [(2, 3), (4, 2), (3, 2, 4)], ids=lambda w: "-".join(map(str, w)))
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_every_unconsumed_example_is_consumed_exactly_once(
    many_groups, espeak_tokenizer, furthest, worlds: tuple[int, ...], shuffle: bool
) -> None:
    """``worlds``: the world sizes in turn (3 → 2 → 4 resumes a resumed stream, whose state
    holds carried keys and dealt positions); each but the last runs a few rounds, then saves."""
    cfg = config(many_groups, shuffle)
    ledger = Ledger(AsrLoader(many_groups, "train", cfg, espeak_tokenizer))
    consumed: Counter[str] = Counter()
    states: list[dict] = []
    for world in worlds[:-1]:
        old = ranks(many_groups, espeak_tokenizer, cfg, world, states)
        plans = [x.plan() for x in old]
        for _ in range(ROUNDS_BEFORE):
            consumed += take_round(plans, old)
        states = saved(old)
        for p in plans:
            p.close()
        consumed += skipped(old)
        assert ledger.first_permutation(furthest)
        old_to_come = sum((ledger.to_come(s) for s in states), Counter())
        assert consumed + old_to_come == ledger.everything

    new = ranks(many_groups, espeak_tokenizer, cfg, worlds[-1], states)
    dealt = [own_state(states, x.resume_target()) for x in new]
    assert sum((ledger.to_come(s) for s in dealt), Counter()) == old_to_come
    carried = sum(len(s["plan_state"]["source"]["prefix"]) for s in dealt)
    assert carried > 0
    plans = [x.plan() for x in new]
    # the state, batches and skips after the last round that stayed in the first permutation
    after_change, last, dropped, rounds = Counter(), dealt, Counter(), 0
    while True:
        batch_keys = take_round(plans, new)
        if not ledger.first_permutation(furthest):
            break
        after_change += batch_keys
        last, dropped, rounds = saved(new), skipped(new), rounds + 1
    assert rounds >= 3
    assert all(not s["plan_state"]["source"]["prefix"] for s in last), "carried keys all used"
    total = consumed + after_change + dropped
    assert max(total.values()) == 1, "an example consumed twice"
    assert total + sum((ledger.to_come(s) for s in last), Counter()) == ledger.everything


def test_a_resumed_stream_resumes_exactly_on_as_many_ranks(many_groups, espeak_tokenizer):
    """After an elastic resume, a state saved mid-prefix loads on the same number of ranks
    and continues with exactly the batches the ranks would have given. (Batches of 2, a batch
    shuffle window of 8, 4 → 2 ranks: each new rank's first batch comes before it has used its
    share of the carried keys.)"""
    custom = settings(many_groups, True)
    custom["asr_task_config"].update(
        batching_strategy="STATIC", batch_size=2, example_shuffle_window=1, batch_shuffle_window=8
    )
    cfg = config_from_dict(custom)
    old = ranks(many_groups, espeak_tokenizer, cfg, 4)
    plans = [x.plan() for x in old]
    for _ in range(ROUNDS_BEFORE):
        take_round(plans, old)
    new = ranks(many_groups, espeak_tokenizer, cfg, 2, saved(old))
    plans = [x.plan() for x in new]
    take_round(plans, new)
    states = saved(new)
    assert any(s["plan_state"]["source"]["prefix"] for s in states)
    whole = [
        [[str(example_key(x.files.files, e)) for e in next(p)] for _ in range(6)]
        for p, x in zip(plans, new, strict=True)
    ]
    again = ranks(many_groups, espeak_tokenizer, cfg, 2, states)
    assert [[[str(e) for e in b] for b in plan_keys(x, 6)] for x in again] == whole


def test_loader_iteration_matches_the_plan(many_groups, espeak_tokenizer) -> None:
    """End to end (DALI on the CPU): old ranks iterate and save mid-way between two plan
    states (so the deal replays their last batches from metadata); the new ranks' batches
    are those of their metadata-only plan, with the examples' audio."""
    cfg = config(many_groups, True, state_every=2)
    old = ranks(many_groups, espeak_tokenizer, cfg, 2)
    iters = [iter(x) for x in old]
    for _ in range(3):
        for it in iters:
            next(it)
    states = [json.loads(json.dumps(x.state_dict())) for x in old]
    assert all(s["consumed"] - s["state_at"] == 1 for s in states)
    for x in old:
        x.close()
    planned, delivered = ranks(many_groups, espeak_tokenizer, cfg, 3), []
    for x in planned:
        x.load_state_dict(states)
    for x in ranks(many_groups, espeak_tokenizer, cfg, 3):
        x.load_state_dict(states)
        batches = list(islice(iter(x), 4))
        assert all(b.source_seqs.abs().sum() > 0 for b in batches)
        delivered.append([b.keys for b in batches])
        x.close()
    expected = [plan_keys(x, 4) for x in planned]
    assert delivered == expected


def test_checkpoint_files_of_two_ranks_load_on_three(
    many_groups, espeak_tokenizer, tmp_path
) -> None:
    from dali_asr.checkpoint import load_checkpoint, save_checkpoint

    cfg = config(many_groups, True)
    old = ranks(many_groups, espeak_tokenizer, cfg, 2)
    plans = [x.plan() for x in old]
    take_round(plans, old)
    states = saved(old)
    for x, state in zip(old, states, strict=True):
        x.load_state_dict(state)
        save_checkpoint(tmp_path / "ckpt.pt", x, step=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.rank0.pt", "ckpt.rank1.pt"]
    for r, x in enumerate(ranks(many_groups, espeak_tokenizer, cfg, 3)):
        assert load_checkpoint(tmp_path / "ckpt.pt", x) == {"step": 1}
        direct = AsrLoader(many_groups, "train", cfg, espeak_tokenizer, r, 3)
        direct.load_state_dict(states)
        assert plan_keys(x, 3) == plan_keys(direct, 3)


def test_cli_plan_loads_every_rank_state(many_groups, espeak_tokenizer, tmp_path) -> None:
    import contextlib
    import io

    from dali_asr.tools.cli import main

    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(settings(many_groups, True)))
    args = ["--data", str(many_groups), "--config", str(cfg), "--tokenizer", str(espeak_tokenizer)]

    def plan(*extra: str) -> list[dict]:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["plan", *args, *extra]) == 0
        return [json.loads(line) for line in buf.getvalue().splitlines()]

    def keys(batches: list[dict]) -> list[str]:
        return [f"{e['file']}:{e['row_group']}:{e['row']}" for b in batches for e in b["examples"]]

    files = [tmp_path / f"s{r}.json" for r in range(2)]
    before = []
    for r, f in enumerate(files):
        world = ["--rank", str(r), "--world-size", "2", "--max-batches", "3"]
        before += keys(plan(*world, "--save-state", str(f)))
    after = []
    for r in range(3):
        out = plan("--rank", str(r), "--world-size", "3", "--max-batches", "3", "--load-state",
                   *map(str, files))  # fmt: skip
        assert out[0]["batch"] == 3
        after += keys(out)
    assert len(set(before + after)) == len(before + after)


def test_incomplete_or_mixed_states_are_errors(many_groups, espeak_tokenizer) -> None:
    cfg = config(many_groups, True)
    old = ranks(many_groups, espeak_tokenizer, cfg, 2)
    plans = [x.plan() for x in old]
    take_round(plans, old)
    states = saved(old)
    take_round(plans, old)
    later = saved(old)
    three = ranks(many_groups, espeak_tokenizer, cfg, 3)[0]
    with pytest.raises(ConfigError, match=r"needs the states of all 2 ranks \(0\.\.1\)"):
        three.load_state_dict(states[0])
    with pytest.raises(ConfigError, match="at one step"):
        three.load_state_dict([states[0], later[1]])
    same = ranks(many_groups, espeak_tokenizer, cfg, 2)[1]
    with pytest.raises(ConfigError, match="hold none for rank 1"):
        same.load_state_dict(states[0])
    same.load_state_dict(states)  # all ranks, same world size: rank 1 takes its own
    old_format = dict(states[0], format_version=1)
    with pytest.raises(ConfigError, match="predates elastic resume"):
        same.load_state_dict(old_format)


# --- the same claim, against an oracle that owes nothing to elastic.py or the state format --
#
# The ledger above reads the saved states through the package's own helpers. Here nothing is
# read from a state: the examples are counted as the batches deliver them, the dataset's
# examples are listed from the parquet footers, and each delivered example is traced to where
# its row was read: a partition stream's cycle position (first permutation or later), or the
# examples an elastic resume carried over. The new ranks run until every example of the first
# permutation has been delivered; before that, each one must have come exactly once (old and
# new ranks together), and the repeats of the later permutations are told apart by origin,
# not by key.

FIRST, LATER, CARRIED = "first permutation", "later permutation", "carried"


@pytest.fixture
def origins(monkeypatch: pytest.MonkeyPatch) -> dict[int, tuple[object, str]]:
    """``id(example)`` → (the example, where its row was read), for every example a partition
    stream or an elastic resume's carried prefix hands to the planner."""
    seen: dict[int, tuple[object, str]] = {}
    stream_next = PartitionStream.__next__

    def traced_next(self: PartitionStream):
        ex = stream_next(self)
        position = self._cursor.item(self._serving)[0]  # the row group being served
        seen[id(ex)] = (ex, FIRST if position < len(self.partition.row_groups) else LATER)
        return ex

    prefixed = MixtureSource._prefixed

    def traced_prefixed(self: MixtureSource):
        for ex in prefixed(self):
            seen[id(ex)] = (ex, CARRIED)
            yield ex

    monkeypatch.setattr(PartitionStream, "__next__", traced_next)
    monkeypatch.setattr(MixtureSource, "_prefixed", traced_prefixed)
    return seen


def dataset_keys(root: Path) -> set[str]:
    """Every example of the dataset, ``file:row_group:row``, from the parquet footers."""
    keys = set()
    for path in sorted(root.rglob("*.parquet")):
        meta = pq.ParquetFile(path).metadata
        rel = path.relative_to(root).as_posix()
        for g in range(meta.num_row_groups):
            keys |= {f"{rel}:{g}:{r}" for r in range(meta.row_group(g).num_rows)}
    return keys


def static_settings(root: Path, shuffle: bool) -> dict:
    """STATIC batches of 3 (an example waits a bounded time: the run reaches the end of the
    first permutation) of the four-partition mixture; no filter drops an espeak_read row."""
    custom = settings(root, shuffle)
    custom["asr_task_config"].update(
        batching_strategy="STATIC", batch_size=3, min_audio_len=1, max_audio_len=480_000
    )
    return custom


@pytest.mark.parametrize("worlds", [(2, 3), (4, 2), (3, 2, 4)], ids=lambda w: "-".join(map(str, w)))
@pytest.mark.parametrize("shuffle", [False, True], ids=["ordered", "shuffled"])
def test_every_unconsumed_example_is_delivered_once_by_delivered_batches(
    many_groups: Path,
    espeak_tokenizer: Path,
    origins: dict[int, tuple[object, str]],
    worlds: tuple[int, ...],
    shuffle: bool,
) -> None:
    cfg = config_from_dict(static_settings(many_groups, shuffle))
    everything = dataset_keys(many_groups)
    assert len(everything) == 4 * 192
    delivered: Counter[str] = Counter()  # of the first permutation, carried ones included
    carried = later = 0

    def deliver(plans, loaders, stop_at_later: bool) -> None:
        nonlocal carried, later
        for plan, loader in zip(plans, loaders, strict=True):
            for ex in next(plan):
                _, origin = origins[id(ex)]
                if origin == LATER:
                    assert not stop_at_later, "an old rank read past the first permutation"
                    later += 1
                    continue
                carried += origin == CARRIED
                delivered[str(example_key(loader.files.files, ex))] += 1

    states: list[dict] = []
    for world in worlds[:-1]:
        old = ranks(many_groups, espeak_tokenizer, cfg, world, states)
        plans = [x.plan() for x in old]
        for _ in range(ROUNDS_BEFORE):
            deliver(plans, old, stop_at_later=True)
        states = saved(old)
        for p in plans:
            p.close()
        assert not skipped(old)
    before = len(delivered)
    new = ranks(many_groups, espeak_tokenizer, cfg, worlds[-1], states)
    plans = [x.plan() for x in new]
    rounds = 0
    while set(delivered) != everything and rounds < 1000:
        deliver(plans, new, stop_at_later=False)
        rounds += 1
    assert not skipped(new)
    assert set(delivered) == everything, (
        f"never delivered: {sorted(everything - set(delivered))[:5]}"
    )
    assert max(delivered.values()) == 1, [k for k, n in delivered.items() if n > 1][:5]
    assert before >= ROUNDS_BEFORE * 3 * worlds[0]
    assert later > 0  # the check did need to tell repeats apart
    if shuffle:
        assert carried > 0  # examples in flight at the change were dealt to the new ranks
