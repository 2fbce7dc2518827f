"""Architectures of package-shipped checkpoints, written out here for ``--arch`` in the tests.

The packages' own modules import audio libraries that are not installed (they are installed
``--no-deps`` for their weights only), so the architecture is restated from their source.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class VoiceEncoder(nn.Module):
    """resemblyzer's speaker encoder (resemblyzer/voice_encoder.py, hparams.py): 3-layer LSTM,
    Linear, ReLU, L2 norm. Its checkpoint also holds the loss's similarity_weight/bias."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        embeds_raw = self.relu(self.linear(hidden[-1]))
        return embeds_raw / torch.norm(embeds_raw, dim=1, keepdim=True)


def voice_encoder() -> nn.Module:
    return VoiceEncoder()
