"""al-backend: active learning for the labeling tools teams already use.

The Python API (importing it loads neither torch nor sentence-transformers):

    al_backend.select(embeddings, labels, batch_size, strategy="default", random_state=None) -> row indices
    al_backend.ActiveLearner(embeddings, strategy="default", head=None, stopping="default", random_state=None)

See al_backend/api.py and the README's "Python API" section.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["select", "ActiveLearner", "__version__"]


def __getattr__(name: str) -> Any:
    # lazy: `import al_backend` stays cheap, and the CLI does not pay for the API's imports
    if name in ("select", "ActiveLearner"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'al_backend' has no attribute {name!r}")
