"""One typed configuration, built from a TOML file, then the environment, then CLI flags (in that order).

    [embedding]   model, batch_size, device, normalize
    [head]        class_weight, calibrate, committee_size, smoothing, smoothing_k
    [strategy]    name, batch_size, epsilon, outlier_quantile, m_factor, alpha, beta, seed
    [seeding]     n_clusters, min_labels_per_class, min_cluster_coverage, max_labels
    [stopping]    criterion, budget, stop_set_size
    [state]       path
    [file]        input, output, labels, text_field, id_field, label_field, vectors, vectors_field, labels_fixed
    [labelstudio] url, api_key, project, text_key, from_name, prune_old_versions, timeout, retries
    [argilla]     api_url, api_key, dataset, workspace, text_field, question, vector_field, timeout, retries
    [server]      host, port, basic_auth_user, basic_auth_pass, api_token, max_body_bytes

Environment: AL_<SECTION>_<KEY> (e.g. AL_STRATEGY_BATCH_SIZE=20), plus the tools' own names
LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY, ARGILLA_API_URL, ARGILLA_API_KEY, and AL_BASIC_AUTH_USER,
AL_BASIC_AUTH_PASS, AL_API_TOKEN for the server.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import ConfigError
from .redact import redact as redact_text
from .redact import register_secret, register_url


@dataclass
class EmbeddingConfig:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64
    device: str = "auto"  # auto = CUDA when present, else CPU
    normalize: bool = True


@dataclass
class HeadConfig:
    class_weight: str = "balanced"  # "balanced" or "none"
    calibrate: bool = True
    committee_size: int = 5
    # graph smoothing of the features the head sees: x' = normalise((1 - a) x + a * mean of x's k nearest pool
    # neighbours); 0 = the raw embeddings. Measured on 4 real text sets (docs/BENCHMARKS.md): a = 0.5, k = 10.
    smoothing: float = 0.5
    smoothing_k: int = 10


@dataclass
class StrategyConfig:
    name: str = "default"
    batch_size: int = 20
    epsilon: float = 0.0
    outlier_quantile: float = 0.0  # 0 = keep outliers
    m_factor: int = 10
    alpha: float = 0.5
    beta: float = 1.0
    seed: int = 0


@dataclass
class SeedingConfig:
    n_clusters: int = 0  # 0 = chosen from the pool size
    min_labels_per_class: int = 2
    min_cluster_coverage: float = 0.8  # fraction of clusters that need at least one label
    max_labels: int = 0  # seeding ends at this many labels whatever the coverage (0 = 5 x clusters)


@dataclass
class StoppingConfig:
    criterion: str = "default"  # see `al-backend strategies --stopping` / al_backend.stopping
    budget: int = 0  # labels you can afford; 0 = no budget
    stop_set_size: int = 2000  # items whose predictions successive models are compared on


@dataclass
class StateConfig:
    path: str = ".al-state/project.sqlite"


@dataclass
class FileConfig:
    input: str = ""
    output: str = ""
    labels: str = ""
    text_field: str = "text"
    id_field: str = "id"
    label_field: str = "label"
    vectors: str = ""  # a .npy aligned with the input rows
    vectors_field: str = ""  # or a column holding each row's vector
    labels_fixed: list[str] = field(default_factory=list)  # when set, other labels are errors


@dataclass
class LabelStudioConfig:
    url: str = "http://127.0.0.1:8080"
    api_key: str = ""
    project: int = 0
    text_key: str = ""  # the task data key holding the text; inferred from the label config when empty
    from_name: str = ""  # the Choices control to use when the config has several
    prune_old_versions: bool = True  # delete al-backend's older prediction versions once a new one is live
    timeout: float = 120.0  # seconds per HTTP call
    retries: int = 3  # retries of connection errors, timeouts and 5xx (exponential backoff with jitter)


@dataclass
class ArgillaConfig:
    api_url: str = "http://127.0.0.1:6900"
    api_key: str = ""
    dataset: str = ""
    workspace: str = ""
    text_field: str = ""
    question: str = ""
    vector_field: str = ""
    timeout: float = 120.0  # seconds per HTTP call
    retries: int = 3  # retries of connection errors, timeouts and 5xx (exponential backoff with jitter)


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 9090
    basic_auth_user: str = ""
    basic_auth_pass: str = ""
    api_token: str = ""
    max_body_bytes: int = 16 * 1024 * 1024  # larger /predict, /webhook, /setup bodies are answered 413


@dataclass
class Config:
    embedding: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    seeding: SeedingConfig = field(default_factory=SeedingConfig)
    stopping: StoppingConfig = field(default_factory=StoppingConfig)
    state: StateConfig = field(default_factory=StateConfig)
    file: FileConfig = field(default_factory=FileConfig)
    labelstudio: LabelStudioConfig = field(default_factory=LabelStudioConfig)
    argilla: ArgillaConfig = field(default_factory=ArgillaConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain dict of the configuration; secrets replaced by '***' unless redact is False."""
        out = dataclasses.asdict(self)
        if redact:
            for section, key in SECRETS:
                if out[section][key]:
                    out[section][key] = "***"
            for section in ("labelstudio", "argilla"):
                for key in URL_KEYS & set(out[section]):
                    out[section][key] = redact_text(out[section][key])
        return out


SECRETS = [
    ("labelstudio", "api_key"),
    ("argilla", "api_key"),
    ("server", "basic_auth_pass"),
    ("server", "api_token"),
]

URL_KEYS = {"url", "api_url"}  # their user info (http://user:password@host) is a secret too

# Environment names the tools themselves use, mapped onto config keys.
ENV_ALIASES = {
    "LABEL_STUDIO_URL": ("labelstudio", "url"),
    "LABEL_STUDIO_API_KEY": ("labelstudio", "api_key"),
    "ARGILLA_API_URL": ("argilla", "api_url"),
    "ARGILLA_API_KEY": ("argilla", "api_key"),
    "AL_BASIC_AUTH_USER": ("server", "basic_auth_user"),
    "AL_BASIC_AUTH_PASS": ("server", "basic_auth_pass"),
    "AL_API_TOKEN": ("server", "api_token"),
}


def _coerce(value: Any, typ: Any, where: str, secret: bool = False) -> Any:
    """Convert a TOML/env/flag value to the field's type, or raise ConfigError naming the key (never echoing a
    secret's value: a wrongly typed token is still a token)."""
    typ_name = getattr(typ, "__name__", str(typ))
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on"}:
                return True
            if isinstance(value, str) and value.lower() in {"0", "false", "no", "off"}:
                return False
            raise ValueError
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError
            return str(value)
        if str(typ).startswith("list"):
            if isinstance(value, str):
                return [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return list(value)
            raise ValueError
    except (TypeError, ValueError):
        if secret:
            raise ConfigError(
                f"{where}: expected {typ_name}, got a {type(value).__name__} (value not shown: it is a secret)"
            ) from None
        raise ConfigError(f"{where}: expected {typ_name}, got {redact_text(repr(value))}") from None
    return value


def _apply(cfg: Config, section: str, key: str, value: Any, where: str) -> None:
    if not any(f.name == section for f in fields(Config)):
        valid = ", ".join(f.name for f in fields(Config))
        raise ConfigError(f"{where}: unknown section [{section}] (valid sections: {valid})")
    sub = getattr(cfg, section)
    hints = get_type_hints(type(sub))
    if key not in hints:
        valid = ", ".join(hints)
        raise ConfigError(f"{where}: unknown key {key!r} in [{section}] (valid keys: {valid})")
    secret = (section, key) in SECRETS
    if secret:
        register_secret(value)
    elif key in URL_KEYS:
        register_url(value)
    setattr(sub, key, _coerce(value, hints[key], where, secret=secret))


def load_config(
    path: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the Config: defaults < TOML file < environment < overrides ("section.key": value; None skipped)."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{p}: not valid TOML: {e}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{p}: top-level key {section!r} must be a [section] table")
            for key, value in values.items():
                _apply(cfg, section, key, value, f"{p}: [{section}] {key}")
    env = os.environ if env is None else env
    for name, (section, key) in ENV_ALIASES.items():
        if env.get(name):
            _apply(cfg, section, key, env[name], f"environment variable {name}")
    section_names = {f.name for f in fields(Config)}
    for name, value in env.items():
        if not name.startswith("AL_") or name in ENV_ALIASES:
            continue
        rest = name[3:].lower()
        section = next((s for s in section_names if rest.startswith(s + "_")), None)
        if section is None:
            continue  # AL_ variables for other tools (e.g. AL_HOME) are not ours to judge
        _apply(cfg, section, rest[len(section) + 1 :], value, f"environment variable {name}")
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        _apply(cfg, section, key, value, f"option {dotted}")
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """Range checks that a type cannot express."""
    s = cfg.strategy
    if s.batch_size < 1:
        raise ConfigError(f"[strategy] batch_size must be >= 1, got {s.batch_size}")
    if not 0.0 <= s.epsilon <= 1.0:
        raise ConfigError(f"[strategy] epsilon must be in [0, 1], got {s.epsilon}")
    if not 0.0 <= s.outlier_quantile < 1.0:
        raise ConfigError(f"[strategy] outlier_quantile must be in [0, 1), got {s.outlier_quantile}")
    if not 0.0 <= s.alpha <= 1.0:
        raise ConfigError(f"[strategy] alpha must be in [0, 1], got {s.alpha}")
    if s.m_factor < 1:
        raise ConfigError(f"[strategy] m_factor must be >= 1, got {s.m_factor}")
    if cfg.head.class_weight not in {"balanced", "none"}:
        raise ConfigError(f"[head] class_weight must be 'balanced' or 'none', got {cfg.head.class_weight!r}")
    if cfg.head.committee_size < 0:
        raise ConfigError(f"[head] committee_size must be >= 0, got {cfg.head.committee_size}")
    if not 0.0 <= cfg.head.smoothing <= 1.0:
        raise ConfigError(f"[head] smoothing must be in [0, 1] (0 = raw embeddings), got {cfg.head.smoothing}")
    if cfg.head.smoothing_k < 1:
        raise ConfigError(f"[head] smoothing_k must be >= 1, got {cfg.head.smoothing_k}")
    if cfg.seeding.min_labels_per_class < 0:
        raise ConfigError("[seeding] min_labels_per_class must be >= 0")
    if cfg.seeding.max_labels < 0:
        raise ConfigError("[seeding] max_labels must be >= 0")
    if not 0.0 <= cfg.seeding.min_cluster_coverage <= 1.0:
        raise ConfigError("[seeding] min_cluster_coverage must be in [0, 1]")
    if cfg.embedding.batch_size < 1:
        raise ConfigError("[embedding] batch_size must be >= 1")
    for section in (cfg.labelstudio, cfg.argilla):
        name = "labelstudio" if section is cfg.labelstudio else "argilla"
        if section.timeout <= 0:
            raise ConfigError(f"[{name}] timeout must be > 0 seconds, got {section.timeout}")
        if not 0 <= section.retries <= 20:
            raise ConfigError(f"[{name}] retries must be in 0..20, got {section.retries}")
    if cfg.server.max_body_bytes < 1024:
        raise ConfigError(f"[server] max_body_bytes must be >= 1024, got {cfg.server.max_body_bytes}")
    if not 0 < cfg.server.port < 65536:
        raise ConfigError(f"[server] port must be in 1..65535, got {cfg.server.port}")
