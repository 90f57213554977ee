"""The demo model shipped in the package is the repository's ``models/demo`` (the source of
truth), so a wheel install runs the same demo."""

from pathlib import Path

import pytest

from stream_infer.demo.run import SHIPPED_MODELS, default_models_dir
from stream_infer.registry import load_verified

SOURCE = Path(__file__).resolve().parents[2] / "models"


def test_the_shipped_demo_model_equals_the_repository_s() -> None:
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes()
                for p in sorted((root / "demo").rglob("*")) if p.is_file()}

    assert files(SOURCE), "no demo model under models/demo"
    assert files(SHIPPED_MODELS) == files(SOURCE)
    for version in ("1", "2", "3"):
        load_verified(SHIPPED_MODELS / "demo" / version)  # its manifest's sha256 matches
    assert (SHIPPED_MODELS / "demo" / "CHAMPION").read_text().strip() == "1"


def test_the_demo_uses_the_shipped_model_where_there_is_no_models_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_models_dir() == SHIPPED_MODELS
    (tmp_path / "models" / "demo").mkdir(parents=True)
    assert default_models_dir() == Path("models")
