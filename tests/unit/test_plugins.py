"""The connector registry and entry-point plugins, through the real importlib.metadata mechanism: a throwaway
distribution (a *.dist-info folder with entry_points.txt, plus its module) is written to a temporary folder
and put on sys.path, exactly what `pip install` leaves in site-packages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import connectors
from al_backend import plugins
from al_backend.config import load_config
from al_backend.errors import ConfigError
from al_backend.pool import Pool, Ranking
from connectors import Connector, connector_names, make_connector, register_connector
from connectors.files import FileConnector

ROOT = Path(__file__).resolve().parents[2]

TOY = '''
from pathlib import Path
from al_backend.pool import Pool
from connectors import ConnectorBase, PushReport

Path(__file__).with_name("imports.log").open("a").write("imported\\n")


class ToyConnector(ConnectorBase):
    """Three tasks in memory; push remembers the order it was given."""

    name = "toy"

    def __init__(self, greeting="hello"):
        self.greeting = greeting
        self.pushed = None

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls(**kwargs)

    def describe(self):
        return "toy tasks"

    def pull(self):
        return Pool(ids=["a", "b", "c"], texts=["one", "two", "three"], labels=["x", None, None], source="toy")

    def label_set(self):
        return ["x", "y"]

    def push(self, ranking, start_chunk=0, on_chunk=None):
        self.pushed = list(ranking.ids)
        if on_chunk is not None:
            on_chunk(1, 1)
        return PushReport(pushed=len(ranking), target=self.describe())


from al_backend.strategies import Strategy


def least_first_feature(ctx):
    # asks first for the rows with the smallest first coordinate: easy to check by hand
    return -ctx.X[:, 0]


toy_strategy = Strategy(name="toy_margin", scorer=least_first_feature, description="smallest x0 first")
'''


def write_distribution(root: Path, dist: str, module: str, source: str, entry_points: str) -> Path:
    """What an installed wheel leaves in site-packages: <module>.py and <dist>-0.1.dist-info/."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist.replace('_', '-')}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    return root


@pytest.fixture
def fresh_plugins(monkeypatch):
    """Forget discovered plugins before and after; plugin modules imported by a test are dropped again."""
    before = set(sys.modules)
    monkeypatch.setattr(connectors._connectors, "_registered", {})
    plugins.clear_cache()
    yield
    plugins.clear_cache()
    for name in set(sys.modules) - before:
        if name.startswith(("toy_plugin", "broken_plugin", "shapeless_plugin")):
            del sys.modules[name]


@pytest.fixture
def toy(tmp_path, monkeypatch, fresh_plugins):
    site = write_distribution(
        tmp_path / "site",
        "toy_plugin",
        "toy_plugin",
        TOY,
        """
        [al_backend.connectors]
        toy = toy_plugin:ToyConnector

        [al_backend.strategies]
        toy_margin = toy_plugin:toy_strategy
    """,
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.clear_cache()
    return site


def cfg():
    return load_config(None, env={})


def ranking(ids):
    import numpy as np

    n = len(ids)
    return Ranking(
        ids=list(ids),
        priority=Ranking.priorities(n),
        batch_size=n,
        components={},
        predicted=[None] * n,
        confidence=np.full(n, np.nan),
        cluster=np.full(n, -1),
        round_id=1,
        model_version="v",
        strategy="seed",
    )


def test_a_connector_declared_by_an_installed_distribution_is_built_by_name(toy):
    assert "toy" in connector_names()
    c = make_connector("toy", cfg(), greeting="hi")
    assert type(c).__name__ == "ToyConnector" and type(c).__module__ == "toy_plugin"
    assert c.greeting == "hi" and isinstance(c, Connector)
    pool = c.pull()
    assert isinstance(pool, Pool) and pool.ids == ["a", "b", "c"] and c.label_set() == ["x", "y"]
    c.bind("the store", "the embedder")
    assert (c.store, c.embedder) == ("the store", "the embedder")
    chunks = []
    report = c.push(ranking(["c", "b"]), on_chunk=lambda done, total: chunks.append((done, total)))
    assert c.pushed == ["c", "b"] and report.pushed == 2 and chunks == [(1, 1)]


def test_a_strategy_declared_by_an_installed_distribution_is_found_by_its_group(toy):
    found = plugins.load_entry_points("al_backend.strategies")
    assert set(found) == {"toy_margin"}
    assert found["toy_margin"] is sys.modules["toy_plugin"].toy_strategy
    assert plugins.entry_point_names("al_backend.strategies") == ["toy_margin"]


def test_a_plugin_strategy_is_listed_and_runs_in_the_round(toy):
    import json

    import numpy as np
    from typer.testing import CliRunner

    import al_backend
    from al_backend.cli.main import app
    from al_backend.strategies import get_strategy

    assert get_strategy("toy_margin").needs() == {
        "probabilities": False,
        "committee": False,
        "embeddings": False,
        "density": False,
        "batch_aware": False,
    }
    listing = CliRunner().invoke(app, ["strategies", "--json"])
    assert listing.exit_code == 0 and "toy_margin" in json.loads(listing.output)["strategies"]
    X = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    learner = al_backend.ActiveLearner(X, strategy="toy_margin", random_state=0)
    # half the pool labeled, two classes: past seeding, so the model phase runs the plugin's scorer
    learner.teach(range(30), ["a" if v > 0 else "b" for v in X[:30, 1]])
    picks = learner.query(5)
    unlabeled = np.arange(30, 60)
    # what strategies see are the head's features: each row smoothed over its 10 nearest other rows
    # (x' = unit(x / 2 + mean of the neighbours / 2), the [head] smoothing defaults), worked out here by brute force
    sq = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(sq, np.inf)
    neighbours = np.argsort(sq, axis=1, kind="stable")[:, :10]
    F = 0.5 * X + 0.5 * X[neighbours].mean(axis=1)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    assert picks.tolist() == unlabeled[np.argsort(F[unlabeled, 0], kind="stable")][:5].tolist()


def test_a_plugin_is_imported_once_and_only_when_used(toy):
    assert connector_names()  # discovery reads metadata only
    assert "toy_plugin" not in sys.modules and not (toy / "imports.log").exists()
    make_connector("toy", cfg())
    make_connector("toy", cfg())
    plugins.load_entry_points("al_backend.strategies")
    assert (toy / "imports.log").read_text() == "imported\n"


def test_unknown_connector_is_a_config_error_listing_the_valid_names(fresh_plugins):
    with pytest.raises(ConfigError, match=r"unknown connector 'nope': choose one of argilla, file, labelstudio"):
        make_connector("nope", cfg())


def test_unknown_name_lists_installed_plugins_too(toy):
    with pytest.raises(ConfigError, match=r"choose one of argilla, file, labelstudio, toy$"):
        make_connector("nope", cfg())


def test_a_plugin_that_fails_to_import_is_a_config_error_naming_it(tmp_path, monkeypatch, fresh_plugins):
    site = write_distribution(
        tmp_path / "site",
        "broken_plugin",
        "broken_plugin",
        """
        import toy_dependency_that_is_not_installed
    """,
        """
        [al_backend.connectors]
        broken = broken_plugin:Connector

        [al_backend.strategies]
        broken_strategy = broken_plugin:select
    """,
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.clear_cache()
    assert "broken" in connector_names()  # listed: installed, just not loadable
    with pytest.raises(ConfigError) as e:
        make_connector("broken", cfg())
    msg = str(e.value)
    assert "plugin 'broken'" in msg and "broken-plugin" in msg and "broken_plugin:Connector" in msg
    assert "toy_dependency_that_is_not_installed" in msg
    with pytest.raises(ConfigError, match=r"plugin 'broken_strategy' \(al_backend.strategies"):
        plugins.load_entry_points("al_backend.strategies")
    # the broken plugin spoils nothing else
    assert isinstance(make_connector("file", cfg(), input="tasks.jsonl"), FileConnector)


def test_a_plugin_object_that_is_not_a_connector_is_refused_naming_what_it_lacks(tmp_path, monkeypatch, fresh_plugins):
    site = write_distribution(
        tmp_path / "site",
        "shapeless_plugin",
        "shapeless_plugin",
        """
        class Half:
            name = "half"
            def __init__(self, config):
                pass
            def describe(self):
                return "half"
            def pull(self):
                return None
    """,
        """
        [al_backend.connectors]
        half = shapeless_plugin:Half
    """,
    )
    monkeypatch.syspath_prepend(str(site))
    plugins.clear_cache()
    with pytest.raises(ConfigError, match=r"connector 'half' built Half, which lacks bind, label_set, push"):
        make_connector("half", cfg())


def test_no_such_entry_point_is_a_config_error(fresh_plugins):
    with pytest.raises(ConfigError, match=r"no plugin 'missing' in entry-point group 'al_backend.nothing'"):
        plugins.load_entry_point("al_backend.nothing", "missing")
    assert plugins.load_entry_points("al_backend.nothing") == {}


def test_register_connector_in_process_wins_over_the_built_in(fresh_plugins):
    built = []

    def factory(config, **kwargs):
        c = FileConnector("in-process.jsonl")
        built.append(kwargs)
        return c

    register_connector("file", factory)
    assert isinstance(make_connector("file", cfg(), skip_invalid=True), FileConnector)
    assert built == [{"skip_invalid": True}]
    with pytest.raises(TypeError):
        register_connector("bad", 42)


def test_built_ins_are_imported_only_when_asked_for():
    """A fresh interpreter: listing names, building the file connector and importing the server import neither
    the Label Studio nor the Argilla module (nor the Argilla SDK)."""
    code = textwrap.dedent("""
        import sys
        import connectors, al_backend.server
        from al_backend.config import load_config
        names = connectors.connector_names()
        c = connectors.make_connector("file", load_config(None, env={}), input="x.jsonl")
        loaded = [m for m in ("connectors.labelstudio", "connectors.argilla", "argilla") if m in sys.modules]
        print(names, type(c).__name__, loaded)
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("FileConnector []"), out.stdout
