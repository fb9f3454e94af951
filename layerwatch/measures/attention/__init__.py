"""Per-head attention statistics, their films, the heads' drift and the head view."""

from .measure import AttentionMeasurement

__all__ = ["AttentionMeasurement"]
