"""The pooled hidden states of every layer: layouts, metrics, drift, frames and films."""

from .measure import EmbeddingsMeasurement

__all__ = ["EmbeddingsMeasurement"]
