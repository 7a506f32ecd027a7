"""Whether a CUDA device is visible (torch is imported here, where the job code lives)."""

from __future__ import annotations


def cuda_available() -> bool:
    """``torch.cuda.is_available()``; False when torch is not installed."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
