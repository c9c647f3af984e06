"""`frafer predict` over files and folders: outputs written as it goes, every file given a status, resumable.

    OUT/predictions.jsonl  one line per image (or processed video frame): file, frame, time, status, reason, faces
    OUT/faces.csv          one row per face: file, frame, time, face, box, landmarks, detector score, label,
                           confidence, one probability column per class
    OUT/annotated/…        each image (video) with boxes and labels drawn
    OUT/heatmaps/…         per face a region-heatmap panel, per image a grid of them   (--heatmaps)
    OUT/timelines/….csv    per video: the label of each face track over time             (videos)
    OUT/summary.json       files, faces, label counts, failures: of the whole folder, across resumes
    OUT/files.jsonl        one line per finished file: its status, reason, face and label counts
    OUT/done.txt           the files finished, for --resume (written last: it never names an unfinished file)
    OUT/model.json         which model wrote the folder: a resume with another model is refused

An interrupted run keeps every finished file; `--resume` drops the lines of the file it was inside (a line cut
short by a crash included) and carries on after the last finished one. Every file is named in the outputs by
`file_key`: its path, with bytes that are not UTF-8 shown as \\xNN escapes, so any file name can be written.
Two inputs never write the same picture: `output_names` gives each its own name under annotated/ and heatmaps/.
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
from frafer.infer.inputs import BadInput, Source, file_key, list_inputs, read_image
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
        jsonl, table, self.files_path = out / "predictions.jsonl", out / "faces.csv", out / "files.jsonl"
        if resume:
            self.done = _intact(set(_complete_lines(self.done_path)), jsonl, table, self.files_path)
            atomic_write_text(self.done_path, "".join(f + "\n" for f in sorted(self.done)))  # no half line
            _keep_lines(jsonl, lambda record: record.get("file") in self.done)
            _keep_lines(self.files_path, lambda record: record.get("file") in self.done)
            _keep_csv(table, self.done)
        else:
            for path in (jsonl, table, self.done_path, self.files_path):
                path.unlink(missing_ok=True)
        new_table = not table.is_file()
        self.jsonl = jsonl.open("a", encoding="utf-8")
        self.table = table.open("a", newline="", encoding="utf-8")
        self.csv = csv.writer(self.table)
        if new_table:
            self.csv.writerow(csv_header(classes))
        self.files = self.files_path.open("a", encoding="utf-8")
        self.done_file = self.done_path.open("a", encoding="utf-8")

    def write(self, file: str, status: str, faces: list[FacePrediction] = (), reason: str = "", frame=None,
              t=None) -> None:
        records = [face_record(f, self.classes) for f in faces]
        line = {"file": file, "frame": frame, "time": None if t is None else round(t, 3), "status": status,
                "reason": reason, "faces": records}
        self.jsonl.write(json.dumps(line) + "\n")
        for record in records:
            self.csv.writerow(csv_row(file, frame, t, record))

    def finish(self, file: str, status: str, reason: str, faces: int, labels: Counter) -> None:
        """Mark `file` finished: its predictions are flushed, its status line written, then done.txt names it."""
        self.jsonl.flush()
        self.table.flush()
        self.files.write(json.dumps({"file": file, "status": status, "reason": reason, "faces": faces,
                                     "labels": dict(labels)}) + "\n")
        self.files.flush()
        self.done_file.write(file + "\n")
        self.done_file.flush()
        self.done.add(file)

    def summary(self, seconds: float) -> Summary:
        """The summary of every finished file in the folder, this run's and earlier runs' alike."""
        summary = Summary(seconds=seconds)
        for record in _records(self.files_path):
            if record.get("file") not in self.done:
                continue
            summary.files += 1
            summary.statuses[record["status"]] += 1
            summary.faces += int(record.get("faces", 0))
            summary.labels.update(record.get("labels", {}))
            if record["status"] in FAILED:
                summary.failures.append({k: record[k] for k in ("file", "status", "reason")})
        return summary

    def close(self) -> None:
        for f in (self.jsonl, self.table, self.files, self.done_file):
            f.close()


def _intact(done: set[str], jsonl: Path, table: Path, files: Path) -> set[str]:
    """The files of `done` whose outputs are all there: a status line, at least one prediction line, and as many
    CSV rows as their prediction lines hold faces. Any other is done again (a crash, or a damaged output file)."""
    status = {r["file"] for r in _records(files) if "file" in r and "status" in r}
    faces: dict[str, int] = {}
    for r in _records(jsonl):
        if isinstance(r.get("faces"), list):
            faces[r.get("file")] = faces.get(r.get("file"), 0) + len(r["faces"])
    rows = Counter(r[0] for r in csv.reader(_complete_lines(table)[1:]) if r)  # [1:]: the header
    return {f for f in done if f in status and f in faces and rows.get(f, 0) == faces[f]}


def _complete_lines(path: Path) -> list[str]:
    """The lines of a text file that end in a newline (a crash can cut the last one short), empty ones dropped."""
    if not path.is_file():
        return []
    text = path.read_bytes().decode("utf-8", "backslashreplace")
    lines = text.split("\n")[:-1]  # the part after the last newline is unfinished (or empty)
    return [line for line in lines if line.strip()]


def _records(path: Path) -> list[dict]:
    """The JSON objects of a JSONL file, skipping a line that a crash cut short."""
    out = []
    for line in _complete_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            out.append(record)
    return out


def _keep_lines(path: Path, keep) -> None:
    if path.is_file():
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in _records(path) if keep(r)))


def _keep_csv(path: Path, done: set[str]) -> None:
    if path.is_file():
        rows = list(csv.reader(_complete_lines(path)))  # one row a line: file_key names hold no raw newline
        kept = io.StringIO(newline="")
        csv.writer(kept).writerows(rows[:1] + [r for r in rows[1:] if r and r[0] in done])
        atomic_write_text(path, kept.getvalue())


def output_name(source: Source, roots: list[Path]) -> Path:
    """Where a file's pictures go under annotated/ and heatmaps/: its path below the folder it was found in."""
    for root in roots:
        if root.is_dir():
            try:
                return Path(file_key(source.path.relative_to(root)))
            except ValueError:
                continue
    return Path(file_key(source.path.name))


def output_names(sources: list[Source], roots: list[Path]) -> dict[str, Path]:
    """A distinct picture name for every source (keyed by file_key): `d1/x.jpg` and `d2/x.jpg`, or `face.jpg` and
    `face.png`, would write the same annotated picture and panels, so later ones get `-2`, `-3`… before the
    suffix. Names compare without case (some file systems ignore it) and follow the sorted sources, so a resume
    gives every file the name it had."""
    names, taken = {}, set()
    for source in sources:
        name = output_name(source, roots)
        stem, k = name.with_suffix(""), 2
        candidate = stem
        while str(candidate).lower() in taken:
            candidate = stem.with_name(f"{stem.name}-{k}")
            k += 1
        taken.add(str(candidate).lower())
        names[file_key(source.path)] = candidate.with_name(candidate.name + name.suffix)
    return names


def write_pictures(out: Path, name: Path, rgb: np.ndarray, faces: list[FacePrediction], classes, annotated: bool,
                   heatmaps: bool, heatmap_trunk: str | None, cam_layer: str = "") -> None:
    if annotated:
        target = out / "annotated" / name.with_name(name.stem + ".jpg")
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
    """Predict every image and video under `inputs`; returns the summary of the whole output folder (also written
    to OUT/summary.json), earlier runs that this one resumes included.

    Images are read and detected `chunk_files` at a time and their faces classified together (batches of the
    predictor's batch_size); results are still written, and marked done, file by file.
    """
    check_run_options(every, smooth, chunk_files)
    out = Path(out)
    sources = list_inputs(inputs)
    if not sources:
        raise FraferError(f"nothing to predict: {', '.join(map(str, inputs))} holds no files")
    missing = [str(p) for p in inputs if not Path(p).exists() and not Path(p).is_symlink()]
    if missing and len(missing) == len(inputs):
        raise FraferError(f"no such file or folder: {missing[0]}")
    roots = [Path(p) for p in inputs]
    names = output_names(sources, roots)
    prepare_output(out, predictor, resume)
    writers = Writers(out, predictor.classes, resume)
    todo = [s for s in sources if file_key(s.path) not in writers.done]
    if resume and len(todo) < len(sources):
        tqdm.write(f"resuming: {len(sources) - len(todo)} of {len(sources)} file(s) already done")
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="predict", unit="file", dynamic_ncols=True)
    progress = Summary()  # this run's part, for the progress bar

    def record(source: Source, status: str, reason: str, faces: int, labels: Counter) -> None:
        writers.finish(file_key(source.path), status, reason, faces, labels)
        progress.faces += faces
        progress.statuses[status] += 1
        bar.update(1)
        bar.set_postfix(faces=progress.faces, failed=progress.failed)

    try:
        for chunk in _chunks(todo, chunk_files):
            if chunk[0].kind == "video":
                from frafer.infer.video import predict_video

                source, counts = chunk[0], Summary()
                status, reason = predict_video(predictor, source, names[file_key(source.path)], out, writers,
                                               counts, every=every, smooth=smooth,
                                               write_video=video_output and annotated)
                record(source, status, reason, counts.faces, counts.labels)
                continue
            _predict_images(predictor, chunk, [names[file_key(s.path)] for s in chunk], out, writers, annotated,
                            heatmaps, record)
    except OSError as err:  # the output folder failed us part-way (disk full, permissions): stop, say where
        raise FraferError(f"cannot write the outputs in {out} ({err.strerror or err}); the files finished before "
                          f"it are kept: fix it and rerun with --resume") from None
    finally:
        bar.close()
        writers.close()
        summary = writers.summary(time.perf_counter() - start)
        try:
            atomic_write_text(out / "summary.json", json.dumps(summary.to_dict(), indent=2))
        except OSError:
            pass  # the error above already names the folder
    return summary


def check_run_options(every: int, smooth: float, chunk_files: int = 16) -> None:
    """Refuse option values that would divide by zero or write nonsense, naming the option."""
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise FraferError(f"--every must be a whole number of frames, 1 or more, got {every!r}")
    if not 0 <= smooth < 1:
        raise FraferError(f"--smooth must be in [0, 1) (the weight of a track's past probabilities), got {smooth!r}")
    if chunk_files < 1:
        raise FraferError(f"chunk_files must be 1 or more, got {chunk_files!r}")


def prepare_output(out: Path, predictor: Predictor, resume: bool) -> None:
    """Make sure OUT is a folder we can write, and that a resume continues with the model that started it."""
    if out.exists() and not out.is_dir():
        raise FraferError(f"--out {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".frafer-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise FraferError(f"cannot write to the output folder {out} ({err.strerror or err})") from None
    record_path, current = out / "model.json", predictor.identity()
    if resume and record_path.is_file():
        try:
            earlier = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError):
            earlier = {}
        if earlier.get("fingerprint") != current["fingerprint"]:
            raise FraferError(f"{out} holds predictions of another model ({earlier.get('model', 'unknown')}); "
                              f"this run's model is {current['model']}: resume with that model, or choose another "
                              f"--out")
    atomic_write_text(record_path, json.dumps(current, indent=2))


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
                    annotated: bool, heatmaps: bool, finish) -> None:
    """Read and detect each image, classify all their faces together, then write each file's results in order,
    calling `finish(source, status, reason, faces, labels)` as soon as a file's outputs are all written."""
    images, failures = [], {}
    for i, source in enumerate(sources):
        try:
            images.append((i, read_image(source.path, predictor.max_pixels)))
        except BadInput as bad:
            failures[i] = bad
    rgbs = [rgb for _, rgb in images]
    faces_per_image = predictor.predict_detected(rgbs, [predictor.detect(rgb) for rgb in rgbs])
    predicted = {i: (rgb, faces) for (i, rgb), faces in zip(images, faces_per_image, strict=True)}
    for i, source in enumerate(sources):
        file = file_key(source.path)
        if i in failures:
            writers.write(file, failures[i].status, reason=failures[i].reason)
            finish(source, failures[i].status, failures[i].reason, 0, Counter())
            continue
        rgb, faces = predicted[i]
        status = "ok" if faces else "no face"
        writers.write(file, status, faces)
        write_pictures(out, names[i], rgb, faces, predictor.classes, annotated,
                       heatmaps and predictor.cam is not None, predictor.heatmap_trunk, predictor.cam_layer)
        finish(source, status, "", len(faces), Counter(f.label for f in faces))
