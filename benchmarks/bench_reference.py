"""Empty-seat reference benchmark (issue 12): per-seat accuracy on real labelled data, and its cost.

1. PKLot UFPR05 subset (40 spaces, 30 labelled frames over 6 days): the reference is the median of one day's
   empty-lot background frames and is scored on every labelled frame of the *other* days. One row per
   reference day: per-space accuracy, per-frame count error (mean |error|, worst), the naive baseline (mean
   |grey difference| per space, no registration or light normalisation) at its best possible threshold for
   that day, and with the slow adaptation on. Then the per-frame counts for the headline day.
2. The two classroom clips, labelled by us (tests/data/seats/*.json): they have no empty frame, so the
   reference is approximated from the first part of each clip (per seat, frames with no detection on it:
   `edge.seatref.reference_from_detections`) and scored on the rest; detection only vs reference only vs both.
3. ms per frame of the reference scoring (registration + log-gradients + per-seat comparison), detector apart.

    TURNOUT_SHARED=/work/shared TURNOUT_MODEL_DIR=/work/shared/models .venv/bin/python benchmarks/bench_reference.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from edge.config import Anchor, DetectConfig, load_config
from edge.detector import Detector
from edge.reference import EmptyReference, ReferenceParams, raw_difference
from edge.seateval import (
    accuracy,
    evaluate_clip,
    load_pklot,
    load_seat_labels,
    read_frames,
    read_image,
    score_pklot,
)
from turnout.paths import REPO_ROOT, resolve_model, shared_dir

HEADLINE_DAY = "2013-03-17"
TORN = {"2013-03-03": "its 12:25 frame is torn (half the picture shifted 509 px): the median is not the lot"}


def raw_best(lot, day: str, images: dict) -> float:
    """Accuracy of the naive per-space grey difference at the best threshold for this reference day."""
    ref = lot.reference_image(day)
    diffs, truth = [], []
    for f in lot.frames:
        if f.day != day:
            diffs.append(raw_difference(images[f.path], ref, lot.seats))
            truth.append(f.occupied)
    x, y = np.concatenate(diffs), np.concatenate(truth)
    return max(float(((x > t) == y).mean()) for t in np.unique(x))


def candidates(lot, images: dict) -> None:
    """Per-space features that were candidates for the representation, each at its best threshold, after the
    same registration (reference HEADLINE_DAY, frames of other days)."""
    ref_bgr = lot.reference_image(HEADLINE_DAY)
    model = EmptyReference(ref_bgr, lot.seats)
    masks = []
    for poly in lot.seats.values():
        m = np.zeros(ref_bgr.shape[:2], np.uint8)
        cv2.fillPoly(m, [np.round(np.asarray(poly)).astype(np.int32)], 1)
        masks.append(m.astype(bool))
    ref_grey = cv2.cvtColor(ref_bgr, cv2.COLOR_BGR2GRAY).astype(np.float32)
    ref_chroma = ref_bgr.astype(np.float32) + 1
    ref_chroma /= ref_chroma.sum(2, keepdims=True)
    feats: dict[str, list[float]] = {"grey absolute difference": [], "grey normalised cross-correlation": [],
                                     "chromaticity absolute difference": [], "log-gradient similarity (chosen)": []}
    truth, shifts = [], []
    for f in lot.frames:
        if f.day == HEADLINE_DAY:
            continue
        image = images[f.path]
        scores = model.score(image)
        dx, dy = scores.shift
        shifts.append(float(np.hypot(dx, dy)))
        moved = cv2.warpAffine(image, np.float32([[1, 0, -dx], [0, 1, -dy]]), model.size,
                               borderMode=cv2.BORDER_REPLICATE)
        grey = cv2.cvtColor(moved, cv2.COLOR_BGR2GRAY).astype(np.float32)
        chroma = moved.astype(np.float32) + 1
        chroma /= chroma.sum(2, keepdims=True)
        for i, m in enumerate(masks):
            a, b = grey[m], ref_grey[m]
            az, bz = a - a.mean(), b - b.mean()
            feats["grey absolute difference"].append(float(np.abs(a - b).mean()))
            feats["grey normalised cross-correlation"].append(-float((az * bz).sum() / np.sqrt((az**2).sum() * (bz**2).sum())))
            feats["chromaticity absolute difference"].append(float(np.abs(chroma[m] - ref_chroma[m]).mean()))
            feats["log-gradient similarity (chosen)"].append(-float(scores.similarity[i]))
        truth.append(f.occupied)
    y = np.concatenate(truth)
    print(f"\ncandidate representations, reference {HEADLINE_DAY}, registered frames (registration shift up to "
          f"{max(shifts):.1f} px), each at its best threshold")
    print("| per-space feature | accuracy |")
    print("|---|---|")
    for name, values in feats.items():
        x = np.asarray(values)
        print(f"| {name} | {max(float(((x > t) == y).mean()) for t in np.unique(x)):.1%} |")


def pklot(root: Path) -> None:
    lot = load_pklot(root)
    images = {f.path: read_image(f.path) for f in lot.frames}
    print(f"PKLot UFPR05 subset: {len(lot.seats)} spaces, {len(lot.frames)} labelled frames, reference of another day")
    print("| reference day | frames scored | per-space accuracy | count error mean / worst | naive, best threshold |"
          " with adaptation |")
    print("|---|---|---|---|---|---|")
    clean = []
    for day in lot.background_days():
        res = score_pklot(lot, day)
        adapted = accuracy(score_pklot(lot, day, adapt_rate=0.1))
        err = [abs(r.count_error) for r in res]
        acc = accuracy(res)
        note = f" ({TORN[day]})" if day in TORN else ""
        if day not in TORN:
            clean.append(acc)
        print(f"| {day}{note} | {len(res)} | {acc:.1%} | {np.mean(err):.2f} / {max(err)} | "
              f"{raw_best(lot, day, images):.1%} | {adapted:.1%} |")
    print(f"reference method over {len(clean)} clean reference days: mean {np.mean(clean):.2%}, "
          f"worst {min(clean):.2%}")
    days = [d for d in lot.background_days() if d not in TORN]
    print(f"\nablation over the {len(days)} clean reference days (per-space accuracy, mean / worst day)")
    print("| variant | mean | worst |")
    print("|---|---|---|")
    for label, params in (
        ("the method (registration, similarity < 0.45 and edge gain > 0)", ReferenceParams()),
        ("without registration (ECC off)", ReferenceParams(align=False)),
        ("similarity rule only (no edge-gain condition)", ReferenceParams(edge_gain_min=-99.0)),
    ):
        accs = [accuracy(score_pklot(lot, d, params)) for d in days]
        print(f"| {label} | {np.mean(accs):.2%} | {min(accs):.2%} |")
    candidates(lot, images)
    print(f"\nper-frame counts, reference {HEADLINE_DAY}:")
    print("| frame | occupied (truth) | occupied (reference) | error |")
    print("|---|---|---|---|")
    for r in score_pklot(lot, HEADLINE_DAY):
        print(f"| {r.frame.path.stem} | {int(r.frame.occupied.sum())} | {int(r.predicted.sum())} | {r.count_error:+d} |")
    ref = EmptyReference(lot.reference_image(HEADLINE_DAY), lot.seats)
    frames = list(images.values())[:10]
    ref.score(frames[0])
    t, cpu = time.perf_counter(), time.process_time()
    for img in frames:
        ref.score(img)
    ms = (time.perf_counter() - t) / len(frames) * 1000
    cpu_ms = (time.process_time() - cpu) / len(frames) * 1000
    print(f"\nreference scoring, 1280x720, {len(lot.seats)} spaces: {ms:.1f} ms per frame wall, {cpu_ms:.1f} ms CPU "
          f"(OpenCV threads: {cv2.getNumThreads()})")


def classrooms(data: Path) -> None:
    cfg = load_config(REPO_ROOT / "deploy" / "edge-classroom.yaml")
    clips = [
        ("classroom_cctv", cfg.camera("classroom").detect, 105, resolve_model("yolo11n-recon-dyn")),
        ("intel_classroom", DetectConfig(), 20, resolve_model("yolo11n")),
    ]
    print("\nClassroom clips (our labels, tests/data/seats/): reference approximated from the clip's first part")
    print("| clip | seats (with a reference) | seat-frames scored | detection only | reference only | both |"
          " detector ms/frame | reference ms/frame |")
    print("|---|---|---|---|---|---|---|---|")
    for name, detect, split, model in clips:
        labels = load_seat_labels(REPO_ROOT / "tests" / "data" / "seats" / f"{name}.json")
        frames = read_frames(data / labels.video, sorted(labels.occupied))
        detector = Detector(model, threads=2)
        t = time.perf_counter()
        dets = {i: detector.detect(f, detect) for i, f in frames.items()}
        det_ms = (time.perf_counter() - t) / len(frames) * 1000
        t = time.perf_counter()
        res = {r.mode: r for r in evaluate_clip(labels, frames, dets, detect, Anchor.CENTER, split)}
        ref_ms = (time.perf_counter() - t) / (3 * len(frames)) * 1000
        both = res["both"]
        print(f"| {name} | {both.seats} ({both.seats_with_reference}) | {both.total} | "
              f"{res['detection'].accuracy:.1%} | {res['reference'].accuracy:.1%} | {both.accuracy:.1%} | "
              f"{det_ms:.0f} | {ref_ms:.1f} |")


def main() -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    shared = shared_dir()
    if shared is None:
        raise SystemExit("set TURNOUT_SHARED to the shared/ folder")
    pklot(shared / "data" / "pklot_ufpr05_subset")
    classrooms(shared / "data")


if __name__ == "__main__":
    main()
