"""The example's own model and data: an MLP on two 2-D Gaussian blobs (classes at x = -2, +2)."""

from __future__ import annotations

import torch


class MLP(torch.nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """n points per class: class c centred at ((2c - 1) * 2, 0), unit variance."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat_interleave(n)
    x = torch.randn(2 * n, 2, generator=g) * 0.7
    x[:, 0] += (y.float() * 2 - 1) * 2
    return x, y


def boundary(n: int, seed: int) -> torch.Tensor:
    """n points near the decision boundary x = 0 (the model should be unsure there)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g) * 0.7
    x[:, 0] *= 0.15
    return x
