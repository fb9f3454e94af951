"""The settings of the token-norms measurement, checked when they are built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from layerwatch.settings import Settings


@dataclass(frozen=True)
class TokenNorms(Settings):
    """Settings of ``token_norms`` (``measures=[TokenNorms(layer=1)]``, or ``token_norms=True,
    token_norms_layer=1``).

    Attributes:
        layer: The hidden state whose tokens are measured (0 = the embeddings' output,
            -1 = the last layer, as Python indexes the model's ``hidden_states``).
    """

    name: ClassVar[str] = "token_norms"
    layer: int = -1

    def __post_init__(self) -> None:
        if isinstance(self.layer, bool) or not isinstance(self.layer, int):
            raise ValueError(f"TokenNorms(layer={self.layer!r}): layer must be an integer index of hidden_states (-1: the last)")
