"""The demo's corpus: short news-like sentences about four topics, written from templates.

The corpus is built so that the film has something to show. Every sentence is labelled
with one of four topics, but the topic words alone do not give the label away:

- many sentences mention two topics, and only the sentence's structure says which one
  it is about ("Forget that the storm ..., what matters is that the striker ...");
- words such as *record*, *pressure*, *heat*, *stock* or *rally* belong to several topics;
- a few percent of the labels are flipped, as in any hand-labelled data set.

A mean of word vectors (the embedding layer, layer 0) therefore mixes the classes, the
pretrained upper layers group sentences by what they mention, and after fine-tuning the
upper layers group them by what they are about.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import DatasetDict

TOPICS = ("sport", "cooking", "finance", "weather")
"""The class names of :func:`make_corpus`, in label order."""

# Who or what a clause is about, per topic. Words shared between topics (record,
# pressure, heat, stock, season, rally, crash, forecast, pitch, batter, plate, ...)
# are spread over all of them on purpose.
_SUBJECTS = {
    "sport": (
        "the striker", "the coach", "the home team", "the goalkeeper", "the referee", "the captain",
        "the visiting side", "the rookie", "the tennis champion", "the marathon runner", "the batter",
        "the relay team", "the pitcher", "the young winger", "the boxing champion", "the cycling team",
    ),
    "cooking": (
        "the chef", "the baker", "the sous-chef", "my grandmother", "the pastry cook", "the line cook",
        "the food critic", "the new bistro", "the recipe", "the kitchen staff", "the pressure cooker",
        "the soup stock", "the cake batter", "the bread dough", "the street food vendor", "the tasting menu",
    ),
    "finance": (
        "the central bank", "the investors", "the hedge fund", "the broker", "the stock market",
        "the bond traders", "the startup", "the pension fund", "the accountant", "the shareholders",
        "the currency", "the tech stock", "the sales team", "the mortgage lender", "the auditors",
        "the insurance firm",
    ),
    "weather": (
        "the forecaster", "the cold front", "the storm", "the meteorologist", "the heat wave", "the fog",
        "the thunderstorm", "the morning frost", "the monsoon", "the jet stream", "the air pressure",
        "the hurricane", "the drizzle", "the sea breeze", "the snowfall", "the spring season",
    ),
}

# What happened, per topic.
_PREDICATES = {
    "sport": (
        "scored twice in the second half", "won the final on penalties", "was sent off after a rough tackle",
        "broke the league record", "lost the match in extra time", "signed a new contract with the club",
        "came back from injury for the derby", "struck out three times at the plate",
        "kept a clean sheet on a muddy pitch", "finished the season top of the table",
        "felt the pressure in the last minutes", "won the cup after a long rally",
        "was traded before the draft", "crashed out in the opening heat",
    ),
    "cooking": (
        "simmered the sauce for an hour", "burned the garlic in the pan", "whisked the eggs into the batter",
        "added too much salt to the soup", "baked bread with a sourdough starter",
        "seasoned the stew with thyme and pepper", "served the fish on a warm plate",
        "left the dough to rise overnight", "reduced the stock to a thick glaze",
        "turned up the heat under the pan", "mixed the dressing in a wooden bowl",
        "set a record for the longest pizza", "roasted the vegetables until golden",
        "let the custard cool before serving",
    ),
    "finance": (
        "raised interest rates again", "sold its shares before the crash", "reported record profits",
        "cut the dividend for the first time", "bought government bonds", "warned about rising inflation",
        "saw its stock rally after the earnings call", "missed the quarterly forecast",
        "felt the pressure of higher borrowing costs", "made a risky pitch to the investors",
        "froze hiring for the rest of the year", "posted strong returns this season",
        "lost money on the currency trade", "cooled the overheated housing market",
    ),
    "weather": (
        "brought heavy rain to the coast", "pushed temperatures to a record high",
        "caused flooding in the valley", "left a thin layer of snow on the roads", "cleared by the afternoon",
        "dropped below freezing overnight", "turned the sky dark over the harbour",
        "made the forecast look wrong again", "kept the heat on for another week",
        "crashed onto the beach in huge waves", "brought a welcome cooling breeze",
        "caused a sharp fall in pressure", "delayed the flights at the airport",
        "soaked the fans at the stadium",
    ),
}

# Openers and tails that carry no topic; they vary the sentences' words and length so
# that a mean of word vectors is not dominated by the topic words.
_OPENERS = (
    "", "", "", "Yesterday, ", "According to the local paper, ", "Once again, ", "In the end, ",
    "Late on Sunday, ", "To nobody's surprise, ", "As expected, ", "Believe it or not, ",
    "Early this morning, ", "For the second time this month, ", "Oddly enough, ",
)
_TAILS = (
    "", "", "", " this week", " on Friday", ", people said", " again", ", the report says",
    " for the first time in years", ", as everyone predicted", " before lunch", " last night",
)

# Sentences about topic ``t`` that also mention topic ``o``. The label follows the
# sentence's structure: which clause the cue words point at, not which topic words it holds.
_TWO_TOPIC = (
    "{O}, but the real story was that {T}.",
    "This is not about how {O}; it is about how {T}.",
    "Forget that {O}: what matters is that {T}.",
    "Although {O}, the headline was that {T}.",
    "{T}, even though {O}.",
    "{T}, and hardly anyone noticed that {O}.",
    "Never mind that {O}; the news is that {T}.",
    "{T}. Yes, {O}, but that is beside the point.",
    "The piece barely mentions that {O}; it is about how {T}.",
    "Not a word on how {O}: the report covers how {T}.",
)
_ONE_TOPIC = (
    "{T}.",
    "{T}, and the fans of the topic were pleased.",
    "It turns out that {T}.",
    "Nobody expected that {T}.",
    "The report says that {T}.",
)


def _clause(rng: random.Random, topic: str) -> str:
    return f"{rng.choice(_SUBJECTS[topic])} {rng.choice(_PREDICATES[topic])}"


def _sentence(rng: random.Random, topic: str, two_topic_share: float) -> str:
    if rng.random() < two_topic_share:
        other = rng.choice([t for t in TOPICS if t != topic])
        template = rng.choice(_TWO_TOPIC)
        text = template.format(T=_clause(rng, topic), O=_clause(rng, other))
    else:
        text = rng.choice(_ONE_TOPIC).format(T=_clause(rng, topic) + rng.choice(_TAILS))
    opener = rng.choice(_OPENERS)
    if opener:
        text = opener + text[0].lower() + text[1:]
    return text[0].upper() + text[1:]


def _split_rows(n: int, rng: random.Random, noise: float, two_topic_share: float) -> tuple[list[str], list[int]]:
    k = len(TOPICS)
    labels = [i % k for i in range(n)]
    rng.shuffle(labels)
    texts = [_sentence(rng, TOPICS[y], two_topic_share) for y in labels]
    # Flip an equal number of labels in every class, each to the next class: the
    # classes stay exactly as balanced as they were.
    per_class = int(round(noise * n / k))
    for c in range(k):
        rows = [i for i, y in enumerate(labels) if y == c]
        for i in rng.sample(rows, min(per_class, len(rows))):
            labels[i] = -1 - ((c + 1) % k)  # mark, so a row is flipped at most once
    labels = [-1 - y if y < 0 else y for y in labels]
    return texts, labels


def make_corpus(
    n_rows: int = 600,
    seed: int = 0,
    noise: float = 0.03,
    two_topic_share: float = 0.7,
    validation_rows: int | None = None,
) -> "DatasetDict":
    """A small labelled topic corpus, generated from templates (no download).

    Args:
        n_rows: Rows of the ``train`` split.
        seed: Seed of every random choice; the same seed gives the same corpus.
        noise: Share of labels flipped to another topic (the same number in every class).
        two_topic_share: Share of sentences that mention a second, distracting topic.
        validation_rows: Rows of the ``validation`` split (default: half of ``n_rows``).

    Returns:
        A ``datasets.DatasetDict`` with ``train`` and ``validation`` splits, each with a
        ``text`` column and a ``label`` column of ``ClassLabel(names=TOPICS)``; the classes
        are balanced (to within one row).

    Raises:
        ValueError: If a size or share is out of range.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    if validation_rows is None:
        validation_rows = max(n_rows // 2, 2 * len(TOPICS))
    for name, value in (("n_rows", n_rows), ("validation_rows", validation_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2 * len(TOPICS):
            raise ValueError(
                f"{name}={value!r} is too small; pass an integer of at least {2 * len(TOPICS)} "
                f"(two rows for each of the {len(TOPICS)} topics)"
            )
    if not (isinstance(seed, int) and not isinstance(seed, bool)):
        raise ValueError(f"seed={seed!r} must be an integer")
    for name, value, top in (("noise", noise, 0.5), ("two_topic_share", two_topic_share, 1.0)):
        if not (isinstance(value, (int, float)) and 0 <= value <= top):
            raise ValueError(f"{name}={value!r} must be a number between 0 and {top}")

    features = Features({"text": Value("string"), "label": ClassLabel(names=list(TOPICS))})
    splits = {}
    # One generator per split, seeded apart, so that the validation rows do not change
    # when n_rows does.
    for offset, (split, n) in enumerate((("train", n_rows), ("validation", validation_rows))):
        rng = random.Random(f"layerwatch-demo-{seed}-{offset}")
        texts, labels = _split_rows(n, rng, noise, two_topic_share)
        splits[split] = Dataset.from_dict({"text": texts, "label": labels}, features=features)
    return DatasetDict(splits)
