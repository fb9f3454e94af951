"""Loaders for data sets used by layerwatch's example scripts."""

from .hateval import (
    LABEL_NAMES,
    ReadReport,
    clean_text,
    detect_format,
    hub_reachable,
    load_hateval,
    load_hateval_csv,
    load_hub,
    load_tweeteval,
    read_hateval_csv,
    stratified_sample,
)

__all__ = [
    "LABEL_NAMES",
    "ReadReport",
    "clean_text",
    "detect_format",
    "hub_reachable",
    "load_hateval",
    "load_hateval_csv",
    "load_hub",
    "load_tweeteval",
    "read_hateval_csv",
    "stratified_sample",
]
