"""Training dynamics: data maps (Swayamdipta et al. 2020) and the area under the margin
(Pleiss et al. 2020) of every training row, recorded from training itself.

``Dynamics`` holds the settings (``dynamics=True`` takes its defaults);
``DynamicsMeasurement`` is the measurement. Importing this package loads no torch.
"""

from .compute import FIELDS, REGIONS, RowMeasures, cumulative, suspects, visit_measures
from .measure import DynamicsMeasurement
from .settings import Dynamics

__all__ = [
    "FIELDS", "REGIONS", "Dynamics", "DynamicsMeasurement", "RowMeasures", "cumulative", "suspects",
    "visit_measures",
]
