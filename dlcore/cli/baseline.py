"""The `baseline` subcommand of the DL Lab CLI: the lesson's random forest, from the shell.

    python -m dlcore baseline                       # 100 trees on MNIST pixels
    python -m dlcore baseline --dataset digits --features handmade --trees 50 --json

Prints `Random Forest Accuracy: 0.9705` and a timing line, or one JSON object with --json.
Exit codes: 0 done, 2 bad arguments or a dataset that cannot be loaded, 1 an I/O error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from typing import Any

from dlcore.cli.main import error_line
from dlcore.engine.baselines import FEATURE_KINDS, ForestParams, fit_forest
from dlcore.engine.dataset import DatasetError


def register(subparsers: Any) -> None:
    """Add the `baseline` subcommand to an argparse subparsers object; it sets `func(args) -> int`."""
    p = subparsers.add_parser(
        "baseline", help="fit the random-forest baseline and print its test accuracy",
        description="A RandomForestClassifier on the training split a network would use, "
                    "tested on the whole test set. Finished results are cached in "
                    "$DLLAB_HOME/baselines.")
    p.add_argument("--dataset", default="mnist", metavar="NAME", help="dataset name (default mnist)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="read the dataset from this folder instead of the usual places")
    p.add_argument("--features", default="pixels", metavar="KIND",
                   help=f"what the trees see: {' or '.join(FEATURE_KINDS)} (default pixels)")
    p.add_argument("--trees", type=int, default=100, metavar="N", help="number of trees (100)")
    p.add_argument("--max-depth", type=int, default=None, metavar="N",
                   help="deepest a tree may grow (default unlimited)")
    p.add_argument("--max-features", default="sqrt", metavar="X",
                   help="features tried per split: sqrt, log2, a fraction like 0.3 or a count")
    p.add_argument("--random-state", type=int, default=42, metavar="N", help="forest seed (42)")
    p.add_argument("--train-subset", type=int, default=0, metavar="N",
                   help="train on this many images, drawn as the network draws them (0 = all)")
    p.add_argument("--seed", type=int, default=42, metavar="N",
                   help="the split seed, the network's train.seed (default 42)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.set_defaults(func=handler)


def _max_features(text: str) -> str | float | int:
    text = text.strip().lower()
    if text in ("sqrt", "log2"):
        return text
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text  # validate() names it


def handler(args: argparse.Namespace) -> int:
    """Fit (or fetch from the cache) and print; returns the exit code."""
    params = ForestParams(n_estimators=args.trees, max_depth=args.max_depth,
                          max_features=_max_features(args.max_features),
                          random_state=args.random_state, features=args.features)
    try:
        params.validate()
        if args.train_subset < 0:
            raise ValueError(f"train_subset: {args.train_subset} is out of range; allowed 0 "
                             "(all) or a positive number of images")
    except ValueError as exc:
        return _fail(str(exc).replace("n_estimators:", "--trees:"), 2)
    try:
        from dlcore.engine.data import CLI_FALLBACK_HINT, load_dataset, load_with_fallback

        if args.data_dir:
            dataset = load_dataset(args.dataset, args.data_dir)
        else:
            dataset, note = load_with_fallback(args.dataset)
            if note:
                print(f"{note} {CLI_FALLBACK_HINT}", file=sys.stderr)
    except (DatasetError, ValueError) as exc:
        return _fail(str(exc), 2)
    except ImportError as exc:
        return _fail(f"the dataset loaders are not available ({exc})", 1)
    try:
        result = fit_forest(dataset, params, train_subset=args.train_subset, seed=args.seed,
                            use_cache=not args.no_cache)
    except ValueError as exc:
        return _fail(str(exc), 2)
    except OSError as exc:
        return _fail(str(exc), 1)
    if args.json:
        print(json.dumps({
            "dataset": result.dataset, "accuracy": result.accuracy,
            "per_class_accuracy": [None if math.isnan(v) else v for v in result.per_class_accuracy],
            "fit_seconds": round(result.fit_seconds, 4),
            "predict_seconds": round(result.predict_seconds, 4), "tree_nodes": result.tree_nodes,
            "train_size": result.train_size, "from_cache": result.from_cache,
            "status": result.status, "params": dataclasses.asdict(result.params)}))
    else:
        print(f"Random Forest Accuracy: {result.accuracy:.4f}")
        cached = " (from cache; times are the original fit's)" if result.from_cache else ""
        print(f"fit {result.fit_seconds:.2f} s, predict {result.predict_seconds:.2f} s, "
              f"{result.tree_nodes:,} tree nodes, {result.train_size:,} training images{cached}")
    return 0


def _fail(message: str, code: int) -> int:
    error_line(message)
    return code
