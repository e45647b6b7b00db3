"""Argilla connector logic that needs no server: majority vote, agent names, configuration errors."""

from __future__ import annotations

import itertools

import pytest

from al_backend.config import load_config
from al_backend.errors import ConfigError
from connectors import make_connector
from connectors.argilla import ArgillaConnector, clean_agent, majority


def test_majority_takes_the_most_frequent_label():
    assert majority(["a", "b", "b"]) == ("b", False)
    assert majority(["c"]) == ("c", False)
    assert majority(["x", "y", "x", "z", "x", "y"]) == ("x", False)


def test_majority_tie_goes_to_the_question_order_whatever_the_response_order():
    order = {"sport": 0, "business": 1, "tech": 2}
    for perm in itertools.permutations(["tech", "business", "tech", "business"]):
        assert majority(list(perm), order) == ("business", True)
    for perm in itertools.permutations(["tech", "sport"]):
        assert majority(list(perm), order) == ("sport", True)
    # labels outside the question's list come after the listed ones, then alphabetically
    assert majority(["zeta", "alpha"], order) == ("alpha", True)
    assert majority(["zeta", "tech"], order) == ("tech", True)


@pytest.mark.parametrize(
    "version, agent",
    [
        ("al-3f2a9c01d4e5", "al-3f2a9c01d4e5"),
        ("model v2 (calibrated)", "model v2 -calibrated-"),
        ("al/exp:1.2_b", "al/exp:1.2_b"),
        ("", "al-backend"),
        ("x" * 300, "x" * 200),
    ],
)
def test_clean_agent_fits_argillas_agent_pattern(version, agent):
    import re

    out = clean_agent(version)
    assert out == agent
    # the server's own pattern (argilla_server.api.schemas.v1.suggestions.AGENT_REGEX)
    assert re.match(r"^[a-zA-Z0-9-_:\.\/\s]*[a-zA-Z0-9][a-zA-Z0-9-_:\.\/\s]*$", out) and len(out) <= 200


def test_missing_connection_settings_are_config_errors_naming_the_variable():
    with pytest.raises(ConfigError, match="ARGILLA_API_KEY"):
        ArgillaConnector("http://localhost:6900", "", "news", "team")
    with pytest.raises(ConfigError, match="ARGILLA_API_URL"):
        ArgillaConnector("", "key", "news", "team")
    with pytest.raises(ConfigError, match="--dataset"):
        ArgillaConnector("http://localhost:6900", "key", "", "team")


def test_from_config_reads_the_tools_own_environment_names_and_overrides():
    cfg = load_config(
        None,
        env={"ARGILLA_API_URL": "http://argilla:6900/", "ARGILLA_API_KEY": "s3cret-key"},
        overrides={"argilla.dataset": "news", "argilla.workspace": "team", "argilla.question": "topic"},
    )
    c = make_connector("argilla", cfg)
    assert isinstance(c, ArgillaConnector)
    assert (c.api_url, c.dataset_name, c.workspace_name, c.question_name) == (
        "http://argilla:6900",
        "news",
        "team",
        "topic",
    )
    assert c.text_field_name is None and c.vector_field_name is None  # inferred later / off
    # the key is used, never shown
    assert "s3cret-key" not in c.describe() and "s3cret-key" not in repr(c)
    assert c.describe() == "argilla dataset 'news' in workspace 'team' at http://argilla:6900"
    c2 = ArgillaConnector.from_config(cfg, dataset="other", vector_field="emb")
    assert c2.dataset_name == "other" and c2.vector_field_name == "emb"


def test_which_sdk_failures_are_retried():
    import httpx
    from argilla._exceptions import ArgillaAPIError, UnauthorizedError, UnprocessableEntityError

    from connectors.argilla import _transient

    request = httpx.Request("GET", "http://argilla:6900/api/v1/me")
    assert _transient(httpx.ConnectError("refused", request=request)) == (True, True)  # never reached the server
    assert _transient(httpx.ReadTimeout("slow", request=request)) == (True, False)  # may have been applied
    assert _transient(ArgillaAPIError("Server error", status_code=503)) == (True, False)
    assert _transient(ArgillaAPIError("Too many", status_code=429)) == (True, False)
    assert _transient(UnauthorizedError("no", status_code=401)) == (False, False)
    assert _transient(UnprocessableEntityError("bad", status_code=422)) == (False, False)
    assert _transient(ValueError("a bug")) == (False, False)


def test_a_suggestion_is_rewritten_only_when_it_changed():
    from connectors.argilla import _same_suggestion

    assert _same_suggestion(("tech", 0.81234, "al-1"), ("tech", 0.81234, "al-1"))
    assert not _same_suggestion(("tech", 0.81234, "al-1"), None)
    assert not _same_suggestion(("tech", 0.81234, "al-2"), ("tech", 0.81234, "al-1"))
    assert not _same_suggestion(("tech", 0.81234, "al-1"), ("sport", 0.81234, "al-1"))
    assert not _same_suggestion(("tech", 0.9, "al-1"), ("tech", 0.81234, "al-1"))
    assert not _same_suggestion(("tech", 0.9, "al-1"), ("tech", None, "al-1"))
