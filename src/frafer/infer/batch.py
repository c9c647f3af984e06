"""`frafer predict` over files and folders: outputs written as it goes, every file given a status, resumable.

    OUT/predictions.jsonl  one line per image (or processed video frame): file, frame, time, status, reason, faces
    OUT/faces.csv          one row per face: file, frame, time, face, box, landmarks, detector score, label,
                           confidence, one probability column per class
    OUT/annotated/…        each image (video) with boxes and labels drawn
    OUT/heatmaps/…         per face a region-heatmap panel, per image a grid of them   (--heatmaps)
    OUT/timelines/….csv    per video: the label of each face track over time             (videos)
    OUT/summary.json       files, faces, label counts, failures
    OUT/done.txt           the files finished, for --resume

An interrupted run keeps every finished file; `--resume` drops the partial lines of the file it was inside and
carries on after the last finished one.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from frafer.errors import FraferError
from frafer.files import atomic_write_text
from frafer.infer.detect import LANDMARK_NAMES
from frafer.infer.draw import annotate, face_panel, panel_grid
from frafer.infer.inputs import BadInput, Source, list_inputs, read_image
from frafer.infer.predictor import FacePrediction, Predictor

FAILED = ("not an image", "corrupt", "too large", "unreadable")


@dataclass
class Summary:
    files: int = 0
    statuses: Counter = field(default_factory=Counter)
    faces: int = 0
    labels: Counter = field(default_factory=Counter)
    failures: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return sum(self.statuses[s] for s in FAILED)

    def to_dict(self) -> dict:
        return {"files": self.files, "statuses": dict(self.statuses), "faces": self.faces,
                "labels": dict(self.labels), "failed": self.failed, "failures": self.failures,
                "seconds": round(self.seconds, 2)}

    def lines(self) -> list[str]:
        status = ", ".join(f"{n} {s}" for s, n in self.statuses.most_common())
        labels = ", ".join(f"{label} {n}" for label, n in self.labels.most_common()) or "none"
        out = [f"{self.files} file(s): {status or 'none'}", f"{self.faces} face(s): {labels}"]
        out += [f"  {f['file']}: {f['status']} ({f['reason']})" for f in self.failures[:10]]
        if len(self.failures) > 10:
            out.append(f"  … and {len(self.failures) - 10} more in summary.json")
        return out


def face_record(face: FacePrediction, classes) -> dict:
    return {
        "face": face.index, "box": [round(float(v), 2) for v in face.box],
        "landmarks": None if face.landmarks is None else np.round(face.landmarks.astype(np.float64), 2).tolist(),
        "score": round(face.score, 4), "label": face.label, "confidence": round(face.confidence, 4),
        "probabilities": {c: round(float(p), 5) for c, p in zip(classes, face.probabilities, strict=True)},
    }


def csv_header(classes) -> list[str]:
    marks = [f"{name}_{axis}" for name in LANDMARK_NAMES for axis in "xy"]
    return ["file", "frame", "time", "face", "x1", "y1", "x2", "y2", *marks, "score", "label", "confidence",
            *(f"p_{c}" for c in classes)]


def csv_row(file: str, frame, t, record: dict) -> list:
    marks = (np.asarray(record["landmarks"]).ravel().tolist() if record["landmarks"] is not None
             else [""] * 2 * len(LANDMARK_NAMES))
    return [file, "" if frame is None else frame, "" if t is None else round(t, 3), record["face"], *record["box"],
            *marks, record["score"], record["label"], record["confidence"], *record["probabilities"].values()]


class Writers:
    """The run's JSONL and CSV, appended and flushed one file at a time; `done.txt` last, so it never lies."""

    def __init__(self, out: Path, classes, resume: bool) -> None:
        self.classes = classes
        out.mkdir(parents=True, exist_ok=True)
        self.done_path = out / "done.txt"
        self.done: set[str] = set()
        jsonl, table = out / "predictions.jsonl", out / "faces.csv"
        if resume and self.done_path.is_file():
            self.done = set(self.done_path.read_text().splitlines())
            _keep_lines(jsonl, lambda line: json.loads(line)["file"] in self.done)
            _keep_csv(table, self.done)
        elif not resume:
            for path in (jsonl, table, self.done_path):
                path.unlink(missing_ok=True)
        new_table = not table.is_file()
        self.jsonl = jsonl.open("a")
        self.table = table.open("a", newline="")
        self.csv = csv.writer(self.table)
        if new_table:
            self.csv.writerow(csv_header(classes))
        self.done_file = self.done_path.open("a")

    def write(self, file: str, status: str, faces: list[FacePrediction] = (), reason: str = "", frame=None,
              t=None) -> None:
        records = [face_record(f, self.classes) for f in faces]
        line = {"file": file, "frame": frame, "time": None if t is None else round(t, 3), "status": status,
                "reason": reason, "faces": records}
        self.jsonl.write(json.dumps(line) + "\n")
        for record in records:
            self.csv.writerow(csv_row(file, frame, t, record))

    def finish(self, file: str) -> None:
        self.jsonl.flush()
        self.table.flush()
        self.done_file.write(file + "\n")
        self.done_file.flush()
        self.done.add(file)

    def close(self) -> None:
        for f in (self.jsonl, self.table, self.done_file):
            f.close()


def _keep_lines(path: Path, keep) -> None:
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line.strip() and keep(line)]
        atomic_write_text(path, "".join(line + "\n" for line in lines))


def _keep_csv(path: Path, done: set[str]) -> None:
    if path.is_file():
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        kept = io.StringIO(newline="")
        csv.writer(kept).writerows(rows[:1] + [r for r in rows[1:] if r and r[0] in done])
        atomic_write_text(path, kept.getvalue())


def output_name(source: Source, roots: list[Path]) -> Path:
    """Where a file's pictures go under annotated/ and heatmaps/: its path below the folder it was found in."""
    for root in roots:
        if root.is_dir():
            try:
                return source.path.relative_to(root)
            except ValueError:
                continue
    return Path(source.path.name)


def write_pictures(out: Path, name: Path, rgb: np.ndarray, faces: list[FacePrediction], classes, annotated: bool,
                   heatmaps: bool, heatmap_trunk: str | None, cam_layer: str = "") -> None:
    if annotated:
        target = (out / "annotated" / name).with_suffix(".jpg")
        target.parent.mkdir(parents=True, exist_ok=True)
        annotate(rgb, faces, classes).save(target, quality=92)
    if heatmaps and faces:
        folder = out / "heatmaps" / name.parent
        folder.mkdir(parents=True, exist_ok=True)
        panels = []
        for face in faces:
            panel = face_panel(face, cam_layer, heatmap_trunk)
            panel.save(folder / f"{name.stem}_face{face.index}.png")
            panels.append(panel)
        panel_grid(panels).save(folder / f"{name.stem}_grid.png")


def run_predict(predictor: Predictor, inputs: list[str], out: str | Path, resume: bool = False,
                annotated: bool = True, heatmaps: bool = False, every: int = 1, smooth: float = 0.0,
                video_output: bool = True, chunk_files: int = 16) -> Summary:
    """Predict every image and video under `inputs`; returns the summary (also written to OUT/summary.json).

    Images are read and detected `chunk_files` at a time and their faces classified together (batches of the
    predictor's batch_size); results are still written, and marked done, file by file.
    """
    out = Path(out)
    sources = list_inputs(inputs)
    if not sources:
        raise FraferError(f"nothing to predict: {', '.join(map(str, inputs))} holds no files")
    missing = [str(p) for p in inputs if not Path(p).exists()]
    if missing and len(missing) == len(inputs):
        raise FraferError(f"no such file or folder: {missing[0]}")
    roots = [Path(p) for p in inputs]
    writers = Writers(out, predictor.classes, resume)
    summary = Summary()
    todo = [s for s in sources if str(s.path) not in writers.done]
    if resume and len(todo) < len(sources):
        tqdm.write(f"resuming: {len(sources) - len(todo)} of {len(sources)} file(s) already done")
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="predict", unit="file", dynamic_ncols=True)

    def record(source: Source, status: str, reason: str) -> None:
        summary.files += 1
        summary.statuses[status] += 1
        if status in FAILED:
            summary.failures.append({"file": str(source.path), "status": status, "reason": reason})
        writers.finish(str(source.path))
        bar.update(1)
        bar.set_postfix(faces=summary.faces, failed=summary.failed)

    try:
        for chunk in _chunks(todo, chunk_files):
            if chunk[0].kind == "video":
                from frafer.infer.video import predict_video

                source = chunk[0]
                record(source, *predict_video(predictor, source, output_name(source, roots), out, writers, summary,
                                              every=every, smooth=smooth, write_video=video_output and annotated))
                continue
            for source, (status, reason) in zip(chunk, _predict_images(
                    predictor, chunk, [output_name(s, roots) for s in chunk], out, writers, summary, annotated,
                    heatmaps), strict=True):
                record(source, status, reason)
    finally:
        bar.close()
        writers.close()
        summary.seconds = time.perf_counter() - start
        atomic_write_text(out / "summary.json", json.dumps(summary.to_dict(), indent=2))
    return summary


def _chunks(sources: list[Source], size: int):
    """Runs of up to `size` consecutive images (their faces are classified in one batch); each video alone."""
    chunk: list[Source] = []
    for source in sources:
        if source.kind == "video":
            if chunk:
                yield chunk
                chunk = []
            yield [source]
            continue
        chunk.append(source)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _predict_images(predictor: Predictor, sources: list[Source], names: list[Path], out: Path, writers: Writers,
                    summary: Summary, annotated: bool, heatmaps: bool) -> list[tuple[str, str]]:
    """Read and detect each image, classify all their faces together, then write each file's results in order."""
    images, failures = [], {}
    for i, source in enumerate(sources):
        try:
            images.append((i, read_image(source.path, predictor.max_pixels)))
        except BadInput as bad:
            failures[i] = bad
    rgbs = [rgb for _, rgb in images]
    faces_per_image = predictor.predict_detected(rgbs, [predictor.detect(rgb) for rgb in rgbs])
    predicted = {i: (rgb, faces) for (i, rgb), faces in zip(images, faces_per_image, strict=True)}
    results = []
    for i, source in enumerate(sources):
        file = str(source.path)
        if i in failures:
            writers.write(file, failures[i].status, reason=failures[i].reason)
            results.append((failures[i].status, failures[i].reason))
            continue
        rgb, faces = predicted[i]
        status = "ok" if faces else "no face"
        writers.write(file, status, faces)
        summary.faces += len(faces)
        summary.labels.update(f.label for f in faces)
        write_pictures(out, names[i], rgb, faces, predictor.classes, annotated,
                       heatmaps and predictor.cam is not None, predictor.heatmap_trunk,
                       predictor.cam.layer if predictor.cam is not None else "")
        results.append((status, ""))
    return results
