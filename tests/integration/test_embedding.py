"""The real MiniLM model through the cache: unchanged text is never embedded twice."""

import numpy as np
import pytest

from al_backend.embedding import Embedder
from al_backend.store import Store

pytestmark = pytest.mark.slow


def test_cache_counts_encoder_calls(tmp_path):
    texts = [
        "The striker scored twice.",
        "Shares fell sharply today.",
        "The striker scored twice.",
        "A new phone chip.",
    ]
    with Store.open(tmp_path / "s.sqlite") as store:
        e1 = Embedder("all-MiniLM-L6-v2", store, progress=False)
        X1 = e1.embed(texts)
        assert X1.shape == (4, 384) and X1.dtype == np.float32
        assert e1.texts_encoded == 3  # the duplicate text is embedded once
        np.testing.assert_allclose(np.linalg.norm(X1, axis=1), 1.0, atol=1e-5)
        assert np.array_equal(X1[0], X1[2])
        # semantically close pairs are closer than unrelated ones: the real model, not noise
        assert X1[0] @ X1[1] < 0.5

    with Store.open(tmp_path / "s.sqlite") as store:  # a new process: nothing recomputed
        e2 = Embedder("all-MiniLM-L6-v2", store, progress=False)
        X2 = e2.embed(texts)
        assert e2.encoder_calls == 0 and e2.texts_encoded == 0
        assert X2.tobytes() == X1.tobytes()
        X3 = e2.embed(texts[:2] + ["Something entirely new."])
        assert e2.texts_encoded == 1
        assert X3[:2].tobytes() == X1[:2].tobytes()
        # another model id never reads this model's vectors
        e3 = Embedder("all-MiniLM-L6-v2", store, normalize=False, progress=False)
        e3.embed(texts[:1])
        assert e3.texts_encoded == 1


def test_unknown_model_gives_a_clear_error(tmp_path):
    from al_backend.errors import ConfigError

    e = Embedder(str(tmp_path / "no-such-model"), None, progress=False)
    with pytest.raises(ConfigError, match="could not load embedding model"):
        e.embed(["x"])
