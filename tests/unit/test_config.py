"""Configuration: TOML < environment < flags, typed, with errors that name the key."""

import pytest

from al_backend.config import load_config
from al_backend.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "al.toml"
    p.write_text(text)
    return p


def test_precedence_file_env_flags(tmp_path):
    p = write(tmp_path, "[strategy]\nbatch_size = 7\nepsilon = 0.1\n[labelstudio]\nproject = 3\n")
    cfg = load_config(p, env={})
    assert (cfg.strategy.batch_size, cfg.strategy.epsilon, cfg.labelstudio.project) == (7, 0.1, 3)
    cfg = load_config(p, env={"AL_STRATEGY_BATCH_SIZE": "9"})
    assert cfg.strategy.batch_size == 9 and cfg.strategy.epsilon == 0.1
    cfg = load_config(
        p, env={"AL_STRATEGY_BATCH_SIZE": "9"}, overrides={"strategy.batch_size": 11, "strategy.epsilon": None}
    )
    assert cfg.strategy.batch_size == 11 and cfg.strategy.epsilon == 0.1


def test_tool_environment_names(tmp_path):
    cfg = load_config(
        None,
        env={
            "LABEL_STUDIO_URL": "http://ls:8080",
            "LABEL_STUDIO_API_KEY": "secret-token",
            "ARGILLA_API_KEY": "argilla.key",
        },
    )
    assert cfg.labelstudio.url == "http://ls:8080"
    assert cfg.labelstudio.api_key == "secret-token"
    redacted = cfg.to_dict()
    assert redacted["labelstudio"]["api_key"] == "***" and redacted["argilla"]["api_key"] == "***"
    assert "secret-token" not in repr(redacted)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("[strategy]\nbatchsize = 3\n", "unknown key 'batchsize' in [strategy]"),
        ("[strategyy]\nbatch_size = 3\n", "unknown section [strategyy]"),
        ("[strategy]\nbatch_size = 'many'\n", "[strategy] batch_size: expected int"),
        ("[strategy]\nbatch_size = 0\n", "batch_size must be >= 1"),
        ("[strategy]\nepsilon = 1.5\n", "epsilon must be in [0, 1]"),
        ("[strategy\n", "not valid TOML"),
        ("batch_size = 3\n", "must be a [section] table"),
    ],
)
def test_bad_config_names_the_problem(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_config(p, env={})
    assert needle in str(e.value)


def test_bad_env_value_names_the_variable():
    with pytest.raises(ConfigError, match="AL_STRATEGY_EPSILON"):
        load_config(None, env={"AL_STRATEGY_EPSILON": "lots"})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", env={})
