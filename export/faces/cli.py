"""``python -m export faces <subcommand>``.

Subcommands: prepare, teacher, train, heads, evaluate, release, report.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sdk.paths import REPO_ROOT, SHARED_DIR

RUNS = REPO_ROOT / "runs" / "faces"
FACES = SHARED_DIR / "data" / "faces"


def _prepare(args: argparse.Namespace) -> int:
    from . import data

    if Path(args.cache).exists() and not args.force:
        d = data.load_cache(args.cache)
        diffs = data.cache_mismatch(d, args.root, data.TRAIN_SETS, args.limit)
        if diffs:
            print(f"python -m export faces prepare: error: {args.cache} was made from other "
                  f"photos ({'; '.join(diffs)}): give --force to rebuild it", file=sys.stderr)
            return 2
        print(f"{args.cache} exists (use --force to rebuild)")
    else:
        d = data.build_cache(args.cache, root=args.root, limit=args.limit)
    print(f"aligned {len(d['images'])} of {int(d['n_scanned'])} photos "
          f"({int(d['n_failed'])} without a detected face), {len(d['names'])} identities")
    train, hold = data.split_identities(d["labels"], args.holdout, seed=args.seed,
                                        sources=d["sources"])
    split = Path(args.pairs).with_name("split.json")
    new_holdout = [str(d["names"][i]) for i in hold]
    if split.is_file() and not args.force:
        # runs trained with the old split hold its identities out: moving it would put
        # identities they trained on into every later evaluation
        old = json.loads(split.read_text()).get("holdout")
        if old != new_holdout:
            print(f"python -m export faces prepare: error: {split} holds another split "
                  "(trained runs rely on it): give --force to replace it", file=sys.stderr)
            return 2
    summary = data.write_pairs(args.pairs, d, hold, root=args.root, seed=args.seed,
                               pairs_per_fold=args.pairs_per_fold)
    split.write_text(json.dumps({"holdout": new_holdout,
                                 "seed": args.seed}, indent=1))
    print(f"held out {len(hold)} identities -> {args.pairs} {summary}; split in {split}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m export faces``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m export faces",
                                     description="train, evaluate and export the face encoder")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare",
                       help="detect+align the training photos once, write held-out pairs")
    p.add_argument("--root", default=str(FACES))
    p.add_argument("--cache", default=str(RUNS / "aligned.npz"))
    p.add_argument("--pairs", default=str(RUNS / "pairs.txt"))
    p.add_argument("--holdout", type=float, default=0.1)
    p.add_argument("--pairs-per-fold", type=int, default=150)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first N photos (tests)")
    p.add_argument("--force", action="store_true",
                   help="rebuild the cache and replace a split.json that differs")
    p.set_defaults(func=_prepare)

    for name, module in (("teacher", "teacher"), ("train", "train"), ("heads", "heads"),
                         ("evaluate", "evaluate"), ("release", "release"),
                         ("report", "report")):
        sp = sub.add_parser(name, help=f"see `python -m export faces {name} -h`", add_help=False)
        sp.set_defaults(module=module)

    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] in ("teacher", "train", "heads", "evaluate", "release", "report"):
        import importlib

        module = importlib.import_module(f"export.faces.{argv[0]}")
        return int(module.main(argv[1:]) or 0)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
