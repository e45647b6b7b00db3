"""Label config parsing, label reduction, token kinds and the prediction payload (no server needed)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from al_backend.errors import ConfigError, InputError
from al_backend.pool import Ranking
from connectors.labelstudio import (
    LabelStudioConnector,
    LegacyTokenAuth,
    PersonalAccessTokenAuth,
    UnsupportedLabelConfig,
    choice_of,
    html_to_text,
    jwt_claims,
    looks_like_jwt,
    make_auth,
    parse_label_config,
)

TEXT = '<View><Text name="t" value="$body"/><Choices name="c" toName="t"{attr}><Choice value="pos"/><Choice value="neg"/><Choice value="neu"/></Choices></View>'


def jwt(claims: dict) -> str:
    def enc(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{enc({'alg': 'HS256', 'typ': 'JWT'})}.{enc(claims)}.c2lnbmF0dXJl"


def test_single_choice_over_text():
    cfg = parse_label_config(TEXT.format(attr=""))
    assert (cfg.from_name, cfg.to_name, cfg.object_type, cfg.data_key) == ("c", "t", "Text", "body")
    assert cfg.labels == ("pos", "neg", "neu") and cfg.multiple is False
    assert cfg.result("neg") == [{"from_name": "c", "to_name": "t", "type": "choices", "value": {"choices": ["neg"]}}]
    assert cfg.result(None) == [] and cfg.result("unknown") == []


def test_multiple_choice_and_hypertext():
    xml = TEXT.format(attr=' choice="multiple"').replace("<Text ", "<HyperText ")
    cfg = parse_label_config(xml)
    assert cfg.multiple and cfg.object_type == "HyperText"
    assert cfg.text_of({"body": "<p>Good &amp; <b>cheap</b></p><script>x()</script>"}) == "Good & cheap"


def test_picks_the_choices_over_text_when_several_exist():
    xml = (
        '<View><Image name="i" value="$img"/><Choices name="ic" toName="i"><Choice value="a"/><Choice value="b"/></Choices>'
        '<Text name="t" value="$text"/><Choices name="tc" toName="t"><Choice value="x"/><Choice value="y"/></Choices></View>'
    )
    assert parse_label_config(xml).from_name == "tc"
    with pytest.raises(UnsupportedLabelConfig, match="looked for <Choices name='ic'>"):
        parse_label_config(xml, from_name="ic")


@pytest.mark.parametrize(
    "xml, why",
    [
        ("", "no labeling config"),
        ("<View><Text", "not valid XML"),
        (
            '<View><Text name="t" value="$t"/><Labels name="l" toName="t"><Label value="PER"/></Labels></View>',
            "found no <Choices>",
        ),
        (
            '<View><Image name="i" value="$i"/><Choices name="c" toName="i"><Choice value="a"/><Choice value="b"/></Choices></View>',
            "over <Image",
        ),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
            "1 choice",
        ),
        (
            '<View><Text name="t" value="$t"/><Choices name="c" toName="t"><Choice value="a"/><Choice value="a"/></Choices></View>',
            "more than once",
        ),
    ],
)
def test_unsupported_configs_say_why(xml, why):
    with pytest.raises(UnsupportedLabelConfig, match=why.replace("(", r"\(")) as e:
        parse_label_config(xml)
    if "XML" not in why and "more than once" not in why:
        assert "al-backend supports one <Choices>" in str(e.value)


def test_choice_of_majority_ties_and_ground_truth():
    labels = ("a", "b", "c")
    assert choice_of([["b"], ["a"], ["b"]], labels) == "b"
    assert choice_of([["c"], ["b"]], labels) == "b"  # tie -> config order
    assert choice_of([["c"], ["b"], ["b"]], labels, [True, False, False]) == "c"  # ground truth wins
    assert choice_of([["a", "c"], ["c"]], labels) == "c"  # multiple choice: most voted choice
    assert choice_of([], labels) is None


def test_token_kinds():
    pat = jwt({"token_type": "refresh", "exp": 9999999999})
    assert looks_like_jwt(pat) and not looks_like_jwt("ci0123456789abcdef") and not looks_like_jwt("a.b.c")
    assert isinstance(make_auth(pat), PersonalAccessTokenAuth)
    assert isinstance(make_auth("abc123"), LegacyTokenAuth)
    assert isinstance(make_auth(f"Bearer {pat}"), PersonalAccessTokenAuth)
    assert make_auth("Token abc").headers(None) == {"Authorization": "Token abc"}
    assert jwt_claims(pat)["exp"] == 9999999999
    assert "abc" not in repr(make_auth("abc")) and pat not in repr(make_auth(pat))


def test_constructor_errors():
    with pytest.raises(ConfigError, match="API key is not set"):
        LabelStudioConnector("http://x", "", 1)
    with pytest.raises(ConfigError, match="project is not set"):
        LabelStudioConnector("http://x", "k", 0)
    with pytest.raises(ConfigError, match="must start with http"):
        LabelStudioConnector("localhost:8080", "k", 1)


def test_from_config_reads_the_labelstudio_section():
    from al_backend.config import load_config

    cfg = load_config(
        env={"LABEL_STUDIO_URL": "http://ls:8080", "LABEL_STUDIO_API_KEY": "k123"}, overrides={"labelstudio.project": 7}
    )
    c = LabelStudioConnector.from_config(cfg)
    assert (c.url, c.project_id, c.auth.kind) == ("http://ls:8080", 7, "legacy token")
    assert LabelStudioConnector.from_config(cfg, project=9).project_id == 9
    assert "k123" not in c.describe()


def test_predictions_payload_scores_are_one_minus_priority():
    c = LabelStudioConnector("http://127.0.0.1:1", "k", 1)
    c._config = parse_label_config(TEXT.format(attr=""))
    n = 4
    r = Ranking(
        ids=["10", "3", "7", "1"],
        priority=Ranking.priorities(n),
        batch_size=2,
        components={},
        predicted=["neg", "pos", None, "neg"],
        confidence=np.full(n, 0.5),
        cluster=np.zeros(n, int),
        round_id=3,
        model_version="al-abc",
        strategy="margin",
    )
    payload = c.predictions_payload(r)
    assert [p["task"] for p in payload] == [10, 3, 7, 1]
    assert [p["score"] for p in payload] == [0.0, 0.25, 0.5, 0.75]  # LS serves the lowest first
    assert payload[2]["result"] == [] and payload[0]["result"][0]["value"]["choices"] == ["neg"]
    assert {p["model_version"] for p in payload} == {"al-abc"}
    r.ids[1] = "not-a-task"
    with pytest.raises(InputError, match="not a Label Studio task id"):
        c.predictions_payload(r)


def test_html_to_text():
    assert html_to_text("<div>a<br/>b</div><style>p{}</style>&lt;ok&gt;") == "a b <ok>"
