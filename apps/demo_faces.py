"""Face demo: enroll a few people, then run the door lock over photos of them and of strangers.

    python -m apps.demo_faces [--shared ../shared] [--data DIR] [--people 4]
                              [--model PATH] [--out DIR]

Identities come from ``master.csv`` (deepface-pairs: photos joined by its
"Yes" pairs) or, for other sets, from one folder per person (att-orl, yale).
The first ``--people`` identities are enrolled from ``--enroll-photos``
photos each (photos with no face, several faces or a poor face are skipped,
as the enrollment refuses them); the lock then runs (``apps/door_lock.py run``) over
a folder holding their other photos and photos of everyone else (strangers).
Each decision is printed with its distance, followed by a summary against
the truth.  Only links to the photos and the gallery of embeddings are
written, under ``--out`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import sys

import cv2
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file (python apps/demo_faces.py): find the packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sdk  # noqa: E402
from apps import door_lock  # noqa: E402
from sdk.errors import ModelNotFoundError, SdkError  # noqa: E402
from sdk.paths import SHARED_DIR, YUNET_FILE, yunet_path  # noqa: E402

#: Evaluation photos used by default, under --shared.
DEFAULT_DATA = Path("data") / "faces" / "deepface-pairs"


class DemoDataError(SdkError, ValueError):
    """The demo's photo folder is absent or holds too few identities."""


def identities(data: Path) -> dict[str, list[Path]]:
    """Person -> photos, sorted by name; the largest identities first."""
    if not data.is_dir():
        raise DemoDataError(f"{data}: no such folder (evaluation photos live in ../shared, "
                            "see its README); pass --data")
    groups: dict[str, list[Path]] = {}
    csv_path = data / "master.csv"
    if csv_path.is_file():
        parent: dict[str, str] = {}

        def root(x: str) -> str:
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        with open(csv_path, newline="") as f:
            for row in csv.DictReader(f):
                a, b = root(row["file_x"]), root(row["file_y"])
                if row["Decision"].strip().lower() == "yes" and a != b:
                    parent[max(a, b)] = min(a, b)
        for name in parent:
            if (data / name).is_file():
                groups.setdefault(root(name), []).append(data / name)
        groups = {f"person-{Path(k).stem}": v for k, v in groups.items()}
    else:
        for folder in sorted(p for p in data.iterdir() if p.is_dir()):
            photos = [p for p in folder.iterdir() if p.suffix.lower() in door_lock.IMAGE_SUFFIXES]
            if photos:
                groups[folder.name] = photos
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return {k: sorted(v, key=lambda p: p.name) for k, v in ordered}


def _link(src: Path, dst: Path) -> None:
    try:
        os.symlink(src.resolve(), dst)
    except OSError:  # file systems without symlinks: a copy in the temporary folder
        shutil.copyfile(src, dst)


def _find_yunet(explicit: str | None, shared: Path) -> Path:
    """YuNet as ``sdk.paths`` finds it, else under ``--shared``."""
    try:
        return yunet_path(explicit)
    except ModelNotFoundError:
        candidate = shared / "models" / "yunet" / YUNET_FILE
        if explicit or not candidate.is_file():
            raise
        return candidate


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on an error, with its message)."""
    # OpenCV 5 warns on every YuNet load that its new graph engine ignores the target
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    parser = argparse.ArgumentParser(prog="demo_faces", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", default=str(SHARED_DIR),
                        help="third-party data folder (default: ../shared)")
    parser.add_argument("--data", default=None,
                        help="master.csv folder or one folder per person "
                             f"(default: SHARED/{DEFAULT_DATA.as_posix()})")
    parser.add_argument("--people", type=int, default=4, help="people to enroll (default 4)")
    parser.add_argument("--enroll-photos", type=int, default=1,
                        help="photos per enrolled person (default 1: one-shot)")
    parser.add_argument("--probes", type=int, default=3,
                        help="photos per person shown to the lock (default 3)")
    parser.add_argument("--model", default=None,
                        help="face encoder (default: models/faces/face_encoder_int8.onnx)")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--yunet", default=None,
                        help="YuNet .onnx (default: models/yunet/, else SHARED/models/yunet/)")
    parser.add_argument("--threshold", type=float, default=None, help="override the model's τ")
    parser.add_argument("--operating-point", default=door_lock.DEFAULT_OPERATING_POINT,
                        metavar="NAME",
                        help="the lock's threshold: one of the model's named ones "
                             f"(default {door_lock.DEFAULT_OPERATING_POINT}), or "
                             f"'{door_lock.MODEL_TAU}' for the file's best-accuracy τ")
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.people < 1 or args.enroll_photos < 1 or args.probes < 1:
        parser.error("--people, --enroll-photos and --probes must be >= 1")

    data = Path(args.data) if args.data else Path(args.shared) / DEFAULT_DATA
    try:
        yunet = _find_yunet(args.yunet, Path(args.shared))
        model_args = [a for k, v in (("--model", args.model), ("--backend", args.backend),
                                     ("--threshold", args.threshold),
                                     ("--operating-point", args.operating_point),
                                     ("--yunet", yunet))
                      if v is not None for a in (k, str(v))]
        # fail early and clearly when the released model is not there yet
        sdk.FaceVerifier.create(args.model, yunet, backend=args.backend,
                                threshold=args.threshold,
                                operating_point=door_lock.chosen_operating_point(args)).close()
        people = identities(data)
        if len(people) < args.people + 1:
            raise DemoDataError(f"{data}: {len(people)} identities; the demo needs "
                                f"--people ({args.people}) + at least one stranger")
    except SdkError as exc:
        print(f"demo_faces: error: {exc}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out) if args.out else Path(tmp)
        probes = work / "door"
        probes.mkdir(parents=True, exist_ok=True)
        # an earlier run's probes (all named PERSON__PHOTO) would be judged again, and
        # linking over them fails: start from an empty door
        for old in probes.glob("*__*"):
            if old.is_symlink() or old.is_file():
                old.unlink()
        gallery = work / "gallery.npz"
        if gallery.exists():
            gallery.unlink()
        audit = work / "audit.jsonl"
        if audit.exists():
            audit.unlink()

        print(f"== enrolling {args.people} people from {data}")
        truth: dict[str, str | None] = {}
        enrolled = []
        for name, photos in people.items():
            if len(enrolled) == args.people:
                break
            if len(photos) <= args.enroll_photos:
                continue  # nothing would be left to show the lock: keep them a stranger
            used = 0
            rest = list(photos)
            while rest and used < args.enroll_photos:
                photo = rest.pop(0)
                status = door_lock.main(["enroll", name, str(photo), "--gallery", str(gallery),
                                         *model_args])
                used += status == 0
            if used == 0 or not rest:
                if used:  # enrolled, but no photo left to show the lock: take them out
                    door_lock.main(["remove", name, "--gallery", str(gallery), *model_args])
                continue
            enrolled.append(name)
            for photo in rest[:args.probes]:
                _link(photo, probes / f"{name}__{photo.name}")
                truth[f"{name}__{photo.name}"] = name
        if not enrolled:
            print("demo_faces: error: no person could be enrolled", file=sys.stderr)
            return 2
        for name, photos in people.items():
            if name in enrolled:
                continue
            for photo in photos[:args.probes]:
                _link(photo, probes / f"stranger-{name}__{photo.name}")
                truth[f"stranger-{name}__{photo.name}"] = None

        print(f"\n== the door: {len(truth)} photos ({sum(v is not None for v in truth.values())}"
              f" of enrolled people, {sum(v is None for v in truth.values())} of strangers); "
              "cooldown and hold off so that every photo gets a decision")
        status = door_lock.main(["run", "--source", str(probes), "--gallery", str(gallery),
                                 "--audit", str(audit), "--max-failures", "1000000",
                                 "--cooldown", "0", "--hold", "0", *model_args])
        if status != 0:
            return status
        records = [json.loads(line) for line in audit.read_text().splitlines()]
    print_summary(records, truth)
    return 0


def print_summary(records: list[dict], truth: dict[str, str | None]) -> None:
    """Counts of right and wrong decisions against the known identities."""
    rows = {"enrolled person let in": 0, "enrolled person refused": 0,
            "let in as someone else": 0, "stranger refused": 0, "stranger let in": 0,
            "not judged (locked)": 0}
    # the "unlocking" record written before each unlock is no decision: the frame's follows
    records = [r for r in records if r["decision"] != door_lock.UNLOCKING]
    for r in records:
        expected = truth.get(r["frame"])
        if r["decision"] not in (door_lock.UNLOCK, door_lock.DENY):
            rows["not judged (locked)"] += 1
        elif expected is None:
            rows["stranger let in" if r["decision"] == door_lock.UNLOCK
                 else "stranger refused"] += 1
        elif r["decision"] == door_lock.DENY:
            rows["enrolled person refused"] += 1
        else:
            rows["enrolled person let in" if r["name"] == expected
                 else "let in as someone else"] += 1
    print("\n== summary")
    for k, v in rows.items():
        print(f"  {k:28s} {v}")
    wrong = rows["stranger let in"] + rows["let in as someone else"]
    print(f"  wrong unlocks: {wrong} of {len(records)} photos")


if __name__ == "__main__":
    sys.exit(main())
