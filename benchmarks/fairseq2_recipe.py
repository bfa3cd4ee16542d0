"""Omnilingual's wav2vec2 CTC training recipe, reduced to its training path, run by fairseq2's
own trainer on a tiny randomly initialised wav2vec2 ASR model, with either dataset family:
dali-asr's ``dali_asr_dataset`` or Omnilingual's ``mixture_parquet_asr_dataset``.

    f2-python benchmarks/fairseq2_recipe.py --reader dali --out DIR --data D/version=0 \\
        --tokenizer D/tokenizer/char_spm.model [--steps 30] [--checkpoint-every 10] \\
        [--kill-at-step 13]

Runs in the environment of ``scripts/setup_fairseq2_env.sh`` (fairseq2 0.6, omnilingual-asr
0.2.0); ``tests/fairseq2/test_training.py`` drives it.

What is Omnilingual's (``workflows/recipes/wav2vec2/asr`` at commit 81f51e2, which is not in
omnilingual-asr's wheel): the dataset section's fields, ``create_trainer``'s reader call
(``common.seed`` into the task seed, the mixed-precision dtype, ``num_accumulate`` from gradient
accumulation, ``context.default_dataset.as_(MixtureParquetAsrDataset)``), ``prepare_model``'s
freezing of the feature extractor, the criterion's training path (``as_source_input`` /
``as_target_input`` into the model, which returns the CTC loss) and its metrics. Left out:
validation (its WER calculator lives in the recipe folder too), the LLM branch, loading a
pretrained encoder. Added: the train unit writes each batch it trains on (step, loss, a digest
of the batch) to ``DIR/batches.jsonl``, and ``--kill-at-step S`` SIGKILLs the process when step S
starts, after the checkpoints of earlier steps are complete.

The dataset is selected by an asset card (``DIR/cards/espeak_mini.yaml``), exactly as a user's
card selects Omnilingual's: ``dataset_family: dali_asr_dataset`` is the one line that differs.
A rerun with the same ``--out`` resumes from the last checkpoint there (fairseq2's trainer).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from fairseq2.composition import register_dataset_family
from fairseq2.data.tokenizers.char import load_char_tokenizer
from fairseq2.datasets import Seq2SeqBatch, SyncMode
from fairseq2.metrics import Mean, MetricBag, Sum
from fairseq2.models.wav2vec2.asr import Wav2Vec2AsrModel
from fairseq2.nn.utils.module import freeze_parameters, to_device
from fairseq2.recipe.base import RecipeContext, TrainRecipe
from fairseq2.recipe.config import (
    TRI_STAGE_LR,
    AdamWConfig,
    CommonSection,
    DatasetSection,
    GangSection,
    GradAccumulationConfig,
    LRSchedulerSection,
    MixedPrecisionConfig,
    ModelSection,
    OptimizerSection,
    RegimeSection,
    TokenizerSection,
    TrainerSection,
    TriStageLRConfig,
)
from fairseq2.recipe.model import RecipeModel
from fairseq2.recipe.run import train
from fairseq2.recipe.trainer import Trainer, TrainUnit
from fairseq2.runtime.dependency import DependencyContainer
from fairseq2.utils.device_stat import NOOP_DEVICE_STAT_TRACKER, DeviceStatTracker
from omnilingual_asr.datasets.impl.mixture_parquet_asr_dataset import (
    MIXTURE_PARQUET_ASR_DATASET,
    MixtureParquetAsrDataset,
    MixtureParquetAsrDatasetConfig,
    open_mixture_parquet_asr_dataset,
)
from omnilingual_asr.datasets.storage.mixture_parquet_storage import MixtureParquetStorageConfig
from omnilingual_asr.datasets.tasks.asr_task import AsrTaskConfig
from torch import Tensor

TINY_WAV2VEC2_ASR = {
    "encoder_config": {
        "model_dim": 64,
        "feature_dim": 32,
        "feature_extractor_layer_descs": [(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32, 2, 2)] * 2,
        "pos_conv_kernel_size": 16,
        "num_pos_conv_groups": 4,
        "num_encoder_layers": 2,
        "num_encoder_attn_heads": 2,
        "ffn_inner_dim": 128,
        "dropout_p": 0.0,
        "attn_dropout_p": 0.0,
        "ffn_inner_dropout_p": 0.0,
        "layer_drop_p": 0.0,
    },
    "use_masking": False,
    "final_dropout_p": 0.0,
}
"""wav2vec2 ASR's base_10h with a 64-wide, 2-layer encoder and a 32-channel feature extractor
(the same strides: one frame per 20 ms); no dropout or masking, so two runs on the same batches
compute the same losses."""

TASK = {
    "min_audio_len": 16_000,
    "max_audio_len": 480_000,
    "max_num_elements": 480_000,
    "normalize_audio": True,
    "example_shuffle_window": 1,
    "batch_shuffle_window": 1,
}
"""The shipped CTC configs' task settings, with 30-s batches for a CPU."""


@dataclass(kw_only=True)
class AsrDatasetSection(DatasetSection):
    """Omnilingual's ``Wav2Vec2AsrDatasetSection`` (MIXTURE_PARQUET storage, ASR task)."""

    train_split: str | None = "train"
    valid_split: str | None = None
    storage_mode: str = "MIXTURE_PARQUET"
    task_mode: str = "ASR"
    mixture_parquet_storage_config: MixtureParquetStorageConfig = field(
        default_factory=MixtureParquetStorageConfig
    )
    asr_task_config: AsrTaskConfig = field(default_factory=AsrTaskConfig)


@dataclass(kw_only=True)
class TinyCtcRecipeConfig:
    """Omnilingual's ``Wav2Vec2AsrRecipeConfig``'s sections, sized for a CPU."""

    model: ModelSection = field(
        default_factory=lambda: ModelSection(
            family="wav2vec2_asr", arch="base_10h", config_overrides=TINY_WAV2VEC2_ASR
        )
    )
    dataset: AsrDatasetSection = field(default_factory=lambda: AsrDatasetSection())
    tokenizer: TokenizerSection = field(default_factory=lambda: TokenizerSection())
    gang: GangSection = field(default_factory=lambda: GangSection())
    trainer: TrainerSection = field(
        default_factory=lambda: TrainerSection(
            mixed_precision=MixedPrecisionConfig(mode="off", dtype=torch.float32),
            grad_accumulation=GradAccumulationConfig(num_batches=2),
        )
    )
    optimizer: OptimizerSection = field(
        default_factory=lambda: OptimizerSection(
            config=AdamWConfig(lr=1e-3, betas=(0.9, 0.98), eps=1e-08, weight_decay=0.0)
        )
    )
    lr_scheduler: LRSchedulerSection = field(
        default_factory=lambda: LRSchedulerSection(
            name=TRI_STAGE_LR,
            config=TriStageLRConfig(
                stage_ratio=(0.1, 0.4, 0.5), start_lr_scale=0.01, final_lr_scale=0.05
            ),
        )
    )
    regime: RegimeSection = field(default_factory=lambda: RegimeSection())
    common: CommonSection = field(default_factory=lambda: CommonSection())


def batch_digest(batch: Seq2SeqBatch) -> dict[str, Any]:
    """What identifies a batch across readers and runs: shapes, lengths, languages, the
    target tokens' hash and the float64 sum of the real source values."""
    sums = [
        float(batch.source_seqs[i, :n].double().sum()) for i, n in enumerate(batch.source_seq_lens)
    ]
    example = cast(dict, batch.example)
    return {
        "source_shape": list(batch.source_seqs.shape),
        "source_seq_lens": list(batch.source_seq_lens),
        "target_seq_lens": list(batch.target_seq_lens),
        "targets_sha1": hashlib.sha1(batch.target_seqs.cpu().numpy().tobytes()).hexdigest(),
        "lang": list(example["lang"]),
        "source_sums": sums,
    }


class CtcCriterion:
    """The training path of Omnilingual's ``Wav2Vec2AsrCriterion`` and its metrics."""

    def __init__(self, model: RecipeModel) -> None:
        self.model = model

    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        metric_bag.add("ctc_loss", Mean())
        for name in ("num_examples", "num_elements", "total_num_examples"):
            metric_bag.add(name, Sum())
        metric_bag.add("total_num_elements", Sum())
        metric_bag.add("padding", Sum())

    def __call__(self, batch: Seq2SeqBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        source_seqs, source_layout = batch.as_source_input()
        target_seqs, target_layout = batch.as_target_input()
        loss = self.model.module(source_seqs, source_layout, target_seqs, target_layout)
        with torch.inference_mode():
            n = batch.batch_size
            bits = loss.detach() / n / math.log(2)
            metric_bag.get("ctc_loss", Mean).update(bits, weight=n)
            metric_bag.get("num_examples", Sum).update(batch.num_examples)
            metric_bag.get("num_elements", Sum).update(batch.num_elements)
            metric_bag.get("total_num_examples", Sum).update(batch.num_examples)
            metric_bag.get("total_num_elements", Sum).update(batch.num_elements)
            metric_bag.get("padding", Sum).update(batch.padding)
        return loss, batch.batch_size


class RecordingTrainUnit(TrainUnit[Seq2SeqBatch]):
    """Omnilingual's ``Wav2Vec2AsrTrainUnit`` (no encoder freezing: a fresh model), writing
    every batch it trains on to a JSON-lines file."""

    def __init__(self, criterion: CtcCriterion, record: Path, kill_at_step: int | None) -> None:
        self._criterion = criterion
        self._record = record
        self._kill_at_step = kill_at_step
        self._step = 0

    def set_step_nr(self, step_nr: int) -> None:
        if step_nr == self._kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)  # a crash, not a clean stop
        self._step = step_nr

    def prepare_metric_bag(self, metric_bag: MetricBag) -> None:
        self._criterion.prepare_metric_bag(metric_bag)

    def process_batch(self, batch: Seq2SeqBatch, metric_bag: MetricBag) -> tuple[Tensor, int]:
        loss, size = self._criterion(batch, metric_bag)
        line = {"pid": os.getpid(), "step": self._step, "loss": float(loss.detach())}
        line["size"] = size
        line["target_tokens"] = int(sum(batch.target_seq_lens))
        line.update(batch_digest(batch))
        with self._record.open("a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return loss, size

    def process_metric_values(self, values: MutableMapping[str, object]) -> None:
        pass

    @property
    def model(self) -> RecipeModel:
        return self._criterion.model


class TinyCtcRecipe(TrainRecipe):
    def __init__(self, record: Path, kill_at_step: int | None) -> None:
        self._record = record
        self._kill_at_step = kill_at_step

    def register(self, container: DependencyContainer) -> None:
        # as Omnilingual's recipe; dali_asr_dataset comes from dali-asr's fairseq2 extension
        register_dataset_family(
            container,
            MIXTURE_PARQUET_ASR_DATASET,
            MixtureParquetAsrDataset,
            MixtureParquetAsrDatasetConfig,
            opener=open_mixture_parquet_asr_dataset,
        )
        # fairseq2 0.6's trainer registers a device-stat tracker for CUDA only and refuses to
        # train on a CPU without one
        container.register_instance(DeviceStatTracker, NOOP_DEVICE_STAT_TRACKER, key="cpu")

    def prepare_model(self, context: RecipeContext, model: RecipeModel) -> RecipeModel:
        module = cast(Wav2Vec2AsrModel, model.module)
        if context.gangs.dp.rank == 0:
            to_device(module, context.gangs.root.device)
        context.gangs.root.barrier()
        freeze_parameters(module.encoder_frontend.feature_extractor)
        return model

    def create_trainer(self, context: RecipeContext) -> Trainer:
        config = context.config.as_(TinyCtcRecipeConfig)
        dataset = context.default_dataset.as_(MixtureParquetAsrDataset)
        storage_config = config.dataset.mixture_parquet_storage_config
        task_config = config.dataset.asr_task_config
        unit = RecordingTrainUnit(CtcCriterion(context.model), self._record, self._kill_at_step)
        task_config.seed = config.common.seed
        data_reader = dataset.create_reader(
            split=config.dataset.train_split,
            tokenizer=context.default_tokenizer,
            gangs=context.gangs,
            dtype=config.trainer.mixed_precision.dtype,
            num_accumulate=config.trainer.grad_accumulation.num_batches,
            storage_config=storage_config,
            task_config=task_config,
        )
        return context.create_trainer(unit, data_reader, [], [])

    @property
    def config_kls(self) -> type[object]:
        return TinyCtcRecipeConfig


def write_card(folder: Path, reader: str, data: Path, settings: dict[str, Any]) -> None:
    """The dataset's asset card: Omnilingual's example card with ``data`` set, and for dali-asr
    the one changed line (plus optional dali-asr settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    family = "dali_asr_dataset" if reader == "dali" else "mixture_parquet_asr_dataset"
    config: dict[str, Any] = {"data": str(data)}
    if reader == "dali" and settings:
        config["dali_asr"] = settings
    card = {"name": "espeak_mini", "dataset_family": family, "dataset_config": config}
    (folder / "espeak_mini.yaml").write_text(json.dumps(card, indent=1), encoding="utf-8")


def recipe_config(args: argparse.Namespace, cards: Path) -> TinyCtcRecipeConfig:
    config = TinyCtcRecipeConfig()
    vocab = load_char_tokenizer(args.tokenizer, None).vocab_info.size
    config.model.config_overrides = {**TINY_WAV2VEC2_ASR, "target_vocab_size": vocab}
    config.dataset.name = "espeak_mini"
    storage = config.dataset.mixture_parquet_storage_config
    storage.sync_mode = SyncMode.UNTIL_FIRST
    storage.dataset_summary_path = str(args.summary) if args.summary else None
    storage.beta_corpus = storage.beta_language = 0.5 if args.summary else None
    storage.fragment_loading.cache = False
    config.dataset.asr_task_config = AsrTaskConfig(**TASK)
    config.tokenizer = TokenizerSection(path=args.tokenizer, family="char_tokenizer")
    config.regime = RegimeSection(
        num_steps=args.steps,
        checkpoint_every_n_steps=args.checkpoint_every,
        publish_metrics_every_n_steps=args.checkpoint_every,
    )
    config.common.assets.extra_paths = [cards]
    config.common.metric_recorders.tensorboard.enabled = False
    config.common.seed = 2
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", choices=["dali", "reference"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the version=0 folder")
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--summary", type=Path, help="language_distribution TSV (beta 0.5)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--kill-at-step", type=int)
    parser.add_argument("--dali-settings", default='{"reference_train_stream": true}', help="JSON")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cards = args.out / "cards"
    write_card(cards, args.reader, args.data, json.loads(args.dali_settings))
    recipe = TinyCtcRecipe(args.out / "batches.jsonl", args.kill_at_step)
    train(recipe, recipe_config(args, cards), args.out / "run")


if __name__ == "__main__":
    main()
