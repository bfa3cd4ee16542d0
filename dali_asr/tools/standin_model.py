"""The stand-in model ``dali-asr tune-batch`` measures when given none: a small conformer-like
encoder with a CTC head, on waveform (a wav2vec2-style convolutional front end) or fbank, so
the search sees a realistic mix of convolutions, attention and feed-forwards."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _ConformerBlock(nn.Module):
    """Macaron feed-forwards around self-attention and a depthwise convolution module."""

    def __init__(self, d_model: int, num_heads: int, kernel: int) -> None:
        super().__init__()

        def feed_forward() -> nn.Module:
            return nn.Sequential(
                nn.LayerNorm(d_model),
                nn.Linear(d_model, 4 * d_model),
                nn.SiLU(),
                nn.Linear(4 * d_model, d_model),
            )

        self.ff1, self.ff2 = feed_forward(), feed_forward()
        self.attn_norm = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, num_heads, batch_first=True)
        self.conv_norm = nn.LayerNorm(d_model)
        self.pointwise = nn.Conv1d(d_model, 2 * d_model, 1)
        self.depthwise = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, groups=d_model)
        self.conv_out = nn.Conv1d(d_model, d_model, 1)
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + 0.5 * self.ff1(x)
        h = self.attn_norm(x)
        x = x + self.attn(h, h, h, key_padding_mask=mask, need_weights=False)[0]
        h = self.conv_norm(x)
        if mask is not None:
            h = h.masked_fill(mask[..., None], 0.0)  # padding must not leak through the conv
        h = F.glu(self.pointwise(h.transpose(1, 2)), dim=1)
        x = x + self.conv_out(F.silu(self.depthwise(h))).transpose(1, 2)
        return self.final_norm(x + 0.5 * self.ff2(x))


class StandInEncoder(nn.Module):
    """A small conformer-like CTC encoder: a STAND-IN for sizing batches, not a real model.

    Waveform [B, T]: wav2vec2's conv feature extractor shape (kernels 10,3,3,3,3,2,2, strides
    5,2,2,2,2,2,2: 320 samples = 20 ms per frame) at ``d_model`` channels; fbank [B, T, 80]
    (10 ms frames): one stride-2 conv to 20 ms. Then ``num_layers`` conformer blocks and a
    linear CTC head; returns log-probabilities [B, T', vocab_size]. Its activation memory per
    sample is of the order of a small CTC model's; pass the real model for real numbers.
    """

    KERNELS = (10, 3, 3, 3, 3, 2, 2)
    STRIDES = (5, 2, 2, 2, 2, 2, 2)

    def __init__(
        self,
        feature: str = "waveform",
        d_model: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        vocab_size: int = 256,
        conv_kernel: int = 31,
    ) -> None:
        super().__init__()
        if feature not in ("waveform", "fbank"):
            raise ValueError(f"feature must be 'waveform' or 'fbank', got {feature!r}")
        self.feature = feature
        if feature == "waveform":
            self.convs = [(k, s) for k, s in zip(self.KERNELS, self.STRIDES, strict=True)]
            channels = [1] + [d_model] * len(self.convs)
        else:
            self.convs = [(3, 2)]
            channels = [80, d_model]
        layers: list[nn.Module] = []
        for (k, s), c_in, c_out in zip(self.convs, channels[:-1], channels[1:], strict=True):
            layers += [nn.Conv1d(c_in, c_out, k, s), nn.GELU()]
        self.frontend = nn.Sequential(*layers)
        self.blocks = nn.ModuleList(
            _ConformerBlock(d_model, num_heads, conv_kernel) for _ in range(num_layers)
        )
        self.head = nn.Linear(d_model, vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        for k, s in self.convs:
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        return lengths.clamp(min=1)  # an all-padding row would make attention NaN

    def forward(
        self, source_seqs: torch.Tensor, source_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        x = source_seqs[:, None, :] if self.feature == "waveform" else source_seqs.transpose(1, 2)
        x = self.frontend(x).transpose(1, 2)
        mask = None
        if source_padding_mask is not None:
            lengths = self.output_lengths((~source_padding_mask).sum(dim=1))
            mask = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.head(x).float().log_softmax(dim=-1)
