"""The original notebook's pipeline, reproduced faithfully as the benchmarks' baseline.

What the seed did for each split after each epoch:

1. tokenize every row padded to a fixed length (64);
2. run the model batch by batch under ``torch.no_grad()`` with ``output_hidden_states=True``
   and, per batch, ``torch.cat`` the stacked ``hidden_states[1:]`` (the transformer layers,
   without the embedding output) onto one growing tensor that holds every token of every
   row of every layer: (layers, rows, tokens, hidden);
3. for each layer, mean-pool by sum-then-divide over the attention mask,
   ``(layer_embeds * mask).sum(1) / mask.sum(1)``;
4. an unseeded ``sklearn.manifold.TSNE(n_components=2)`` per layer (on all hidden dims);
5. a seaborn ``scatterplot`` per layer into a new pyplot figure grid (4 panels of 6 x 6
   inches a row), saved as one PNG per epoch;
6. the PNGs of the epochs so far stitched into a GIF with imageio.

Run on its own it times one or more seed "epochs" on the real data::

    python benchmarks/seed_pipeline.py --rows 1000 --epochs 2
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

import numpy as np  # noqa: E402

STAGES = ("capture", "pool", "tsne", "plot", "gif")


def seed_tokenize(tokenizer, texts, max_length: int = common.MAX_LENGTH):
    """Every row padded to ``max_length`` tokens, as tensors."""
    enc = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length", return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def seed_capture(model, input_ids, attention_mask, batch_size: int = common.BATCH_SIZE):
    """Every token's hidden state of every transformer layer: (layers, rows, tokens, hidden)."""
    import torch

    model.eval()
    hidden_states_all = None
    with torch.no_grad():
        for start in range(0, len(input_ids), batch_size):
            out = model(
                input_ids=input_ids[start : start + batch_size],
                attention_mask=attention_mask[start : start + batch_size],
                output_hidden_states=True,
            )
            batch_hidden = torch.stack(out.hidden_states[1:])  # drop the embedding output
            if hidden_states_all is None:
                hidden_states_all = batch_hidden
            else:
                hidden_states_all = torch.cat([hidden_states_all, batch_hidden], dim=1)
    return hidden_states_all


def seed_pool(hidden_states_all, attention_mask):
    """Per layer, sum-then-divide mean pooling over the attention mask: list of (rows, hidden)."""
    mask = attention_mask.unsqueeze(-1)
    pooled = []
    for layer in range(hidden_states_all.shape[0]):
        layer_embeds = hidden_states_all[layer]
        pooled.append(((layer_embeds * mask).sum(1) / mask.sum(1)).numpy())
    return pooled


def seed_tsne(pooled):
    """An unseeded 2-D t-SNE of every layer, with scikit-learn's defaults."""
    from sklearn.manifold import TSNE

    return [TSNE(n_components=2).fit_transform(x) for x in pooled]


def seed_plot(layouts, labels, path: str, title: str = "") -> None:
    """One seaborn scatter panel per layer in a new pyplot figure, saved as a PNG."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    n = len(layouts)
    rows = math.ceil(n / 4)
    fig = plt.figure(figsize=(24, rows * 6))
    axes = [fig.add_subplot(rows, 4, i + 1) for i in range(n)]
    for i, layout in enumerate(layouts):
        df = pd.DataFrame({"x": layout[:, 0], "y": layout[:, 1], "label": labels})
        sns.scatterplot(data=df, x="x", y="y", hue="label", ax=axes[i])
        axes[i].set_title(f"layer {i + 1}")
    fig.suptitle(title)
    plt.savefig(path, format="png", pad_inches=0)
    plt.close(fig)


def seed_gif(paths, out_path: str) -> None:
    import imageio.v2 as imageio

    imageio.mimsave(out_path, [imageio.imread(p) for p in paths], duration=1000, loop=0)


def seed_epoch(model, tokenizer, splits: dict, out_dir: str, epoch: int, timings: dict | None = None) -> dict:
    """One seed snapshot of every split: ``splits`` is ``{name: (texts, labels)}``.

    Returns (and adds into ``timings``) the seconds spent in each stage.
    """
    timings = {s: 0.0 for s in STAGES} if timings is None else timings
    for name, (texts, labels) in splits.items():
        folder = os.path.join(out_dir, name)
        os.makedirs(folder, exist_ok=True)
        t0 = time.perf_counter()
        input_ids, attention_mask = seed_tokenize(tokenizer, texts)
        hidden = seed_capture(model, input_ids, attention_mask)
        t1 = time.perf_counter()
        pooled = seed_pool(hidden, attention_mask)
        del hidden
        t2 = time.perf_counter()
        layouts = seed_tsne(pooled)
        t3 = time.perf_counter()
        seed_plot(layouts, np.asarray(labels), os.path.join(folder, f"{epoch}.png"), f"{name} epoch {epoch}")
        t4 = time.perf_counter()
        frames = [os.path.join(folder, f"{e}.png") for e in range(epoch + 1) if os.path.exists(os.path.join(folder, f"{e}.png"))]
        seed_gif(frames, os.path.join(out_dir, f"{name}.gif"))
        t5 = time.perf_counter()
        for stage, dt in zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            timings[stage] += dt
    return timings


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="TweetEval 'hate' folder (default: %(default)s)")
    parser.add_argument("--rows", type=int, default=1000, help="rows of train and of validation (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="seed snapshots to take (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="300 rows, 1 epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.epochs = 300, 1
    common.require_data(args.data)
    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path)
    splits = {}
    for split in ("train", "validation"):
        texts, labels = common.read_split(args.data, split)
        splits[split] = (texts[: args.rows], labels[: args.rows])
    common.print_load()
    with tempfile.TemporaryDirectory(prefix="lw-seed-") as out:
        rows = []
        for epoch in range(args.epochs):
            t = seed_epoch(model, tok, splits, out, epoch)
            rows.append([epoch] + [f"{t[s]:.1f}" for s in STAGES] + [f"{sum(t.values()):.1f}"])
        print(f"seed pipeline, train + validation, {args.rows} rows each (seconds)")
        common.print_table(rows, ["epoch", *STAGES, "total"])


if __name__ == "__main__":
    main()
