"""The champion pointer: ``resolve`` follows it, ``model promote`` moves it (atomically, and
only to a version the service would load), ``model list`` and ``model show`` report it."""

from __future__ import annotations

import json
import re
import stat
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import xgboost

from stream_infer.cli import main
from stream_infer.errors import ModelError, ModelIntegrityError
from stream_infer.registry import (
    CHAMPION,
    champion,
    promote,
    read_manifest,
    resolve,
    versions,
    write_model,
)
from stream_infer.service.reload import ModelWatch

FEATURES = ["amount", "card.risk", "attributes.x"]
CONFIG = """\
[model]
dir = "{root}"
name = "fraud"
shadows = [{shadows}]
reload_poll_s = 5

[features.card]
key = "card:{{card_id}}"
fields = [{fields}]
"""


def booster(names: list[str] | None = FEATURES) -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    trained = xgboost.train({"objective": "binary:logistic", "max_depth": 2, "nthread": 1},
                            xgboost.DMatrix(x, label=y, feature_names=names), 5)
    return bytes(trained.save_raw("json"))


@pytest.fixture(scope="module")
def raw() -> bytes:
    return booster()


def save(root: Path, version: str, raw: bytes, name: str = "fraud", threshold: float = 0.5,
         features: list[str] = FEATURES, **training: Any) -> Path:
    return write_model(root, name, version, raw, features=features, threshold=threshold,
                       training=training)


def tamper(model_dir: Path) -> None:
    path = model_dir / "model.json"
    path.write_bytes(path.read_bytes().replace(b'"base_score"', b'"base_score" ', 1))


def config(tmp_path: Path, root: Path, shadows: Sequence[str] = (),
           fields: Sequence[str] = ("risk",)) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.format(root=root, shadows=", ".join(json.dumps(s) for s in shadows),
                                  fields=", ".join(json.dumps(f) for f in fields)))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def registry(tmp_path: Path, raw: bytes) -> Path:
    """fraud 1, 2 and 10 (no pointer), and challenger 1."""
    root = tmp_path / "models"
    save(root, "1", raw, threshold=0.4, auc=0.91234, average_precision=0.55, test_rows=1200,
         test_positives=30)
    save(root, "2", raw, threshold=0.6)
    save(root, "10", raw, threshold=0.7)
    save(root, "1", raw, name="challenger", registered_from={"file": "elsewhere.json"})
    return root


def test_without_a_pointer_latest_is_the_highest_version_as_before(registry: Path) -> None:
    assert champion(registry, "fraud") is None
    assert resolve(registry, "fraud") == resolve(registry, "fraud", "latest") == (
        registry / "fraud" / "10")
    assert versions(registry, "fraud") == ["1", "2", "10"]
    with pytest.raises(ModelError, match=r"no champion pointer.*model promote fraud:VERSION"):
        resolve(registry, "fraud", "champion")


def test_promote_moves_what_latest_and_champion_resolve_to(registry: Path) -> None:
    assert promote(registry, "fraud", "2") is None
    pointer = registry / "fraud" / CHAMPION
    assert pointer.read_text() == "2\n"
    assert stat.S_IMODE(pointer.stat().st_mode) == 0o644
    assert resolve(registry, "fraud") == resolve(registry, "fraud", "champion") == (
        registry / "fraud" / "2")
    assert resolve(registry, "fraud", "10") == registry / "fraud" / "10"  # pins ignore it
    assert promote(registry, "fraud", "1") == "2"
    assert resolve(registry, "fraud") == registry / "fraud" / "1"
    assert sorted(p.name for p in (registry / "fraud").iterdir()) == [
        "1", "10", "2", CHAMPION]  # no temporary file left behind
    assert resolve(registry, "challenger") == registry / "challenger" / "1"  # per model


@pytest.mark.parametrize("breakage, error", [
    (tamper, "sha256"),
    (lambda d: (d / "model.json").write_bytes(b"\x80\x04K\x01."), "pickle"),
])
def test_a_version_that_fails_verification_is_refused_and_the_pointer_stays(
    registry: Path, breakage: Any, error: str
) -> None:
    promote(registry, "fraud", "1")
    breakage(registry / "fraud" / "2")
    with pytest.raises(ModelIntegrityError, match=error):
        promote(registry, "fraud", "2")
    assert champion(registry, "fraud") == "1"
    assert resolve(registry, "fraud") == registry / "fraud" / "1"


def test_a_version_whose_manifest_names_another_one_is_refused(registry: Path) -> None:
    manifest = registry / "fraud" / "2" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"version": "2"', '"version": "3"'))
    with pytest.raises(ModelIntegrityError, match="names fraud 3, not fraud 2"):
        promote(registry, "fraud", "2")
    assert champion(registry, "fraud") is None


def test_a_missing_version_or_a_keyword_is_refused(registry: Path) -> None:
    with pytest.raises(ModelError, match="'7' not found"):
        promote(registry, "fraud", "7")
    with pytest.raises(ModelError, match="names a version"):
        promote(registry, "fraud", "latest")
    assert not (registry / "fraud" / CHAMPION).exists()


@pytest.mark.parametrize("content", ["", "../challenger/1", ".hidden"])
def test_a_malformed_pointer_is_an_error_not_a_path(registry: Path, content: str) -> None:
    (registry / "fraud" / CHAMPION).write_text(content)
    with pytest.raises(ModelError, match="is not a version name"):
        resolve(registry, "fraud")
    promote(registry, "fraud", "2")  # and promote replaces it
    assert resolve(registry, "fraud") == registry / "fraud" / "2"


def test_a_pointer_to_a_removed_version_fails_to_resolve(registry: Path) -> None:
    (registry / "fraud" / CHAMPION).write_text("9\n")
    with pytest.raises(ModelError, match=r"version '9' \(the version fraud/CHAMPION names\)"):
        resolve(registry, "fraud")


def test_readers_only_ever_see_a_whole_pointer(registry: Path) -> None:
    promote(registry, "fraud", "1")
    seen: set[str | None] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.add(champion(registry, "fraud"))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(200):
            promote(registry, "fraud", "2" if i % 2 else "10")
    finally:
        done.set()
        reader.join()
    assert seen <= {"1", "2", "10"} and len(seen) >= 2


def test_the_hot_reload_watch_sees_a_promotion(registry: Path) -> None:
    now = [0.0]
    built: list[list[Path]] = []

    def build(dirs: list[Path]) -> Any:
        built.append(dirs)
        model = SimpleNamespace(name="fraud", version=dirs[0].name)
        return SimpleNamespace(champion=model, shadows=())

    watch = ModelWatch(registry, [("fraud", "latest")], build, poll_s=1.0,
                       clock=lambda: now[0])
    now[0] = 2.0
    assert watch.poll() is None  # nothing moved
    promote(registry, "fraud", "2")
    now[0] = 4.0
    assert watch.poll() is not None
    assert built == [[registry / "fraud" / "2"]]


def test_model_list_shows_every_version_its_figures_and_what_is_served(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    promote(registry, "fraud", "2")
    tamper(registry / "fraud" / "10")
    cfg = config(tmp_path, registry, shadows=["challenger"])
    code, out, _ = run(capsys, "model", "list", "--config", str(cfg))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"models in {registry}"
    assert lines[1].split() == ["model", "version", "features", "threshold", "files",
                                "training", "serving"]
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in lines[2:6]}
    assert rows[("challenger", "1")] == ["3", "0.5000", "ok", "registered", "from",
                                         "elsewhere.json", "shadow"]
    assert rows[("fraud", "1")] == ["3", "0.4000", "ok", "test", "AUC", "0.9123,", "AP",
                                    "0.5500,", "1,200", "rows,", "30", "positives"]
    assert rows[("fraud", "2")] == ["3", "0.6000", "ok", "-", "champion,", "pointer"]
    assert rows[("fraud", "10")] == ["3", "0.7000", "REFUSED", "-"]
    assert ("champion pointers  challenger: none (latest = the highest version); fraud -> 2"
            in lines)
    assert (f"serving            champion fraud:latest -> 2; shadow challenger:latest -> 1  "
            f"({cfg})") in lines
    assert any(line.startswith("refused            fraud 10:") and "sha256" in line
               for line in lines)


def test_model_list_without_a_config_uses_the_defaults_and_the_models_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "model", "list", "--models-dir", "nowhere")
    assert code == 0
    assert "  (no model versions)" in out
    assert "champion demo:latest -> nothing  (default settings)" in out
    assert "refused            champion demo:latest: no versions of model 'demo'" in out


def test_model_show_prints_the_manifest_training_and_serving_status(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, registry)
    code, out, _ = run(capsys, "model", "show", "fraud:1", "--config", str(cfg))
    assert code == 0
    head, _, training = out.partition("training, as manifest.json records it:\n")
    lines = head.splitlines()
    assert lines[0] == f"fraud 1  ({registry / 'fraud' / '1'})"
    fields = {line.split()[0]: line.split(None, 1)[1] for line in lines[1:]}
    assert fields["serving"] == "no champion pointer"
    assert fields["files"].startswith("ok: model.json (xgboost-json), sha256 ")
    assert fields["threshold"] == "0.4000"
    assert fields["features"] == "3, in order: amount, card.risk, attributes.x"
    assert fields["training"] == "test AUC 0.9123, AP 0.5500, 1,200 rows, 30 positives"
    assert json.loads(training)["test_rows"] == 1200

    promote(registry, "fraud", "2")
    code, out, _ = run(capsys, "model", "show", "fraud", "--config", str(cfg))
    assert out.splitlines()[0].startswith("fraud 2  ")  # the version latest resolves to
    assert "serving     champion of the configuration; the champion pointer names it" in out
    _, out, _ = run(capsys, "model", "show", "fraud:10", "--config", str(cfg))
    assert "serving     the champion pointer names 2" in out


def test_model_promote_from_the_command_line(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, registry)
    code, out, err = run(capsys, "model", "promote", "fraud:2", "--config", str(cfg))
    assert code == 0, err
    assert out.splitlines() == [
        f"promoted fraud 2: {registry / 'fraud' / CHAMPION} names 2 (before: no pointer, "
        f"latest was the highest version)",
        "  checked    sha256, not a pickle, XGBoost loads it, its feature order is the "
        "manifest's (3 features), with the configuration",
        "  threshold  0.6000",
        f"  serving    a service with {cfg} serves it as champion from its next reload: "
        f"within model.reload_poll_s (5 s) or at once on SIGHUP",
    ]
    assert resolve(registry, "fraud") == registry / "fraud" / "2"
    code, out, _ = run(capsys, "model", "promote", "challenger:1", "--config", str(cfg))
    assert code == 0 and f"note: {cfg} does not follow challenger's pointer" in out
    code, out, _ = run(capsys, "model", "promote", "fraud:1", "--models-dir", str(registry))
    assert code == 0 and "services on fraud:latest or fraud:champion swap to it at their" in out
    assert champion(registry, "fraud") == "1"


@pytest.mark.parametrize("argv, error", [
    (["fraud:10"], "fraud:10 not promoted, the champion pointer is unchanged: .*sha256"),
    (["fraud:7"], "not promoted.*'7' not found"),
    (["fraud"], "give NAME:VERSION"),
    (["fraud:2", "--config", "{views}"], "not promoted.*no field 'risk'"),
    (["shuffled:1"], "not promoted.*feature order"),
])
def test_model_promote_refuses_with_exit_code_2_and_leaves_the_pointer(
    tmp_path: Path, registry: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
    error: str
) -> None:
    promote(registry, "fraud", "1")
    tamper(registry / "fraud" / "10")
    # the manifest lists the booster's own feature names in another order
    save(registry, "1", booster(), name="shuffled", features=[FEATURES[1], FEATURES[0],
                                                               FEATURES[2]])
    (tmp_path / "views").mkdir()
    paths = {"views": config(tmp_path / "views", registry, fields=["other"])}
    argv = [a.format(**paths) for a in argv]
    code, out, err = run(capsys, "model", "promote", *argv, "--models-dir", str(registry))
    assert code == 2 and out == ""
    assert re.search(error, err.splitlines()[-1]), err
    assert champion(registry, "fraud") == "1"
    assert not (registry / "shuffled" / CHAMPION).exists()
    assert read_manifest(resolve(registry, "fraud")).version == "1"


def test_a_promoted_shadow_is_served_once_as_the_champion(tmp_path: Path, raw: bytes) -> None:
    """The challenger ``fraud:2`` stays listed as a shadow after its promotion: the reload
    serves it as the champion alone instead of refusing a model listed twice."""
    from stream_infer.config import load_settings
    from stream_infer.service.app import load_models

    root = tmp_path / "models"
    for version in ("1", "2"):
        save(root, version, raw)
    promote(root, "fraud", "1")
    settings = load_settings(config(tmp_path, root, shadows=["fraud:2"]))
    dirs = [resolve(root, name, version) for name, version in settings.model.refs()]
    before = load_models(settings, dirs)
    assert (before.champion.version, [m.version for m in before.shadows]) == ("1", ["2"])
    assert main(["model", "promote", "fraud:2", "--config",
                 str(tmp_path / "config.toml")]) == 0
    dirs = [resolve(root, name, version) for name, version in settings.model.refs()]
    after = load_models(settings, dirs)
    assert (after.champion.version, after.shadows) == ("2", ())
