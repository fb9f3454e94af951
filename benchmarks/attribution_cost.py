"""What the attribution measurements of one snapshot cost, against Captum called per layer.

On the packaged all-MiniLM-L6-v2 (6 layers, hidden 384) with a fresh 2-class head and
real HatEval tweets (TweetEval layout: the first ``--examples`` validation tweets, half of
each label where possible, tokenized by the packaged tokenizer, up to 128 tokens):

1. Time per snapshot: for every example, :func:`layerwatch.measures.attribution.ig.attribute`
   (token attributions and the conductance of the embedding output and of the 6 layers,
   ``--steps`` intervals, ``--batch-size`` grid points per pass) and
   :func:`~layerwatch.measures.attribution.norms.norm_maps`; against Captum's
   ``LayerConductance`` called once per layer (7 calls) plus ``LayerIntegratedGradients``
   on the word embeddings, with the same grid, baseline and internal batch size. The two
   agree to 1e-4 (printed). The variants alternate ``--repeats`` times, each run in a fresh
   process; the fastest run of each is compared. Targets: at most 10 s per snapshot, and
   at least 3x faster than Captum.
2. Memory: the peak RSS growth of the same work (``/proc/self/statm`` sampled about every
   millisecond; torch's allocator is invisible to tracemalloc), and of one 128-token
   example at the default batch size. Each variant runs in a fresh process after the
   weights were made resident. Target: one 128-token example within 400 MiB.

Nothing is asserted: figures, ratios, targets and PASS/FAIL are printed, with the load
average (timings taken while other work runs are inflated).

Usage::

    python benchmarks/attribution_cost.py
    python benchmarks/attribution_cost.py --examples 4 --steps 16
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402

SNAPSHOT_SECONDS = 10.0
VS_CAPTUM = 3.0
LONG_EXAMPLE_MIB = 400.0
MAX_TOKENS = 128


def _examples(data_dir: str, n: int) -> list[str]:
    texts, labels = common.read_split(data_dir, "validation")
    chosen: list[int] = []
    for label in sorted(set(labels.tolist())):  # half of each label, in file order
        chosen += [i for i, y in enumerate(labels) if y == label][: (n + 1) // 2]
    chosen = sorted(chosen)[:n] if len(chosen) >= n else list(range(n))
    return [texts[i] for i in chosen]


def _setup():
    import torch

    path = common.model_path()
    tok = common.load_tokenizer(path)
    model = common.load_classifier(path)
    with torch.no_grad():  # weights page in lazily from the file: make them resident first
        for p in model.parameters():
            p.sum()
    return tok, model


def _encode(tok, text: str) -> dict:
    return dict(tok([text], truncation=True, max_length=MAX_TOKENS, return_tensors="pt"))


def _run(kind: str, texts: list[str], steps: int, batch_size: int) -> dict:
    """One variant over all examples, in this (fresh) process."""
    import numpy as np
    import torch

    from layerwatch.measures.attribution.ig import CAPTUM_CONDUCTANCE_METHOD, CAPTUM_IG_METHOD, attribute, baseline_ids
    from layerwatch.measures.attribution.layers import find_layers
    from layerwatch.measures.attribution.norms import norm_maps

    tok, model = _setup()
    encoded = [_encode(tok, t) for t in texts]
    h = find_layers(model)
    warm = encoded[0]
    attribute(model, warm["input_ids"], warm["attention_mask"], target=0, steps=2, special_ids=tok.all_special_ids)
    results = []
    with common.quiet_warnings(), common.PeakRSS() as mem, common.Timer() as t:
        for enc in encoded:
            ids, mask, types = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
            base = baseline_ids(ids, tok.all_special_ids, tok.pad_token_id)
            if kind == "layerwatch":
                r = attribute(model, ids, mask, types, target=1, steps=steps, batch_size=batch_size, baseline=base)
                norm_maps(model, ids, mask, types)
                results.append(np.vstack([r.token_attributions, r.conductance]))
            else:
                from captum.attr import LayerConductance, LayerIntegratedGradients

                def on_ids(i, m, ty):
                    return model(input_ids=i, attention_mask=m, token_type_ids=ty).logits

                def on_embeddings(e, m, ty):
                    return model(inputs_embeds=e, attention_mask=m, token_type_ids=ty).logits

                rows = [LayerIntegratedGradients(on_ids, h.word_embeddings).attribute(
                    ids, base, target=1, additional_forward_args=(mask, types), n_steps=steps,
                    method=CAPTUM_IG_METHOD, internal_batch_size=batch_size).sum(-1)[0].detach()]
                with torch.no_grad():
                    ex, eb = h.word_embeddings(ids), h.word_embeddings(base)
                for layer in [h.embeddings, *h.layers]:
                    c = LayerConductance(on_embeddings, layer).attribute(
                        ex, eb, target=1, additional_forward_args=(mask, types), n_steps=steps,
                        method=CAPTUM_CONDUCTANCE_METHOD, internal_batch_size=batch_size)
                    rows.append((c[0] if isinstance(c, tuple) else c).sum(-1)[0].detach())
                results.append(torch.stack(rows).double().numpy())
    return {"seconds": t.seconds, "growth": mem.growth, "results": results,
            "tokens": [int(e["input_ids"].shape[1]) for e in encoded]}


def _long_example(steps: int, batch_size: int) -> dict:
    """Peak RSS growth of one 128-token example (fresh process)."""
    from layerwatch.measures.attribution.ig import attribute

    tok, model = _setup()
    enc = _encode(tok, " ".join(["word"] * 400))
    warm = _encode(tok, "warm up")
    attribute(model, warm["input_ids"], warm["attention_mask"], target=0, steps=2, special_ids=tok.all_special_ids)
    with common.PeakRSS() as mem, common.Timer() as t:
        attribute(model, enc["input_ids"], enc["attention_mask"], enc["token_type_ids"], target=1, steps=steps,
                  batch_size=batch_size, special_ids=tok.all_special_ids)
    return {"growth": mem.growth, "seconds": t.seconds, "tokens": int(enc["input_ids"].shape[1])}


def main(argv=None) -> None:
    import inspect

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=common.DEFAULT_DATA, help="folder with the TweetEval 'hate' files")
    parser.add_argument("--examples", type=int, default=8)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=None, help="grid points per pass (attribute's default)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each variant")
    args = parser.parse_args(argv)

    for kind in ("text", "labels"):
        if not os.path.exists(os.path.join(args.data, f"val_{kind}.txt")):
            common.skip(f"{os.path.join(args.data, f'val_{kind}.txt')} is missing; pass --data FOLDER with the "
                        "TweetEval 'hate' files (val_text.txt, val_labels.txt)")
    common.model_path()
    try:
        import captum  # noqa: F401
    except ImportError:
        common.skip("captum is absent: pip install 'layerwatch[dev]' (or pip install captum)")
    from layerwatch.measures.attribution.ig import attribute

    batch_size = args.batch_size or inspect.signature(attribute).parameters["batch_size"].default
    texts = _examples(args.data, args.examples)
    common.print_load()
    print(f"{len(texts)} validation tweets, {args.steps} steps, batch size {batch_size}, all-MiniLM-L6-v2 "
          f"(torch threads: {os.environ.get('OMP_NUM_THREADS', 'default')})")

    # Interleaved repeats, each in a fresh process; the fastest of each variant is the one
    # least disturbed by other work on the machine.
    runs: dict[str, list[dict]] = {"layerwatch": [], "captum": []}
    for _ in range(args.repeats):
        for kind in runs:
            runs[kind].append(common.in_fresh_process(_run, kind, texts, args.steps, batch_size))
    long = common.in_fresh_process(_long_example, args.steps, batch_size)

    import numpy as np

    ours, theirs = (min(runs[k], key=lambda r: r["seconds"]) for k in ("layerwatch", "captum"))
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours["results"], theirs["results"]))
    ratio = theirs["seconds"] / ours["seconds"]
    print(f"tokens per example: {ours['tokens']}")

    def row(name: str, kind: str) -> list[str]:
        seconds = [r["seconds"] for r in runs[kind]]
        return [name, f"{min(seconds):.2f} s", f"{common.median(seconds):.2f} s",
                common.mib(max(r["growth"] for r in runs[kind]))]

    common.print_table(
        [row("layerwatch: attribute + norm_maps", "layerwatch"),
         row("captum: LayerConductance x 7 + LayerIntegratedGradients", "captum")],
        ["variant (one snapshot)", f"fastest of {args.repeats}", "median", "peak RSS growth (largest)"],
    )
    print(f"largest difference from captum (token attributions and conductance): {diff:.2e} (should be < 1e-4)")
    print(f"time per snapshot: {ours['seconds']:.2f} s, target <= {SNAPSHOT_SECONDS:.0f} s: "
          f"{common.verdict(ours['seconds'] <= SNAPSHOT_SECONDS)}")
    print(f"captum per layer / layerwatch (fastest runs): {ratio:.1f}x, target >= {VS_CAPTUM:.0f}x: "
          f"{common.verdict(ratio >= VS_CAPTUM)}")
    print(f"one {long['tokens']}-token example, batch size {batch_size}: {common.mib(long['growth'])} peak RSS growth "
          f"in {long['seconds']:.2f} s, target <= {LONG_EXAMPLE_MIB:.0f} MiB: "
          f"{common.verdict(long['growth'] <= LONG_EXAMPLE_MIB * 2**20)}")


if __name__ == "__main__":
    main()
