"""Video: every K-th frame decoded with OpenCV, faces followed across frames, a timeline and an annotated video.

Tracks join a face to the previous processed frame's face it overlaps most (IoU ≥ 0.3). With `smooth` > 0 the
probabilities of a track are an exponential moving average (new = smooth·old + (1 − smooth)·frame), which calms
the label flicker of single frames; the raw per-frame probabilities stay in predictions.jsonl.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.ops import box_iou
from tqdm import tqdm

from frafer.infer.draw import annotate
from frafer.infer.inputs import file_key
from frafer.infer.predictor import FacePrediction, Predictor


class Tracker:
    """Greedy IoU matching of each frame's faces to the last frame's tracks; optional EMA of probabilities."""

    def __init__(self, smooth: float = 0.0, min_iou: float = 0.3) -> None:
        self.smooth, self.min_iou = smooth, min_iou
        self.tracks: dict[int, tuple] = {}  # id → (box, smoothed probabilities)
        self.next_id = 0

    def update(self, faces: list[FacePrediction]) -> list[tuple[int, np.ndarray]]:
        ids = list(self.tracks)
        pairs = []
        if faces and ids:
            iou = box_iou(torch.tensor([f.box for f in faces]), torch.tensor([self.tracks[t][0] for t in ids]))
            pairs = sorted(((float(iou[i, j]), i, tid) for i in range(len(faces)) for j, tid in enumerate(ids)),
                           reverse=True)
        assigned: dict[int, int] = {}
        used = set()
        for iou, i, tid in pairs:
            if iou < self.min_iou or i in assigned or tid in used:
                continue
            assigned[i] = tid
            used.add(tid)
        tracks, out = {}, []
        for i, face in enumerate(faces):
            tid = assigned.get(i)
            if tid is None:
                tid, self.next_id = self.next_id, self.next_id + 1
                probs = face.probabilities
            else:
                probs = self.smooth * self.tracks[tid][1] + (1 - self.smooth) * face.probabilities
            tracks[tid] = (face.box, probs)
            out.append((tid, probs))
        self.tracks = tracks
        return out


def predict_video(predictor: Predictor, source, name: Path, out: Path, writers, summary, every: int = 1,
                  smooth: float = 0.0, write_video: bool = True) -> tuple[str, str]:
    file = file_key(source.path)
    capture = cv2.VideoCapture(str(source.path))
    if not capture.isOpened():
        # a file we can read that OpenCV cannot open is damaged (or not a video); one we cannot read is unreadable
        status, reason = (("corrupt", "OpenCV cannot decode this video (damaged, truncated or not a video)")
                          if os.access(source.path, os.R_OK) and source.path.is_file() else
                          ("unreadable", "the file cannot be read"))
        writers.write(file, status, reason=reason)
        return status, reason
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    timeline_path = (out / "timelines" / name).with_suffix(".csv")
    timeline_path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    tracker = Tracker(smooth)
    frames = faces_seen = 0
    bar = tqdm(total=total, desc=source.path.name, unit="frame", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    with timeline_path.open("w", newline="") as f:
        timeline = csv.writer(f)
        timeline.writerow(["frame", "time", "track", "face", "label", "confidence",
                           *(f"p_{c}" for c in predictor.classes)])
        index = 0
        faces: list[FacePrediction] = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            t = index / fps
            if index % every == 0:
                raw = predictor.predict_detected([rgb], [predictor.detect(rgb)])[0]
                writers.write(file, "ok" if raw else "no face", raw, frame=index, t=t)
                faces = []
                for face, (track, probs) in zip(raw, tracker.update(raw), strict=True):
                    top = int(probs.argmax())
                    shown = replace(face, label=predictor.classes[top], confidence=float(probs[top]),
                                    probabilities=probs)
                    faces.append(shown)
                    timeline.writerow([index, round(t, 3), track, face.index, shown.label, round(shown.confidence, 4),
                                       *np.round(probs, 5).tolist()])
                summary.faces += len(raw)
                summary.labels.update(f.label for f in faces)
                faces_seen += len(raw)
                frames += 1
            if write_video:
                if writer is None:
                    target = (out / "annotated" / name).with_suffix(".mp4")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                             (rgb.shape[1], rgb.shape[0]))
                drawn = np.asarray(annotate(rgb, faces, predictor.classes))  # the last processed frame's faces
                writer.write(cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
            index += 1
            bar.update(1)
            bar.set_postfix(fps=f"{index / max(time.perf_counter() - start, 1e-9):.1f}")
    bar.close()
    capture.release()
    if writer is not None:
        writer.release()
    if index == 0:
        writers.write(file, "corrupt", reason="no frame could be decoded")
        return "corrupt", "no frame could be decoded"
    reason = f"{frames} frame(s) processed of {index}"
    if total and index < total:  # the header promised more frames than could be decoded: a cut file
        reason += f"; the file declares {total} frames, so {total - index} could not be decoded (truncated?)"
    return ("ok" if faces_seen else "no face"), reason
