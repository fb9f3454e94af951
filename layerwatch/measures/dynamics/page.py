"""The dynamics' part of the report page: per split, the data map as an interactive panel
(every row; hover to read it, click to pin it in the layouts) and the suspects, sortable."""

from __future__ import annotations

import base64
import os
from typing import Any

from ...pages.sections import snapshot_entry
from .compute import RowMeasures
from .files import MAPS, read_meta, read_texts

_PAGE_TEXTS = 2000  # rows whose texts the report page carries (lowest AUM first)


def report_sections(store: Any, settings: Any, report_text: bool) -> list[dict]:
    """A section per split with a data map: the map as an interactive panel (every row:
    hover to read it, click to pin it in the layouts) and the suspects, sortable."""
    out = []
    names = read_meta(store).get("label_names")
    for split in store.splits(MAPS):
        keys = store.keys(split, MAPS)
        if not keys:
            continue
        z = store.load_arrays(MAPS, split, keys[-1])
        m = RowMeasures(**{f: z[f] for f in RowMeasures.__dataclass_fields__})
        texts = read_texts(store, split) if report_text else {}
        # Texts of the rows a reader is most likely to read (the lowest AUM), within a budget.
        keep = set(m.rows[m.ranking()[:_PAGE_TEXTS]].tolist())
        r4 = lambda a: [round(float(v), 4) for v in a]  # noqa: E731
        datamap = {
            "split": split, "title": keys[-1].title, "top": settings.top,
            "thresholds": [settings.confidence_threshold, settings.variability_threshold],
            "label_names": names, "rows": m.rows.tolist(), "x": r4(m.variability), "y": r4(m.confidence),
            "correctness": r4(m.correctness), "aum": r4(m.aum), "label": m.label.tolist(),
            "predicted": m.predicted.tolist(),
            "texts": [texts.get(int(r)) if int(r) in keep else None for r in m.rows] if texts else None,
        }
        # The data map of every snapshot, as a picture that follows the page's slider.
        images = []
        for key in keys:
            path = store.array_path("datamap_frames", split, key, ".png")
            if os.path.exists(path):
                with open(path, "rb") as fh:
                    src = "data:image/png;base64," + base64.b64encode(fh.read()).decode("ascii")
                images.append({"caption": f"data map of {split}, {key.title} (the film: datamap_{split}.gif)", "src": src,
                               "snapshot": snapshot_entry(_true_key(store, split, key)), "group": f"datamap/{split}"})
        out.append({
            "title": f"Training dynamics: {split}",
            "text": "Confidence (mean probability of the gold label over epochs) against variability (its "
                    "standard deviation), coloured by correctness. Point at a dot to read its row; click to pin "
                    "it (and see it in every layer's layout where it is monitored). The table lists the rows "
                    "with the lowest area under the margin, the likely mislabelled ones.",
            "images": images, "links": [{"text": f"datamap_{split}.gif", "href": f"datamap_{split}.gif"}],
            "datamap": datamap,
        })
    return out


def _true_key(store: Any, split: str, key: Any) -> Any:
    """``key`` with the step of its snapshot (file names may lack it), read from the split's
    embeddings file of that snapshot; ``key`` itself where there is none."""
    try:
        return store.snapshot_key(split, key)
    except (OSError, ValueError, KeyError):
        return key
