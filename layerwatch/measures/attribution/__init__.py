"""Token attributions, layer conductance and attention norms of fixed examples."""

from .measure import AttributionMeasurement

__all__ = ["AttributionMeasurement"]
