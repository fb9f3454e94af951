"""Loaders for the data sets of layerwatch's examples (today: HatEval 2019, English).

An example beside the library, not part of its core: nothing in layerwatch imports it.
Errors name the functions' own arguments (``data=``, ``folder=``, ``n=``); a script that
offers them as flags says so in its own words (see ``scripts/finetune_hateval.py``).

- :func:`load_hateval`: a folder of either layout (detected), or the Hub;
- :func:`load_hateval_csv`, :func:`read_hateval_csv`: the organisers' CSV files;
- :func:`load_tweeteval`: the TweetEval layout;
- :func:`load_hub`: TweetEval's ``hate`` configuration on the Hugging Face Hub;
- :func:`detect_format`, :func:`stratified_sample`, :data:`LABEL_NAMES`.
"""

from ._text import ReadReport
from .hateval import LABEL_NAMES, detect_format, load_hateval, stratified_sample
from .hateval_csv import load_hateval_csv, read_hateval_csv
from .hub import load_hub
from .tweeteval import load_tweeteval

__all__ = [
    "LABEL_NAMES",
    "ReadReport",
    "detect_format",
    "load_hateval",
    "load_hateval_csv",
    "load_hub",
    "load_tweeteval",
    "read_hateval_csv",
    "stratified_sample",
]
