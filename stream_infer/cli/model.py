"""``stream-infer model``: train, register, list, show and promote model versions."""

from __future__ import annotations

import argparse
import json
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Settings
from ..errors import StreamInferError
from .common import _config_arg, _settings, _usage

if TYPE_CHECKING:
    from ..registry import Manifest


TRAIN_DESCRIPTION = """\
Train an XGBoost model on a labelled CSV/Parquet table and write the next version of
--name under --models-dir. The rows are split three ways: train rows fit the trees,
validation rows fit the alert threshold (best F1) and early stopping, and test rows give
the printed metrics and nothing else. At random (default), or by event time:

  train [--train-from, --train-until)  gap  validation [.., --valid-until)
                                       gap  test [.., --test-until)

The gap is the label delay. Without --valid-until there is no validation window: the
test window starts one gap after --train-until, and the validation rows are the training
window's latest --valid-fraction.
"""


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    model = sub.add_parser("model", help="model tools")
    msub = model.add_subparsers(required=True, metavar="ACTION")
    train = msub.add_parser("train", help="train an XGBoost model from labelled CSV/Parquet",
                            description=TRAIN_DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_argument("data", type=Path, metavar="DATA",
                       help="CSV or Parquet: one column per feature, named as the service "
                            "names it, and a 0/1 label")
    rows = train.add_argument_group("columns and output")
    rows.add_argument("--features", metavar="A,B,...",
                      help="feature columns, in order (default: every column but the label, "
                           "time, card and id columns)")
    rows.add_argument("--label", default="label", metavar="COLUMN", help="(default: label)")
    rows.add_argument("--time-column", default="event_time", metavar="COLUMN",
                      help="event time, ISO 8601 or epoch ms (default: event_time)")
    rows.add_argument("--card-column", default="card_id", metavar="COLUMN",
                      help="the card, for --drop-known-compromised (default: card_id)")
    rows.add_argument("--name", default="demo", help="(default: demo)")
    rows.add_argument("--version", help="(default: the next integer version)")
    rows.add_argument("--models-dir", type=Path, default=Path("models"), metavar="DIR",
                      help="(default: models)")
    split = train.add_argument_group("split")
    split.add_argument("--seed", type=int, default=7,
                       help="seed of the random split and of XGBoost (default: 7)")
    split.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                       help="random split: the share of rows to test on (default: 0.2)")
    split.add_argument("--valid-fraction", type=float, metavar="F",
                       help="the share of rows to validate on: of all rows at random, of the "
                            "training window's latest rows in a time split without "
                            "--valid-until (default: 0.2 when the threshold is fitted or early "
                            "stopping is on, else 0)")
    split.add_argument("--train-until", metavar="TIME",
                       help="split by event time: train before TIME, ISO 8601 (UTC if naive) "
                            "or epoch ms (default: a random split)")
    split.add_argument("--train-from", metavar="TIME", help="train from TIME (default: the "
                       "first row)")
    split.add_argument("--gap", metavar="DURATION",
                       help="the label delay before each later window, e.g. 7d (default: 0s)")
    split.add_argument("--valid-until", metavar="TIME",
                       help="a validation window [--train-until + gap, TIME); the test window "
                            "starts a gap after it (default: none)")
    split.add_argument("--test-until", metavar="TIME", help="test before TIME (default: to the "
                       "last row)")
    split.add_argument("--drop-known-compromised", action="store_true",
                       help="leave out of each test day the cards whose fraud was known when "
                            "it began (a fraud is known a gap after it; frauds from "
                            "--train-from on count), as the Fraud-Detection-Handbook's test "
                            "sets do (default: off)")
    fit = train.add_argument_group("threshold and XGBoost")
    fit.add_argument("--threshold", type=float, metavar="X",
                     help="a fixed alert threshold (default: the best F1 on the validation rows)")
    fit.add_argument("--trees", type=int, default=200, metavar="N",
                     help="boosting rounds, the most with early stopping (default: 200)")
    fit.add_argument("--depth", type=int, default=6, metavar="D", help="max_depth (default: 6)")
    fit.add_argument("--nthread", type=int, default=2, metavar="N",
                     help="XGBoost threads (default: 2)")
    fit.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                     help="any XGBoost parameter, repeatable; the value is an int, else a float, "
                          "else a string. Overrides --params-file, which overrides the options "
                          "above and the defaults objective=binary:logistic, tree_method=hist, "
                          "eta=0.1, eval_metric=aucpr")
    fit.add_argument("--params-file", type=Path, metavar="FILE",
                     help="XGBoost parameters from a TOML or JSON table (default: none)")
    fit.add_argument("--early-stopping-rounds", type=int, metavar="N",
                     help="stop when the last eval_metric on the validation rows has not "
                          "improved for N rounds, and keep the best iteration's trees "
                          "(default: off)")
    train.set_defaults(handler=_model_train)

    register = msub.add_parser(
        "register", help="import an XGBoost model trained elsewhere",
        description="Import a model saved with Booster.save_model or XGBClassifier.save_model "
                    "(JSON or UBJSON; never a pickle) as the next version of --name, with a "
                    "manifest (sha256, feature order, threshold). It is checked, and loaded as "
                    "the service loads it, before it is published.")
    register.add_argument("model", type=Path, metavar="MODEL", help="model.json or model.ubj")
    register.add_argument("--name", required=True)
    register.add_argument("--version", help="(default: the next integer version)")
    register.add_argument("--models-dir", type=Path, default=Path("models"), metavar="DIR",
                          help="(default: models)")
    register.add_argument("--features", metavar="A,B,...",
                          help="the feature order (default: the booster's own feature names; "
                               "required when it has none, and must equal them when it has)")
    register.add_argument("--threshold", type=float, metavar="X",
                          help="the alert threshold (default: 0.5)")
    register.set_defaults(handler=_model_register)

    listing = msub.add_parser("list", help="every model version, its figures, and which ones "
                              "the configuration serves")
    _registry_args(listing)
    listing.set_defaults(handler=_model_list)
    show = msub.add_parser("show", help="one version's manifest, training summary and serving "
                           "status")
    show.add_argument("ref", metavar="NAME[:VERSION]",
                      help="(default version: the one `latest` resolves to: the champion "
                           "pointer's, else the highest)")
    _registry_args(show)
    show.set_defaults(handler=_model_show)
    promote = msub.add_parser(
        "promote", help="make a version the champion: a running service swaps to it",
        description="Point models/NAME/CHAMPION at VERSION, atomically. A service whose "
                    "model.version is `latest` (the default) or `champion` serves it from its "
                    "next reload (model.reload_poll_s, or SIGHUP), without a restart. The "
                    "version is first checked as the service loads it (sha256, no pickle, "
                    "XGBoost reads it, feature order); with --config, also with the "
                    "configuration's feature views and shadows. A refused version leaves the "
                    "pointer as it was (exit code 2).")
    promote.add_argument("ref", metavar="NAME:VERSION")
    _registry_args(promote)
    promote.set_defaults(handler=_model_promote)


def _registry_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models-dir", type=Path, metavar="DIR",
                        help="(default: the configuration's model.dir)")
    _config_arg(parser, required=False)


def _model_train(args: argparse.Namespace) -> int:
    from ..offline.training import (
        TimeSplit,
        parse_duration_ms,
        parse_param,
        read_params_file,
        train,
    )
    from ..records import parse_time_ms

    def when(text: str | None) -> int | None:
        return None if text is None else parse_time_ms(text)

    split = None
    if args.train_until:
        split = TimeSplit(train_until_ms=parse_time_ms(args.train_until),
                          gap_ms=parse_duration_ms(args.gap or "0s"),
                          test_until_ms=when(args.test_until), train_from_ms=when(args.train_from),
                          valid_until_ms=when(args.valid_until))
    else:
        given = [flag for flag, value in (
            ("--train-from", args.train_from), ("--gap", args.gap),
            ("--valid-until", args.valid_until), ("--test-until", args.test_until),
            ("--drop-known-compromised", args.drop_known_compromised)) if value]
        if given:
            raise _usage(f"model train: {', '.join(given)} need --train-until")
    params = read_params_file(args.params_file) if args.params_file else {}
    params |= dict(parse_param(item) for item in args.param)
    report = train(
        args.data, models_dir=args.models_dir, name=args.name, version=args.version,
        features=args.features.split(",") if args.features else None, label_column=args.label,
        time_column=args.time_column, card_column=args.card_column,
        test_fraction=args.test_fraction, valid_fraction=args.valid_fraction, seed=args.seed,
        n_estimators=args.trees, max_depth=args.depth, nthread=args.nthread, params=params,
        early_stopping_rounds=args.early_stopping_rounds, threshold=args.threshold,
        split=split, drop_known_compromised=args.drop_known_compromised)
    print(report.summary())
    return 0


def _model_register(args: argparse.Namespace) -> int:
    from ..offline.training import register

    report = register(args.model, models_dir=args.models_dir, name=args.name,
                      version=args.version,
                      features=args.features.split(",") if args.features else None,
                      threshold=args.threshold)
    print(report.summary())
    return 0


def _model_list(args: argparse.Namespace) -> int:
    from ..registry import names, versions

    settings, root = _registry(args)
    served, unresolved = _served(settings, root)
    rows = [["model", "version", "features", "threshold", "files", "training", "serving"]]
    refused, pointers = [], []
    for name in names(root):
        pointer = _pointer(root, name)
        pointers.append(f"{name} -> {pointer}" if pointer else f"{name}: none (latest = the "
                        "highest version)")
        for version in versions(root, name):
            manifest, problem = _inspect(root / name / version)
            roles = [*served.get((name, version), []), *(["pointer"] * (pointer == version))]
            rows.append([name, version, str(len(manifest.features)) if manifest else "?",
                         f"{manifest.threshold:.4f}" if manifest else "?",
                         "REFUSED" if problem else "ok",
                         _figures(manifest.training) if manifest else "-", ", ".join(roles)])
            if problem:
                refused.append(f"{name} {version}: {problem}")
    print(f"models in {root}")
    print("\n".join(_table(rows, right={2, 3})) if len(rows) > 1 else "  (no model versions)")
    print(f"champion pointers  {'; '.join(pointers) or '-'}")
    print(f"serving            {_configured(args, settings, root)}")
    for line in [*unresolved, *refused]:
        print(f"refused            {line}")
    return 0


def _model_show(args: argparse.Namespace) -> int:
    from ..registry import MANIFEST, resolve

    settings, root = _registry(args)
    name, version = _ref(args.ref)
    model_dir = resolve(root, name, version or "latest")
    manifest, problem = _inspect(model_dir)
    if manifest is None:
        raise _usage(f"{model_dir / MANIFEST}: {problem}")
    served, _ = _served(settings, root)
    roles = [f"{role} of the configuration" for role in served.get((name, model_dir.name), [])]
    pointer = _pointer(root, name)
    roles.append("the champion pointer names it" if pointer == model_dir.name else
                 f"the champion pointer names {pointer}" if pointer else "no champion pointer")
    source = manifest.training.get("threshold")
    how = f" ({source['source']})" if isinstance(source, dict) and "source" in source else ""
    print(f"{manifest.name} {manifest.version}  ({model_dir})")
    for key, value in [
        ("serving", "; ".join(roles)),
        ("files", f"REFUSED: {problem}" if problem else
         f"ok: {manifest.model_file} ({manifest.format}), sha256 {manifest.sha256}"),
        ("created", manifest.created or "-"), ("threshold", f"{manifest.threshold:.4f}{how}"),
        ("features", f"{len(manifest.features)}, in order: {', '.join(manifest.features)}"),
        ("training", _figures(manifest.training)),
    ]:
        print(f"  {key:<10}  {value}")
    print(f"training, as {MANIFEST} records it:")
    print(json.dumps(manifest.training, indent=2))
    return 0


def _model_promote(args: argparse.Namespace) -> int:
    from ..adapters.xgboost import XGBoostModel
    from ..errors import ModelError
    from ..registry import CHAMPION, FOLLOWS_CHAMPION, promote, read_manifest, resolve

    settings, root = _registry(args)
    name, version = _ref(args.ref)
    if version is None:
        raise _usage(f"model promote {args.ref}: give NAME:VERSION")
    refs = settings.model.refs()
    follows = [i for i, (n, v) in enumerate(refs) if n == name and v in FOLLOWS_CHAMPION]

    def check(model_dir: Path) -> None:
        if args.config is None or not follows:
            XGBoostModel.load(model_dir, nthread=1, backend="xgboost")
            return
        from ..service.app import load_models

        load_models(settings, [model_dir if i in follows else resolve(root, n, v)
                               for i, (n, v) in enumerate(refs)])

    try:
        before = promote(root, name, version, check)
    except StreamInferError as exc:
        raise ModelError(f"{name}:{version} not promoted, the champion pointer is unchanged: "
                         f"{exc}") from None
    manifest = read_manifest(root / name / version)
    print(f"promoted {name} {version}: {root / name / CHAMPION} names {version} (before: "
          f"{before or 'no pointer, latest was the highest version'})")
    print(f"  checked    sha256, not a pickle, XGBoost loads it, its feature order is the "
          f"manifest's ({len(manifest.features)} features)"
          f"{', with the configuration' if args.config and follows else ''}")
    print(f"  threshold  {manifest.threshold:.4f}")
    when = (f"within model.reload_poll_s ({settings.model.reload_poll_s:g} s) or at once on "
            f"SIGHUP" if settings.model.reload_poll_s else "on SIGHUP")
    if args.config is None:
        print(f"  serving    services on {name}:latest or {name}:champion swap to it at "
              f"their next reload (model.reload_poll_s, or SIGHUP)")
    elif follows:
        role = "champion" if 0 in follows else "shadow"
        print(f"  serving    a service with {args.config} serves it as {role} from its next "
              f"reload: {when}")
    else:
        print(f"  serving    note: {args.config} does not follow {name}'s pointer "
              f"({_configured(args, settings, root)})")
    return 0


def _registry(args: argparse.Namespace) -> tuple[Settings, Path]:
    """The settings (``--config``, else the defaults and environment) and the models
    directory (``--models-dir``, else the settings')."""
    settings = _settings(args)
    return settings, Path(args.models_dir or settings.model.dir)


def _ref(text: str) -> tuple[str, str | None]:
    """``NAME[:VERSION]`` -> ``(NAME, VERSION or None)``."""
    name, _, version = text.partition(":")
    if not name or ":" in version:
        raise _usage(f"{text!r}: expected NAME or NAME:VERSION")
    return name, version or None


def _served(settings: Settings, root: Path) -> tuple[dict[tuple[str, str], list[str]],
                                                      list[str]]:
    """The roles each (name, version) has for a service with ``settings`` now, and the
    references it cannot resolve."""
    from ..registry import resolve

    served: dict[tuple[str, str], list[str]] = {}
    unresolved = []
    for i, (name, version) in enumerate(settings.model.refs()):
        role = "champion" if i == 0 else "shadow"
        try:
            served.setdefault((name, resolve(root, name, version).name), []).append(role)
        except StreamInferError as exc:
            unresolved.append(f"{role} {name}:{version}: {exc}")
    return served, unresolved


def _configured(args: argparse.Namespace, settings: Settings, root: Path) -> str:
    """What the configuration serves from ``root``, in one line."""
    from ..registry import resolve

    parts = []
    for i, (name, version) in enumerate(settings.model.refs()):
        try:
            now = resolve(root, name, version).name
        except StreamInferError:
            now = "nothing"
        parts.append(f"{'champion' if i == 0 else 'shadow'} {name}:{version} -> {now}")
    return f"{'; '.join(parts)}  ({args.config or 'default settings'})"


def _pointer(root: Path, name: str) -> str | None:
    """The version ``name``'s champion pointer names, or why it cannot be read."""
    from ..registry import champion

    try:
        return champion(root, name)
    except StreamInferError as exc:
        return f"unreadable ({exc})"


def _inspect(model_dir: Path) -> tuple[Manifest | None, str | None]:
    """The manifest (None if unreadable) and why the version is refused (None if it passes
    :func:`~stream_infer.registry.load_verified`)."""
    from ..registry import load_verified, read_manifest

    try:
        return load_verified(model_dir).manifest, None
    except StreamInferError as exc:
        try:
            return read_manifest(model_dir), str(exc)
        except StreamInferError:
            return None, str(exc)


def _figures(training: dict[str, object]) -> str:
    """A training summary's key figures: the test rows' AUC and average precision."""
    registered = training.get("registered_from")
    if isinstance(registered, dict):
        return f"registered from {registered.get('file', '?')}"
    figures = [f"{label} {value:.4f}" for label, value in
               (("AUC", training.get("auc")), ("AP", training.get("average_precision")))
               if isinstance(value, float)]
    rows, positives = training.get("test_rows"), training.get("test_positives")
    if isinstance(rows, int):
        figures.append(f"{rows:,} rows" + (f", {positives:,} positives"
                                           if isinstance(positives, int) else ""))
    return f"test {', '.join(figures)}" if figures else "-"


def _table(rows: list[list[str]], right: Collection[int] = ()) -> list[str]:
    """Rows as aligned columns (``right``: the right-aligned ones)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                      for i, (cell, w) in enumerate(zip(row, widths, strict=True))).rstrip()
            for row in rows]
