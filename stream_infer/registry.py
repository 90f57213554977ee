"""The model registry on disk: ``models/<name>/<version>/{manifest.json, model file}``.

The manifest is the contract between training and serving: the ordered feature list (see
:mod:`stream_infer.enrich` for how a feature name says where its value comes from), the alert
threshold, and the sha256 of the model file. Files are verified before anything parses them,
and only XGBoost's own JSON and UBJSON formats are accepted; pickle is refused outright.

``models/<name>/CHAMPION``, when present, is the champion pointer: one line, the version to
serve. ``resolve`` follows it for ``latest`` and ``champion``, :func:`promote` moves it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec

from .errors import ModelError, ModelIntegrityError

MANIFEST = "manifest.json"
CHAMPION = "CHAMPION"
FOLLOWS_CHAMPION = ("latest", "champion")
"""The ``model.version`` values that follow a name's champion pointer."""
ModelFormat = Literal["xgboost-json", "xgboost-ubj"]
_FORMAT_SUFFIX: dict[str, ModelFormat] = {".json": "xgboost-json", ".ubj": "xgboost-ubj"}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav", ".dill"}


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What ``manifest.json`` holds."""

    name: str
    version: str
    format: ModelFormat
    model_file: str
    sha256: str
    features: list[str]
    threshold: float
    created: str = ""
    training: dict[str, Any] = {}
    profile: dict[str, Any] = {}
    """The training data's reference bins (:class:`stream_infer.drift.Profile`, as JSON);
    empty for a model registered without its training data, or trained before profiles."""


class VerifiedModel(msgspec.Struct, frozen=True):
    """A manifest plus the model bytes whose sha256 matched it."""

    manifest: Manifest
    path: Path
    raw: bytes


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order for versions: ``2 < 10``, ``1.9 < 1.10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-_]", version))


def next_version(model_dir: Path) -> str:
    """One more than the highest integer version under ``model_dir`` (``1`` if none)."""
    versions = [d.name for d in Path(model_dir).glob("*") if d.is_dir() and d.name.isdigit()]
    return str(int(max(versions, key=version_key)) + 1) if versions else "1"


def names(root: Path) -> list[str]:
    """The models under ``root`` that have at least one version, in name order."""
    if not Path(root).is_dir():
        return []
    return sorted(d.name for d in Path(root).iterdir()
                  if d.is_dir() and not d.name.startswith(".") and versions(root, d.name))


def versions(root: Path, name: str) -> list[str]:
    """The versions of ``name`` that have a manifest, lowest first."""
    found = [d.name for d in (Path(root) / name).glob("*") if (d / MANIFEST).is_file()]
    return sorted(found, key=version_key)


def champion(root: Path, name: str) -> str | None:
    """The version ``<root>/<name>/CHAMPION`` names, or None when ``name`` has no pointer."""
    path = Path(root) / name / CHAMPION
    try:
        version = path.read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ModelError(f"{path}: {exc.strerror or exc}") from None
    if not version or version.startswith(".") or any(c in version for c in "/\\\n"):
        raise ModelError(f"{path}: {version!r} is not a version name")
    return version


def resolve(root: Path, name: str, version: str = "latest") -> Path:
    """The directory of ``name`` at ``version``.

    ``latest`` is the version the champion pointer names (``<root>/<name>/CHAMPION``, see
    :func:`promote`) when there is one, else the highest version present; ``champion`` is the
    pointer's version and needs the pointer; anything else is that version.
    """
    if version not in FOLLOWS_CHAMPION:
        return _version_dir(root, name, version)
    pointed = champion(root, name)
    if pointed is not None:
        return _version_dir(root, name, pointed, f" (the version {name}/{CHAMPION} names)")
    if version == "champion":
        raise ModelError(f"model {name!r} has no champion pointer under {root}: promote a "
                         f"version with `stream-infer model promote {name}:VERSION`")
    present = versions(root, name)
    if not present:
        raise ModelError(f"no versions of model {name!r} under {root}")
    return Path(root) / name / present[-1]


def _version_dir(root: Path, name: str, version: str, why: str = "") -> Path:
    chosen = Path(root) / name / version
    if not (chosen / MANIFEST).is_file():
        raise ModelError(f"model {name!r} version {version!r}{why} not found under {root}")
    return chosen


def promote(root: Path, name: str, version: str,
            check: Callable[[Path], object] | None = None) -> str | None:
    """Point ``<root>/<name>/CHAMPION`` at ``version``; return the version it named before.

    The version must be present, its manifest must name it, and ``check`` must accept its
    directory (by default :func:`load_verified`; the CLI loads it as the service does).
    Otherwise the error is raised and the pointer is left as it was. The pointer is written to
    a temporary file beside it and renamed over it: a reader sees the old or the new version,
    never a torn file.
    """
    if version in FOLLOWS_CHAMPION:
        raise ModelError(f"promote names a version, not {version!r}")
    model_dir = _version_dir(root, name, version)
    manifest = read_manifest(model_dir)
    if (manifest.name, manifest.version) != (name, version):
        raise ModelIntegrityError(f"{model_dir / MANIFEST} names {manifest.name} "
                                  f"{manifest.version}, not {name} {version}")
    (check or load_verified)(model_dir)
    try:
        before = champion(root, name)
    except ModelError:
        before = None  # an unreadable pointer is replaced
    _replace(model_dir.parent / CHAMPION, f"{version}\n".encode())
    return before


def _replace(path: Path, data: bytes) -> None:
    """Write ``path`` whole or not at all: a temporary file beside it, fsynced, renamed."""
    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ModelError(f"{path}: cannot write it: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o644)  # readable by the service's user, as the models are
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, path)
    except OSError as exc:
        Path(temporary).unlink(missing_ok=True)
        raise ModelError(f"{path}: cannot write it: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):  # the rename is done; this only makes it durable
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def read_manifest(model_dir: Path) -> Manifest:
    try:
        return msgspec.json.decode((model_dir / MANIFEST).read_bytes(), type=Manifest)
    except (OSError, msgspec.DecodeError) as exc:
        raise ModelError(f"{model_dir / MANIFEST}: {exc}") from exc


def load_verified(model_dir: Path) -> VerifiedModel:
    """Read the manifest and the model file; refuse anything that does not match it.

    The checks run on the bytes before any parser sees them: pickle is refused by suffix and
    by its protocol opcode, the sha256 must equal the manifest's, and the file must start the
    way XGBoost JSON and UBJSON documents start.
    """
    manifest = read_manifest(model_dir)
    path = model_dir / manifest.model_file
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise ModelIntegrityError(f"{path}: pickled models are never loaded")
    if path.resolve().parent != model_dir.resolve():
        raise ModelIntegrityError(f"{path}: model file must sit beside its manifest")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"{path}: {exc}") from exc
    if raw[:1] == b"\x80":
        raise ModelIntegrityError(f"{path}: looks like a pickle; refused")
    digest = hashlib.sha256(raw).hexdigest()
    if digest != manifest.sha256.lower():
        raise ModelIntegrityError(
            f"{path}: sha256 {digest} does not match the manifest's {manifest.sha256}"
        )
    if raw[:1] != b"{" or _FORMAT_SUFFIX.get(path.suffix.lower()) != manifest.format:
        raise ModelIntegrityError(f"{path}: not an XGBoost {manifest.format} document")
    return VerifiedModel(manifest=manifest, path=path, raw=raw)


def write_model(
    root: Path,
    name: str,
    version: str,
    model_bytes: bytes,
    *,
    features: list[str],
    threshold: float,
    fmt: ModelFormat = "xgboost-json",
    training: dict[str, Any] | None = None,
    profile: dict[str, Any] | None = None,
) -> Path:
    """Write a model file and its manifest; return the version directory."""
    model_dir = Path(root) / name / version
    if (model_dir / MANIFEST).exists():
        raise ModelError(f"{model_dir} already exists; versions are immutable")
    model_dir.mkdir(parents=True, exist_ok=True)
    model_file = "model.json" if fmt == "xgboost-json" else "model.ubj"
    (model_dir / model_file).write_bytes(model_bytes)
    manifest = Manifest(
        name=name,
        version=version,
        format=fmt,
        model_file=model_file,
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        features=features,
        threshold=threshold,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        training=training or {},
        profile=profile or {},
    )
    (model_dir / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)) + b"\n")
    return model_dir


def sniff_format(path: Path, raw: bytes) -> ModelFormat:
    """Which XGBoost format a model file trained elsewhere is in, from its bytes.

    Pickles (by suffix or protocol opcode) are refused, and so is anything that is not an
    XGBoost JSON or UBJSON document (both start with ``{``; JSON's next byte is a quote,
    blank or ``}``, UBJSON's a type marker).
    """
    if Path(path).suffix.lower() in _PICKLE_SUFFIXES or raw[:1] == b"\x80":
        raise ModelIntegrityError(
            f"{path}: a pickle; pickled models are never loaded. Save the model with "
            f"booster.save_model('model.json') (or XGBClassifier.save_model) and register that")
    if raw[:1] != b"{":
        raise ModelIntegrityError(
            f"{path}: not an XGBoost JSON or UBJSON model (save it with save_model('model.json'"
            f") or save_model('model.ubj'); the old binary format is not accepted)")
    return "xgboost-json" if raw[1:2] in (b'"', b"}", b" ", b"\n", b"\r", b"\t") else "xgboost-ubj"


def feature_order(own: list[str] | None, given: list[str] | None, num_features: int,
                  source: str) -> list[str]:
    """The manifest's feature order for a model trained elsewhere.

    The booster's own ``feature_names`` when it has them (``given`` must then be the same list,
    in the same order); else ``given``, which must then be there. Either way the list must be
    as long as the booster's ``num_feature``.
    """
    if given is not None and len(set(given)) != len(given):
        repeated = sorted({f for f in given if given.count(f) > 1})
        raise ModelIntegrityError(f"--features names {', '.join(repeated)} more than once")
    if own and given is not None and given != own:
        how = ("are the model's own feature names in another order" if sorted(given) ==
               sorted(own) else "differ from the model's own feature names")
        raise ModelIntegrityError(
            f"{source}: --features {','.join(given)} {how} ({','.join(own)}); give them in "
            f"the booster's order, or leave --features out")
    order = own or given
    if order is None:
        raise ModelIntegrityError(
            f"{source}: the model has no feature names; give --features a,b,... in the order "
            f"of the training columns ({num_features} names)")
    if len(order) != num_features:
        raise ModelIntegrityError(
            f"{source}: the model expects {num_features} features, --features lists "
            f"{len(order)}")
    return order
