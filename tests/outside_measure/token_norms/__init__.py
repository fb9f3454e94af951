"""Token norms: the L2 norm of every token's hidden state, a measurement in one folder of
its own outside layerwatch (settings, front and back half, table, report section, ``info``
line and what it sends to TensorBoard, W&B and MLflow)."""

from .measure import TokenNormsMeasurement
from .settings import TokenNorms

__all__ = ["TokenNorms", "TokenNormsMeasurement"]
