"""Door lock: enroll people, then open the door for them and nobody else.

    python -m apps.door_lock enroll NAME IMAGE... [--gallery FILE]
    python -m apps.door_lock enroll NAME --source CAMERA_INDEX|VIDEO|FOLDER|IMAGE [--shots N]
        [--every K]
    python -m apps.door_lock run --source CAMERA_INDEX|VIDEO|FOLDER|IMAGE [--gallery FILE]
        [--unlock-cmd CMD] [--hook-timeout S] [--cooldown S] [--max-failures N]
        [--attempt-seconds S] [--hold S] [--min-face PX] [--no-quality-check]
        [--audit FILE.jsonl]
    python -m apps.door_lock list|remove NAME [--gallery FILE]
    python -m apps.door_lock calibrate --source FOLDER [--far 1e-4] [--json FILE] [--plot PNG]

A camera is ``N``, ``camera`` or ``camera:N``, as for apps/stylize_camera.py
(apps/sources.py).

Each frame: detect -> identify (sdk.Gallery) -> unlock hook.  The hook is a
shell command (it gets the person in $DOOR_NAME and the distance in
$DOOR_DISTANCE, never spliced into the command line) or, without one, the
printed ``UNLOCK name`` line.  The lock fails closed: an unreadable frame, a
model error or a failing hook all leave the door locked.  After an unlock the
door stays open for ``--hold`` seconds without re-running the hook; its frames are
logged as ``open``, naming nobody (only a frame in which a person was identified
names them).  Times are the source's: a camera's clock, a video's frame times
(frame index / fps, however fast it is read); a folder's photos are separate
events, so no hold carries from one photo to the next.  After
``--max-failures`` failed attempts in a row (refusals within
``--attempt-seconds`` of each other are one attempt; each refused photo of a folder
is one) it ignores faces for ``--cooldown`` seconds.  A face that is too small, turned
away, blurred, badly exposed or cut by the picture's edge (``sdk.QualityOptions``) is not
judged: the frame is logged as
``poor_face`` with what to change, and is no failed attempt; ``enroll`` refuses
such photos and skips such camera frames.  Every decision can be appended to a
JSONL audit log (time, source, frame, decision, name, distance, threshold; never
images); an unlock's record is on disk before the door opens, and a log that cannot be
written keeps the door locked.  A camera that stops giving frames ends ``run`` with exit
status 1 (a supervisor can restart it); Ctrl-C or SIGTERM during an unlock command kills
it first.

The threshold is the model's strict operating point ``far_1e-4`` (at most one
false accept in 10,000 different-person pairs of the held-out photos it was
calibrated on) unless ``--operating-point`` or ``--threshold`` says otherwise: a
door should refuse a stranger before it welcomes a friend.

There is no liveness check: a print of an enrolled person's photo gets in about as
often as the person (docs/FACES.md, "Printed photos"); use the lock as one factor.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple, TextIO

if __package__ in (None, ""):  # run as a file (python apps/door_lock.py): find the sdk package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import sdk  # noqa: E402
from sdk.errors import (CalibrationError, FaceError, GalleryError, NoFaceError,  # noqa: E402
                        OtherExportError, PoorFaceQualityError, SdkError,
                        ThresholdUnavailableError)
from sdk.faces.quality import QualityOptions, assess_face  # noqa: E402

# re-exported: IMAGE_SUFFIXES and SourceError are used from here (demo_faces, scripts)
from apps.sources import (CAMERA, FOLDER, IMAGE, IMAGE_SUFFIXES, VIDEO,  # noqa: E402,F401
                          SourceError, source_kind)

DEFAULT_GALLERY = "gallery.npz"
# a door must bound false accepts, not maximise accuracy: strict by default
DEFAULT_OPERATING_POINT = "far_1e-4"
#: A stricter named threshold for galleries with several photos per person (files released
#: since session 17 carry it): the door suggests it, never switches to it by itself.
STRICTER_POINT = "far_1e-5"
MODEL_TAU = "model"
#: Smallest face (box, shorter side, pixels) the lock judges or enrols from a camera: the
#: faces of the evaluation sets are larger (att-orl's, the smallest, are about 57-77 px).
MIN_FACE_PX = 48.0

#: Decisions written to the audit log.  Only "unlock" opens the door; "unlocking" is the
#: record written (and synced) before the door is opened, followed by the frame's "unlock"
#: or "unlock_failed" record.
UNLOCK, DENY, NO_FACE, COOLDOWN, ERROR, UNLOCK_FAILED, OPEN, TOO_SMALL, POOR_FACE = (
    "unlock", "deny", "no_face", "cooldown", "error", "unlock_failed", "open", "too_small",
    "poor_face")
UNLOCKING = "unlocking"
#: Seconds the door stays open after an unlock, unless --hold says otherwise.
DEFAULT_HOLD_S = 5.0
#: Refusals closer together than this (seconds) are one failed attempt (camera, video).
DEFAULT_ATTEMPT_S = 1.0
#: --every of `enroll --source` when not given: a camera or video gets half a second of a
#: 30 fps stream between shots (a new pose); a folder's or image's files are each a photo
#: someone chose, so every one is considered.
DEFAULT_EVERY = {CAMERA: 15, VIDEO: 15, FOLDER: 1, IMAGE: 1}


def face_px(face) -> float:
    """A detected face's size for the ``--min-face`` rule: its box's shorter side."""
    return float(min(face.box[2:4]))


# --- frames ---------------------------------------------------------------------


class Frame(NamedTuple):
    """One frame of a --source (:func:`iter_frames`)."""

    frame_id: str               # the file's name, or the frame's index
    image: np.ndarray | None    # BGR; None when unreadable
    time: float | None          # seconds on the source's clock; None: a photo, its own event


def iter_frames(source: str) -> Iterator[Frame]:
    """The frames of a camera index, a video file, an image or a folder of images
    (sorted by name).

    A camera's frames are timed by the monotonic clock when read, a video's by their
    index / its frame rate (so a video read faster than real time keeps its own
    times); an image's files have no time (``None``): each is its own event.

    Raises:
        SourceError: the source cannot be opened, a folder holds no images, or a
            video reports no frame rate (its frames could not be timed).
    """
    kind, ref = source_kind(source)
    path = Path(source)
    if kind in (FOLDER, IMAGE):
        files = [path] if kind == IMAGE else sorted(
            p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SourceError(f"{path}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for p in files:
            yield Frame(p.name, cv2.imread(str(p), cv2.IMREAD_COLOR), None)
        return
    cap = cv2.VideoCapture(ref)
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"cannot open --source {source!r} with OpenCV")
    try:
        fps = cap.get(cv2.CAP_PROP_FPS) if kind == VIDEO else None
        if fps is not None and not (np.isfinite(fps) and fps > 0):
            raise SourceError(f"--source {source!r} reports no frame rate ({fps!r}), so its "
                              "frames cannot be timed; re-encode it with one")
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield Frame(str(index), frame, index / fps if fps else time.monotonic())
            index += 1
    finally:
        cap.release()


# --- the lock -------------------------------------------------------------------


@dataclass(frozen=True)
class LockOptions:
    """Policy of :class:`DoorLock`.

    Attributes:
        unlock_cmd: shell command run to open the door; ``None`` prints instead.
        max_failures: failed attempts in a row that start a cooldown.
        cooldown_s: seconds faces are ignored (door locked) after that.
        min_face_px: the largest face's box must be at least this many pixels on its
            shorter side to be judged; a smaller one (someone passing far behind the
            door) is logged as ``too_small`` and is not a failed attempt, so passers-by
            cannot start a cooldown that locks out the next resident.  Its embedding
            would come from a few dozen pixels enlarged to 112 anyway.
        hold_s: seconds the door stays open after an unlock: frames in that time
            are not judged, run no hook (a camera would otherwise fire the unlock
            command on every frame of the person walking through) and are logged
            as ``open`` with ``name`` None and ``opened_for`` the person whose
            unlock holds the door: a frame never names a person not identified
            in it (a stranger may walk through behind them).
        attempt_s: refusals closer together than this are one failed attempt.  A
            live camera refuses the same face on many consecutive frames while the
            person settles in front of it; counting frames would start the cooldown
            within a tenth of a second.  0 counts every refused frame.
        hook_timeout_s: an unlock command running longer is killed, with every
            program it started, and counts as failed (as does one that exits non-zero:
            its programs are killed too).
        quality: limits a face must meet to be judged (``sdk.QualityOptions``); a
            face that misses one is logged as ``poor_face`` with its problems and
            is not a failed attempt: the camera waits for a better frame.  Skipping
            never lets more strangers in (it only removes decisions) and spares
            residents refusals on frames the encoder would place badly
            (docs/FACES.md, "Face quality").  ``None`` judges every face.
    """

    unlock_cmd: str | None = None
    max_failures: int = 3
    cooldown_s: float = 30.0
    hook_timeout_s: float = 10.0
    attempt_s: float = DEFAULT_ATTEMPT_S
    hold_s: float = DEFAULT_HOLD_S
    min_face_px: float = MIN_FACE_PX
    quality: QualityOptions | None = field(default_factory=QualityOptions)

    def __post_init__(self) -> None:
        # written as "not (x >= 0)": NaN fails every comparison, and a NaN cooldown or
        # hook timeout would quietly switch the cooldown or the timeout off
        if not (self.max_failures >= 1):
            raise ValueError(f"max_failures must be >= 1, got {self.max_failures}")
        if not (0 <= self.cooldown_s < math.inf):
            raise ValueError(f"cooldown must be >= 0 seconds, got {self.cooldown_s}")
        if not (0 <= self.min_face_px < math.inf):
            raise ValueError(f"min face size must be >= 0 pixels, got {self.min_face_px}")
        if not (0 <= self.hold_s < math.inf):
            raise ValueError(f"hold time must be >= 0 seconds, got {self.hold_s}")
        if not (0 <= self.attempt_s < math.inf):
            raise ValueError(f"attempt time must be >= 0 seconds, got {self.attempt_s}")
        if not (0 < self.hook_timeout_s < math.inf):
            raise ValueError(f"hook timeout must be > 0 seconds, got {self.hook_timeout_s}")


class Crop(NamedTuple):
    aligned: np.ndarray   # 112x112 BGR, as the encoder takes it
    problems: list[str]   # quality limits the face misses; empty: judge it


def crop_face(verifier: sdk.FaceVerifier, image: np.ndarray, face,
              quality: QualityOptions | None) -> Crop:
    """``face`` aligned once, for both the quality limits (none: no problems) and the
    encoder."""
    aligned = verifier.align(image, face)
    if quality is None:
        return Crop(aligned, [])
    return Crop(aligned, assess_face(image, face, aligned).problems(quality))


class DoorLock:
    """Decides, frame by frame, whether to open; locked unless a known face is seen.

    Hold, cooldown and attempt times are measured on ``clock`` (monotonic seconds; a
    parameter so they can be tested) unless :meth:`process` is given the frame's own
    time (a video's).
    """

    def __init__(self, gallery: sdk.Gallery, options: LockOptions, *,
                 audit: TextIO | None = None, out: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.gallery = gallery
        self.options = options
        self._audit = audit
        self._out = out if out is not None else sys.stdout
        self._clock = clock
        self._failures = 0
        self._last_failure = float("-inf")
        self._locked_until = float("-inf")
        self._open_until = float("-inf")
        self._opened_for: str | None = None

    def _unlock(self, name: str, distance: float) -> str | None:
        """Run the hook; the error text when it failed (the door then stays locked)."""
        cmd = self.options.unlock_cmd
        if cmd is None:  # no command: the printed "UNLOCK name" decision line is the hook
            return None
        env = {**os.environ, "DOOR_NAME": name, "DOOR_DISTANCE": f"{distance:.6f}"}
        # stderr to a file, not a pipe: a program the hook leaves running in the background
        # (a relock after a delay) would hold a pipe open and make a finished hook look hung
        with tempfile.TemporaryFile() as err_file:
            proc = None
            try:
                # its own session, so a failed hook is killed with everything it started:
                # nothing may open the door after the lock has logged a failure.  Ctrl-C or
                # SIGTERM while it starts is held until Popen has returned (raised inside
                # Popen, it would leave no process to kill, and the hook running)
                with signals_held():
                    proc = subprocess.Popen(cmd, shell=True, env=env,
                                            stdout=subprocess.DEVNULL, stderr=err_file,
                                            start_new_session=True)
                code = _wait(proc, self.options.hook_timeout_s)
            except OSError as exc:
                if proc is not None:
                    _kill_group(proc)
                    raise
                return f"unlock command failed to start: {exc}"
            except subprocess.TimeoutExpired:
                return (f"unlock command timed out after {self.options.hook_timeout_s:g} s; "
                        + _kill_group(proc))
            except BaseException:
                # Ctrl-C (or any error) while the hook runs: the hook is in its own session
                # and would not get the signal; left running, it could open the door after
                # the lock has exited
                if proc is not None:
                    _kill_group(proc)
                raise
            if code != 0:
                killed = _kill_group(proc)
                err_file.seek(0)
                tail = err_file.read().decode(errors="replace").strip()[-200:]
                return f"unlock command exited with {code} ({killed}): {tail}"
        return None

    def process(self, frame: np.ndarray | None, frame_id: str, source: str, *,
                at: float | None = None) -> dict:
        """Decide on one frame; returns (and logs) the audit record.

        ``at``: the frame's time in seconds on the source's own clock (a video's frame
        times), for the hold, the cooldown and attempts; ``None``: now on ``clock``.
        Give it for every frame or for none: the two clocks do not mix.
        """
        record: dict = {"time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                        "source": source, "frame": frame_id, "decision": ERROR, "name": None,
                        "distance": None, "threshold": None}
        now = self._clock() if at is None else at
        try:
            record["threshold"] = self.gallery.threshold
            if now < self._open_until:
                # not judged: whoever is in this frame was not identified, so it names
                # nobody; the unlock it belongs to is said apart
                record["decision"] = OPEN
                record["opened_for"] = self._opened_for
                record["open_left_s"] = round(self._open_until - now, 3)
            elif now < self._locked_until:
                record["decision"] = COOLDOWN
                record["cooldown_left_s"] = round(self._locked_until - now, 3)
            elif frame is None:
                record["error"] = "unreadable frame"
            elif not (faces := self.gallery.verifier.detect(frame)):
                record["decision"] = NO_FACE
            elif (size := face_px(faces[0])) < self.options.min_face_px:
                record["decision"] = TOO_SMALL
                record["face_px"] = round(size, 1)
            elif (crop := crop_face(self.gallery.verifier, frame, faces[0],
                                    self.options.quality)).problems:
                record["decision"] = POOR_FACE
                record["problems"] = crop.problems
            else:  # the largest face is the one at the door
                embedding = self.gallery.verifier.embed_aligned(crop.aligned)
                result = self.gallery.identify_embedding(embedding, top_k=1)
                record["distance"] = result.distance
                if result.is_known:
                    record["name"] = result.name
                    # no unlock without its record: the attempt is on disk before the door
                    # moves, and a log that cannot be written (full disk) keeps it locked
                    self._write_audit({**record, "decision": UNLOCKING}, sync=True)
                    failed = self._unlock(result.name, result.distance)
                    if failed is None:
                        record["decision"] = UNLOCK
                        self._failures = 0
                        self._last_failure = float("-inf")
                        self._open_until = now + self.options.hold_s
                        self._opened_for = result.name
                    else:
                        record["decision"] = UNLOCK_FAILED
                        record["error"] = failed
                else:
                    record["decision"] = DENY
                    record["nearest"] = result.candidates[0].name
                    if now - self._last_failure >= self.options.attempt_s:  # a new attempt
                        self._failures += 1
                        self._last_failure = now
                    if self._failures >= self.options.max_failures:
                        self._locked_until = now + self.options.cooldown_s
                        self._failures = 0
                        self._last_failure = float("-inf")
                        record["cooldown_started_s"] = self.options.cooldown_s
        except Exception as exc:  # fail closed: whatever went wrong, the door stays locked
            record["decision"] = ERROR
            record["error"] = f"{type(exc).__name__}: {exc}"
        self._log(record)
        return record

    def _log(self, record: dict) -> None:
        d = record["distance"]
        extra = f"d={d:.4f} τ={record['threshold']:.4f}" if d is not None else ""
        if "face_px" in record:
            extra = f"face {record['face_px']:.0f} px < {self.options.min_face_px:.0f} px"
        if "problems" in record:
            extra = "; ".join(record["problems"])
        if record["name"]:
            who = record["name"]
        elif "opened_for" in record:
            who = f"(opened for {record['opened_for']}, {record['open_left_s']:g} s left)"
        elif "nearest" in record:
            who = f"(nearest: {record['nearest']})"
        else:
            who = ""
        err = f"[{record['error']}]" if "error" in record else ""
        try:
            self._write_audit(record)
        except OSError as exc:  # the decision stands (an unlock's record is already synced)
            err += f" [audit log not written: {exc}]"
        text = " ".join(t for t in (record["decision"].upper(), who, extra, err) if t)
        print(f"{record['frame']}: {text}", file=self._out, flush=True)

    def _write_audit(self, record: dict, sync: bool = False) -> None:
        """Append ``record`` to the audit log (if any); ``sync``: also to the disk."""
        if self._audit is None:
            return
        self._audit.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._audit.flush()
        if sync:
            try:
                fd = self._audit.fileno()
            except (AttributeError, io.UnsupportedOperation):  # an in-memory log
                return
            if stat.S_ISREG(os.fstat(fd).st_mode):  # a pipe or a terminal cannot be synced
                os.fsync(fd)


#: the signals that stop the lock (SIGTERM only where `run` turns it into an interrupt)
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM for the length of the block, then deliver them to the
    handlers they had (an interrupt is raised after the block, not inside it).  Only the
    main thread receives signals: elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread() or any(
            signal.getsignal(s) is None for s in _STOP_SIGNALS):  # a C handler: not ours
        yield
        return
    pending: list[int] = []
    try:
        # every handler is put back even when a signal arrives while they are
        with ExitStack() as restore:
            for s in _STOP_SIGNALS:
                restore.callback(signal.signal, s,
                                 signal.signal(s, lambda signum, frame: pending.append(signum)))
            yield
    finally:
        for s in dict.fromkeys(pending):
            signal.raise_signal(s)  # runs the restored handler now


#: how often a running hook is looked at (seconds): the longest it can run on after an
#: interrupt
_HOOK_POLL_S = 0.005


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """The hook's exit status, looked at every ``_HOOK_POLL_S``.  Not ``Popen.wait``: on
    Ctrl-C it waits up to a quarter of a second more for the child (which a hook in its
    own session never gets the signal to end), time enough to open the door."""
    deadline = time.monotonic() + timeout
    while (code := proc.poll()) is None:
        if time.monotonic() >= deadline:
            raise subprocess.TimeoutExpired(proc.args, timeout)
        time.sleep(_HOOK_POLL_S)
    return code


def _kill_group(proc: subprocess.Popen) -> str:
    """Kill a failed hook with every process it started (its session's group); says what
    was killed.  A Ctrl-C or SIGTERM meanwhile is held until it is done."""
    with signals_held():
        if hasattr(os, "killpg"):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:  # the shell and everything it started are gone
                pass
            proc.wait()
            return "it and the programs it started were killed"
        proc.kill()  # no process groups (Windows): only the shell can be reached
        proc.wait()
        return "it was killed (programs it started may still run)"


# --- commands -------------------------------------------------------------------


def _verifier(args: argparse.Namespace) -> sdk.FaceVerifier:
    return sdk.FaceVerifier.create(args.model, args.yunet, backend=args.backend,
                                   threads=args.threads, threshold=args.threshold,
                                   operating_point=chosen_operating_point(args))


def chosen_operating_point(args: argparse.Namespace) -> str | None:
    """The named threshold to use: none when τ is given or ``model`` is asked for."""
    if args.threshold is not None or args.operating_point == MODEL_TAU:
        return None
    return args.operating_point


def _load_gallery(args: argparse.Namespace, verifier: sdk.FaceVerifier) -> sdk.Gallery:
    return sdk.Gallery.load(args.gallery, verifier, accept_other_export=args.accept_other_export)


def _read_image(path: str) -> np.ndarray:
    image = cv2.imread(path, cv2.IMREAD_COLOR)
    if image is None:
        raise SourceError(f"{path}: cannot read this image")
    return image


#: Photos per person below which `enroll` suggests adding more (docs/FACES.md).
RECOMMENDED_PHOTOS = 3


@dataclass
class Shots:
    """What :func:`collect_shots` took, and what it did with the other frames."""

    embeddings: list[np.ndarray] = field(default_factory=list)
    looked_at: int = 0      # frames judged, shots included
    passed_over: int = 0    # frames within --every of the last shot, not judged
    rejected: dict[str, int] = field(default_factory=dict)  # why -> frames

    def reject(self, frame_id: str, why: str, out: TextIO, detail: str | None = None) -> None:
        """Count a judged frame refused for ``why`` and say so (with ``detail``) on ``out``."""
        self.rejected[why] = self.rejected.get(why, 0) + 1
        print(f"{frame_id}: skipped ({detail or why})", file=out, flush=True)

    def summary(self, unit: str, every: int) -> str:
        """"10 files looked at: 1 shot, 4 no face, ..." (``unit``: "file" or "frame") for
        the message of a source that ended before enough shots."""
        def n_of(n: int, what: str) -> str:
            return f"{n} {what}{'s' * (n != 1)}"

        parts = [n_of(len(self.embeddings), "shot")]
        parts += [f"{n} {why}" for why, n in sorted(self.rejected.items(), key=lambda kv: -kv[1])]
        text = f"{n_of(self.looked_at, unit)} looked at: " + ", ".join(parts)
        if self.passed_over:
            text += (f"; {self.passed_over} more passed over, fewer than --every {every} "
                     f"frames after a shot")
        return text


def collect_shots(verifier: sdk.FaceVerifier, frames: Iterable[Frame], shots: int, every: int,
                  out: TextIO, min_face_px: float = 0.0,
                  quality: QualityOptions | None = None) -> Shots:
    """Embeddings of the first ``shots`` frames that show exactly one face of at least
    ``min_face_px`` (box, shorter side) meeting ``quality``, taken at least ``every``
    frames apart (so a camera gets a moment of new pose or light between shots:
    identical frames add nothing to a gallery; 1 judges every frame).  Other frames are
    skipped, said so on ``out`` and counted by reason in the returned :class:`Shots`."""
    result = Shots()
    last = None
    for index, (frame_id, frame, _) in enumerate(frames):
        if last is not None and index - last < every:
            result.passed_over += 1
            continue
        result.looked_at += 1
        if frame is None:
            result.reject(frame_id, "unreadable", out)
            continue
        faces = verifier.detect(frame)
        if len(faces) != 1:
            # several faces: whose would it be? enrolment needs the person alone
            result.reject(frame_id, "no face" if not faces else "several faces", out,
                          None if not faces else f"{len(faces)} faces")
            continue
        if (size := face_px(faces[0])) < min_face_px:
            result.reject(frame_id, f"face under --min-face {min_face_px:g} px", out,
                          f"face {size:.0f} px < {min_face_px:.0f} px: come closer")
            continue
        if (crop := crop_face(verifier, frame, faces[0], quality)).problems:
            # "face turned sideways (yaw): 0.61, need ..." -> "face turned sideways"
            why = ", ".join(p.split(" (", 1)[0] for p in crop.problems)
            result.reject(frame_id, f"poor face ({why})", out, "; ".join(crop.problems))
            continue
        result.embeddings.append(verifier.embed_aligned(crop.aligned))
        last = index
        print(f"{frame_id}: shot {len(result.embeddings)}/{shots}", file=out, flush=True)
        if len(result.embeddings) == shots:
            break
    return result


def cmd_enroll(args: argparse.Namespace) -> int:
    with _verifier(args) as verifier:
        gallery = (_load_gallery(args, verifier) if Path(args.gallery).exists()
                   else sdk.Gallery(verifier))
        # before any photo is taken: a gallery of another export refuses new people
        gallery.check_can_enroll()
        if args.source is not None:
            kind, _ = source_kind(args.source)
            every = args.every if args.every is not None else DEFAULT_EVERY[kind]
            shots = collect_shots(verifier, iter_frames(args.source), args.shots, every,
                                  sys.stdout, args.min_face, quality_of(args))
            if len(shots.embeddings) < args.shots:  # all or nothing, like a list of photos
                unit = "file" if kind in (FOLDER, IMAGE) else "frame"
                raise NoFaceError(f"--source {args.source}: {len(shots.embeddings)} of "
                                  f"{args.shots} shots showed exactly one good face before it "
                                  f"ended ({shots.summary(unit, every)}); nothing enrolled")
            added = shots.embeddings
            n = gallery.enroll_embeddings(args.name, np.stack(added))
        else:
            added = [_read_image(p) for p in args.images]
            try:
                n = gallery.enroll(args.name, added, quality=quality_of(args))
            except FaceError as exc:  # name the file, give the CLI's way out
                if exc.index is None:
                    raise
                photo = args.images[exc.index]
                if isinstance(exc, PoorFaceQualityError):
                    raise PoorFaceQualityError(
                        f"{photo}: {exc.reason}; nothing enrolled. Use another photo, or "
                        "--no-quality-check to enrol it anyway",
                        exc.problems, exc.index, reason=exc.reason) from None
                raise type(exc)(f"{photo}: {exc.reason}; nothing enrolled", index=exc.index,
                                reason=exc.reason) from None
        gallery.save(args.gallery)
        points = verifier.info.operating_points
        fewest = min(gallery.counts().values())
    print(f"enrolled {args.name!r}: {len(added)} photo(s) added, {n} in all; "
          f"{len(gallery)} people in {args.gallery}")
    if n < RECOMMENDED_PHOTOS:
        # measured at the door's default point (docs/FACES.md, "How many photos to enrol";
        # run 18's file): one photo let 89 % / 64 % of att-orl / yale attempts in, three 97 % / 92 %
        print(f"tip: at the door's strict threshold one photo per person refuses many genuine "
              f"attempts; enrol {RECOMMENDED_PHOTOS} or more (different light and pose): "
              f"door_lock.py enroll {args.name} a.jpg b.jpg c.jpg, or from the camera: "
              f"door_lock.py enroll {args.name} --source 0")
    elif (fewest >= RECOMMENDED_PHOTOS
          and chosen_operating_point(args) == DEFAULT_OPERATING_POINT
          and STRICTER_POINT in points):
        # the gallery scores a person by the nearest of their photos: a stranger gets about
        # one chance per photo (docs/FACES.md, "How many photos to enrol"; run 18's file:
        # three photos at the far_1e-5 τ let more enrolled attempts in than one photo at
        # far_1e-4, and about as few strangers). The τ is the whole door's, so only once
        # everyone has that many: people with one photo would be refused far more often.
        print(f"tip: everyone here has {fewest} or more photos, so a stranger gets about "
              f"{fewest} chances per person at {DEFAULT_OPERATING_POINT}; this model also has "
              f"{STRICTER_POINT}: add --operating-point {STRICTER_POINT} to door_lock.py run")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _verifier(args) as verifier:
        gallery = _load_gallery(args, verifier)
        for name, n in gallery.counts().items():
            print(f"{name}\t{n} photo(s)")
        print(f"{len(gallery)} people, model {verifier.model_id}, τ={gallery.threshold:.4f}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with _verifier(args) as verifier:
        gallery = _load_gallery(args, verifier)
        gallery.remove(args.name)
        gallery.save(args.gallery)
    print(f"removed {args.name!r}; {len(gallery)} people left")
    return 0


def quality_of(args: argparse.Namespace) -> QualityOptions | None:
    """The face-quality limits the command applies: the defaults, or none."""
    return None if args.no_quality_check else QualityOptions()


def _timed_for(kind: str, flag: str, value: float | None, default: float, why: str) -> float:
    """A time option as `run` applies it to a source of ``kind``: a folder's photos (or
    one image) are separate events read in milliseconds, so such times do not apply
    there (0, and a value given is said to be ignored, ``why``)."""
    if kind in (FOLDER, IMAGE):
        if value:
            print(f"door_lock: note: {flag} {value:g} ignored: {why.format(kind=kind)}",
                  file=sys.stderr)
        return 0.0
    return default if value is None else value


def hold_for(kind: str, hold: float | None) -> float:
    """The hold (seconds) `run` applies to a source of ``kind`` given ``--hold``: none
    for a folder's photos, where it would carry one photo's unlock over the next ones."""
    return _timed_for(kind, "--hold", hold, DEFAULT_HOLD_S,
                      "each photo of a {kind} source is its own event, decided on its own")


def attempt_for(kind: str, attempt: float | None) -> float:
    """The attempt time (seconds) `run` applies to a source of ``kind`` given
    ``--attempt-seconds``: none for a folder's photos, where every refusal would be one
    attempt on the processing clock and ``--max-failures`` could never trip; each
    refused photo is one attempt."""
    return _timed_for(kind, "--attempt-seconds", attempt, DEFAULT_ATTEMPT_S,
                      "each refused photo of a {kind} source is one failed attempt")


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextmanager
def sigterm_as_interrupt():
    """SIGTERM (``systemctl stop``, ``kill``, a container's stop) ends `run` as Ctrl-C
    does: a running unlock hook, which is in its own session and would survive the lock,
    is killed with what it started, the summary is printed and the exit status is 0.
    Python's default would end the process at once, hook left running."""
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGTERM) in (None, signal.SIG_IGN):
        # signals reach the main thread only; a handler installed from C, or SIGTERM
        # ignored on purpose, is the caller's choice
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_run(args: argparse.Namespace) -> int:
    kind, _ = source_kind(args.source)
    options = LockOptions(unlock_cmd=args.unlock_cmd, max_failures=args.max_failures,
                          cooldown_s=args.cooldown,
                          attempt_s=attempt_for(kind, args.attempt_seconds),
                          hold_s=hold_for(kind, args.hold), min_face_px=args.min_face,
                          hook_timeout_s=args.hook_timeout, quality=quality_of(args))
    counts: dict[str, int] = {}
    with _verifier(args) as verifier:
        gallery = _load_gallery(args, verifier)
        if len(gallery) == 0:
            # nobody could ever be let in: refuse to start rather than log an error per frame
            raise GalleryError(f"{args.gallery} has nobody enrolled; enrol someone first "
                               "(door_lock.py enroll NAME PHOTO...)")
        try:
            audit = open(args.audit, "a", encoding="utf-8") if args.audit else None
        except OSError as exc:
            raise OSError(f"--audit {args.audit}: {exc.strerror or exc}") from None
        lost_camera = False
        try:
            with sigterm_as_interrupt():
                lock = DoorLock(gallery, options, audit=audit)
                for i, frame in enumerate(iter_frames(args.source)):
                    if args.max_frames is not None and i >= args.max_frames:
                        break
                    # a video's own times: read faster than real time, it keeps its hold and
                    # cooldown as long as the scene it shows (a camera's are the clock's)
                    decision = lock.process(frame.image, frame.frame_id, args.source,
                                            at=frame.time)["decision"]
                    counts[decision] = counts.get(decision, 0) + 1
                else:
                    # a camera has no last frame: its stream ending means it was unplugged or
                    # failed, which a supervisor (systemd, a watchdog) must see to restart it
                    lost_camera = kind == CAMERA
        except KeyboardInterrupt:
            pass
        finally:
            if audit is not None:
                audit.close()
    print("summary: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if lost_camera:
        print(f"door_lock: error: camera {args.source} stopped giving frames after "
              f"{sum(counts.values())} frames", file=sys.stderr)
        return 1
    return 0


def site_photos(folder: str) -> dict[str, list[Path]]:
    """``FOLDER/<person>/<photos>`` -> each person's photo files (sorted)."""
    root = Path(folder)
    if not root.is_dir():
        raise SourceError(f"--source {folder!r} is not a folder")
    people = {}
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(f for f in person.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            people[person.name] = files
    if not people:
        raise SourceError(f"{root}: expected one sub-folder of photos per person "
                          f"({root}/<person>/<photo>), found none")
    return people


def _far_name(far: float) -> str:
    """1e-4 -> "far_1e-4", the files' own operating-point names."""
    return "far_" + f"{far:.0e}".replace("e-0", "e-")


def _rates_row(label: str, r: "sdk.faces.calibration.PairRates") -> str:
    tar = "-" if r.tar is None else f"{100 * r.tar:.1f} %"
    return (f"{label:<20} {r.threshold:>7.4f}  {r.false_accepts:>6} / {r.impostor_pairs:<8} "
            f"{r.far:>9.1e} {r.far_upper:>11.1e}  {tar:>7}")


def embed_site(verifier: sdk.FaceVerifier, people: dict[str, list[Path]],
               quality: QualityOptions | None = None
               ) -> tuple[np.ndarray, list[str], list[str]]:
    """(embeddings, each one's person, the skipped photos with why) of
    :func:`site_photos`' photos; as at enrolment, a photo counts only with exactly one
    face, and one that meets ``quality`` when given (the faces the door would judge)."""
    embeddings, labels, skipped = [], [], []
    for name, files in people.items():
        for f in files:
            image = cv2.imread(str(f), cv2.IMREAD_COLOR)
            faces = verifier.detect(image) if image is not None else []
            if len(faces) != 1:  # whose face would it be?
                why = "unreadable" if image is None else (
                    "no face" if not faces else f"{len(faces)} faces")
                skipped.append(f"{f}: skipped ({why})")
                continue
            if (crop := crop_face(verifier, image, faces[0], quality)).problems:
                skipped.append(f"{f}: skipped ({'; '.join(crop.problems)})")
                continue
            embeddings.append(verifier.embed_aligned(crop.aligned))
            labels.append(name)
    if len(embeddings) < 2:
        raise NoFaceError("fewer than two photos with exactly one face")
    return np.stack(embeddings), labels, skipped


def plot_site(pairs: "sdk.SitePairs", thresholds: dict[str, float], path: str) -> None:
    """Histograms of the site's same- and different-person distances, each τ a line."""
    try:
        import matplotlib
    except ImportError as exc:
        raise SdkError("--plot needs matplotlib (pip install matplotlib)") from exc
    matplotlib.use("Agg")  # a file, no display: this runs on devices
    import matplotlib.pyplot as plt

    same, diff = pairs.genuine, pairs.impostor
    fig, ax = plt.subplots(figsize=(9, 4.5))
    bins = np.linspace(0.0, 4.0, 161)
    for d, color, name in ((same, "tab:green", "same person"),
                           (diff, "tab:red", "different people")):
        if len(d):
            ax.hist(d, bins=bins, density=True, alpha=0.5, color=color,
                    label=f"{name} ({len(d)} pairs)")
    ax.set_yscale("log")  # the strict thresholds live in the different-person tail
    for i, (name, tau) in enumerate(thresholds.items()):
        ax.axvline(tau, color=f"C{i % 10}", ls="--", lw=1.2, label=f"{name} τ {tau:.3f}")
    ax.set_xlabel("d = ‖f(a) − f(b)‖²  (a pair is accepted when d ≤ τ)")
    ax.set_ylabel("density (log)")
    top = max([float(d[-1]) for d in (same, diff) if len(d)] + list(thresholds.values()))
    ax.set_xlim(0.0, min(4.0, top + 0.5))  # room on the right for the legend
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_calibrate(args: argparse.Namespace) -> int:
    people = site_photos(args.source)
    # no τ is applied here, so no operating point is asked of the file
    with sdk.FaceVerifier.create(args.model, args.yunet, backend=args.backend,
                                 threads=args.threads) as verifier:
        # the faces the door would judge: the same quality limits as `run`
        e, labels, skipped = embed_site(verifier, people, quality_of(args))
        info, model_id = verifier.info, verifier.model_id
        points = dict(sorted(info.operating_points.items(), key=lambda kv: kv[1]))
        if info.threshold is not None and info.threshold not in points.values():
            points[MODEL_TAU] = info.threshold
    for line in skipped:
        print(line)
    pairs = sdk.SitePairs(e, labels)  # every pair once, for every threshold below
    print(f"{len(e)} photos of {len(pairs.names)} people ({len(skipped)} skipped), "
          f"model {model_id}")
    print(f"{'threshold':<20} {'τ':>7}  {'false accepts':<17} {'FAR':>9} "
          f"{'FAR ≤ (' + format(args.confidence, '.0%') + ')':>11}  {'TAR':>7}")
    report = {"source": str(args.source), "model_id": model_id, "photos": len(e),
              "people": len(pairs.names), "skipped": len(skipped),
              "confidence": args.confidence, "model_points": {}}
    for name, tau in points.items():
        r = pairs.rates(tau, args.confidence)
        report["model_points"][name] = {**asdict(r), "far_upper": r.far_upper}
        print(_rates_row(f"file: {name}", r))
    try:
        site = pairs.calibrate(args.far, args.confidence)
    except CalibrationError as exc:  # the file's points were measured: keep them
        report["site"] = {"target_far": args.far, "error": str(exc)}
        raise
    else:
        print(_rates_row(f"site: {_far_name(args.far)}", site.rates))
        print("nearest different-person pairs: " + "; ".join(
            f"{a} ~ {b} {d:.3f}" for a, b, d in site.nearest_impostors))
        report["site"] = {**asdict(site.rates), "far_upper": site.rates.far_upper,
                          "target_far": site.target_far,
                          "nearest_impostors": site.nearest_impostors}
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        if args.plot:
            lines = {f"file {k}": v for k, v in points.items()}
            if "threshold" in report.get("site", {}):
                lines[f"site {_far_name(args.far)}"] = report["site"]["threshold"]
            plot_site(pairs, lines, args.plot)
    print(f"to use it: door_lock.py run --source ... --threshold {site.threshold:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    runtime = argparse.ArgumentParser(add_help=False)
    runtime.add_argument("--model", default=None,
                         help="face encoder (default: models/faces/face_encoder_int8.onnx)")
    runtime.add_argument("--backend", default=None, help="force onnxruntime, tflite or tensorrt")
    runtime.add_argument("--threads", type=int, default=None)
    runtime.add_argument("--yunet", default=None, help="YuNet detector .onnx (default: found)")
    runtime.add_argument("--no-quality-check", action="store_true",
                         help="judge, enrol or calibrate on every face, however small, turned, "
                              "blurred or badly exposed (default: skip or refuse those, "
                              "sdk.QualityOptions)")
    common = argparse.ArgumentParser(add_help=False, parents=[runtime])
    common.add_argument("--gallery", default=DEFAULT_GALLERY,
                        help=f"gallery file (default: {DEFAULT_GALLERY})")
    common.add_argument("--threshold", type=float, default=None,
                        help="override the model's τ (squared L2)")
    common.add_argument("--operating-point", default=DEFAULT_OPERATING_POINT, metavar="NAME",
                        help=f"which of the model's named thresholds gates the door "
                             f"(default {DEFAULT_OPERATING_POINT}: at most 1 false accept in "
                             f"10,000 impostor pairs when it was calibrated; far_1e-3 and "
                             f"far_1e-2 are looser; "
                             f"'{MODEL_TAU}' = the file's best-accuracy τ); ignored with "
                             f"--threshold")
    common.add_argument("--accept-other-export", action="store_true",
                        help="read a gallery enrolled with another export of the same weights "
                             "(list, run, remove; enroll into it stays refused: one gallery "
                             "never mixes exports)")

    parser = argparse.ArgumentParser(prog="door_lock", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enroll", parents=[common], help="add photos of a person")
    p.add_argument("name")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="photos of the person")
    p.add_argument("--source", default=None,
                   help="instead of photos: take shots from a camera index, video, image "
                        "folder or image")
    p.add_argument("--shots", type=int, default=RECOMMENDED_PHOTOS,
                   help=f"--source: frames to enrol (default {RECOMMENDED_PHOTOS})")
    p.add_argument("--every", type=int, default=None,
                   help=f"--source: at least this many frames between shots (default "
                        f"{DEFAULT_EVERY[CAMERA]} for a camera or video, half a second at 30 "
                        f"fps: turn the head a little between shots; 1 for a folder or image: "
                        f"every file is considered)")
    p.add_argument("--min-face", type=float, default=MIN_FACE_PX, metavar="PX",
                   help=f"--source: skip faces smaller than this (default {MIN_FACE_PX:g})")
    p.set_defaults(func=cmd_enroll)
    p = sub.add_parser("run", parents=[common], help="watch a source and open for enrolled people")
    p.add_argument("--source", required=True,
                   help="camera index (N or camera:N), video file, image folder or image")
    p.add_argument("--unlock-cmd", default=None,
                   help="shell command that opens the door ($DOOR_NAME, $DOOR_DISTANCE set)")
    p.add_argument("--hook-timeout", type=float, default=10.0, metavar="S",
                   help="an unlock command running longer is killed, with the programs it "
                        "started, and counts as failed (default 10)")
    p.add_argument("--cooldown", type=float, default=30.0,
                   help="seconds locked out after --max-failures failed attempts (default 30)")
    p.add_argument("--max-failures", type=int, default=3,
                   help="failed attempts in a row before the cooldown (default 3)")
    p.add_argument("--min-face", type=float, default=MIN_FACE_PX, metavar="PX",
                   help="faces smaller than this (box, shorter side) are too far away to "
                        f"judge: no decision, no failed attempt (default {MIN_FACE_PX:g})")
    p.add_argument("--hold", type=float, default=None,
                   help=f"seconds (of the camera's clock or the video's time) the door stays "
                        f"open after an unlock, without re-running the unlock command "
                        f"(default {DEFAULT_HOLD_S:g}; 0: every frame decides; a folder's "
                        f"photos always decide each on its own)")
    p.add_argument("--attempt-seconds", type=float, default=None,
                   help=f"refusals within this many seconds are one failed attempt "
                        f"(default {DEFAULT_ATTEMPT_S:g}; 0: every refused frame counts; each "
                        f"refused photo of a folder always counts)")
    p.add_argument("--audit", default=None, help="append decisions to this JSONL file")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("calibrate", parents=[runtime],
                       help="measure the thresholds on your camera's photos and fit one")
    p.add_argument("--source", required=True,
                   help="folder of photos from the door's camera: one sub-folder per person")
    p.add_argument("--far", type=float, default=1e-4,
                   help="false-accept rate the fitted τ must stay under (default 1e-4; "
                        "needs about 30,000 different-person pairs, e.g. 30 people x 6 photos)")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="confidence of that bound (default 0.95)")
    p.add_argument("--json", default=None, help="write the measurements to this file")
    p.add_argument("--plot", default=None, metavar="PNG",
                   help="draw both distance histograms and the thresholds (needs matplotlib)")
    p.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("list", parents=[common], help="list enrolled people")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("remove", parents=[common], help="remove a person")
    p.add_argument("name")
    p.set_defaults(func=cmd_remove)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on any error: the door stays locked; 1 when
    `run`'s camera stops giving frames, so that a supervisor can restart it)."""
    # OpenCV 5 warns on every YuNet load that its new graph engine ignores the target
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "enroll":
        if bool(args.images) == (args.source is not None):
            parser.error("enroll: give photos or --source, not both or neither")
        if args.shots < 1 or (args.every is not None and args.every < 1):
            parser.error(f"enroll: --shots and --every must be >= 1, got {args.shots}, "
                         f"{args.every}")
    try:
        return args.func(args)
    except (SdkError, ValueError, OSError) as exc:
        print(f"door_lock: error: {cli_message(exc, args.command)}", file=sys.stderr)
        return 2


def cli_message(exc: BaseException, command: str) -> str:
    """``exc``'s message, with the remedy in this app's options where the SDK gives it
    as Python arguments (``accept_other_export=True``, ``threshold=...``); the errors'
    fields say the rest."""
    if isinstance(exc, OtherExportError):
        enrolled, loaded = (" ".join(map(str, e)) for e in (exc.enrolled, exc.loaded))
        text = (f"gallery {exc.path} was enrolled with the {enrolled} export of "
                f"{exc.model_id!r}, --model is its {loaded} export; ")
        if command == "enroll":  # --accept-other-export would not let it add anyone
            return text + (f"one gallery never mixes exports: enroll with the {enrolled} "
                           "export as --model, or everyone again into a new --gallery")
        return text + ("re-enroll, or pass --accept-other-export to accept small distance "
                       "changes")
    if isinstance(exc, ThresholdUnavailableError):
        have = ", ".join(exc.available) or "none"
        if exc.operating_point is not None:
            return (f"{exc.source} has no operating point {exc.operating_point!r} (it has: "
                    f"{have}); choose one of those with --operating-point, or give "
                    "--threshold")
        return (f"{exc.source} carries no calibrated threshold; give --threshold, or "
                f"--operating-point with one of its named ones (it has: {have})")
    return str(exc)


if __name__ == "__main__":
    sys.exit(main())
