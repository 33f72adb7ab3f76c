"""Text into token ids: the token patterns, the training-split vocabulary, ``Tokenizer`` (the
artifact's tokenizer.json + vocab.json, used by preparation and serving alike) and language-model
splits. Imports only the standard library, numpy and the numpy-only ``artifact`` and ``errors``."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from datamodules.artifact import Prepared, Split
from datamodules.errors import DataError

# Lower-cased words (with contractions) and the punctuation that carries sentiment: the
# built-in and the user's labelled text.
TOKEN_PATTERN = r"[a-z0-9]+(?:'[a-z]+)?|[!?]"
# Word-level language models: lower-cased words and every punctuation mark as its own token.
WORD_PATTERN = r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]"


def build_vocab(token_lists: list[list[str]], min_freq: int, max_vocab: int) -> list[str]:
    """Vocabulary from the training split: ``<pad>`` is 0, ``<unk>`` is 1."""
    counts = Counter(tok for toks in token_lists for tok in toks)
    kept = sorted((t for t, c in counts.items() if c >= min_freq), key=lambda t: (-counts[t], t))
    return ["<pad>", "<unk>", *kept[: max_vocab - 2]]


def encode(tokens: list[str], index: dict[str, int], max_len: int | None = None) -> np.ndarray:
    """Token ids (unknown tokens are 1), cut to ``max_len``; nothing at all becomes ``[1]``."""
    ids = [index.get(t, 1) for t in (tokens if max_len is None else tokens[:max_len])] or [1]
    return np.array(ids, dtype=np.int64)


class Tokenizer:
    """Text to token ids exactly as the artifact was prepared, from its ``tokenizer.json``
    ({"level": "char"} or {"pattern", "lowercase"}, plus "max_len") and ``vocab.json``.

    Characters are kept as they are and never cut; words are lower-cased (unless
    ``lowercase`` is false), found with ``pattern`` and cut to ``max_len``."""

    def __init__(self, spec: dict[str, Any], vocab: Sequence[str] = ()):
        self.spec = spec
        self.chars = spec.get("level") == "char"
        self.lowercase = spec.get("lowercase", True)
        self.max_len = spec["max_len"]
        self.pattern = None if self.chars else re.compile(spec["pattern"])
        self.index = {t: i for i, t in enumerate(vocab)}

    def tokens(self, text: str) -> list[str]:
        if self.chars:
            return list(text)
        return self.pattern.findall(text.lower() if self.lowercase else text)

    def ids(self, tokens: list[str]) -> np.ndarray:
        return encode(tokens, self.index, None if self.chars else self.max_len)

    def __call__(self, text: str) -> np.ndarray:
        """(T,) int64 ids of one text: what the model reads."""
        return self.ids(self.tokens(str(text)))


def language_model_splits(text: str, p: dict[str, Any], where: str,
                          tokenizer: dict[str, Any]) -> Prepared:
    """Next-token prediction on contiguous train/val/test stretches of ``text`` tokenized by
    the ``tokenizer`` spec, cut into windows of ``seq_len`` whose targets are the same shifted
    by one. The vocabulary comes from the training stretch only; 0 is padding, 1 stands for
    tokens unseen in training."""
    tokens = Tokenizer(tokenizer).tokens(text)
    n = len(tokens)
    train_end = int(n * (1 - p["val_fraction"] - p["test_fraction"]))
    val_end = int(n * (1 - p["test_fraction"]))
    length = p["seq_len"]
    if min(val_end - train_end, n - val_end) < length + 2:
        raise DataError(f"{where}: {n} tokens leave fewer than seq_len={length} + 2 for the "
                        "validation or test stretch; use a longer text or a smaller --seq-len")
    vocab = build_vocab([tokens[:train_end]], p.get("min_freq", 1), p.get("max_vocab", 1 << 30))
    ids = encode(tokens, {c: i for i, c in enumerate(vocab)})  # the whole text: never cut

    def windows(start: int, stop: int) -> Split:
        starts = np.arange(start, stop - length - 1, length)
        x = [ids[i: i + length] for i in starts]
        y = np.stack([ids[i + 1: i + length + 1] for i in starts])
        return Split(x, y, starts)

    splits = {"train": windows(0, train_end), "val": windows(train_end, val_end),
              "test": windows(val_end, n)}
    meta = {"num_classes": len(vocab), "input_dim": 0, "vocab_size": len(vocab)}
    return Prepared(splits, meta, {"vocab": vocab, "tokenizer": tokenizer})
