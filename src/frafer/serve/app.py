"""`frafer serve`: the expression model as an HTTP API (FastAPI, run by uvicorn) and a web page.

    POST /v1/predict   an image (multipart field `image`, or the raw body) → the predictions.jsonl line of that image:
                       {"file", "frame", "time", "status", "reason", "faces": [...]}, the schema `frafer predict`
                       writes, from the same Predictor. Query options: detector (mtcnn | haar | none), heatmaps
                       (each face gains "panel": a PNG data URL of its Grad-CAM / region panel), annotate (answer
                       with the annotated PNG instead), top_k (keep each face's k most probable classes).
    GET  /v1/model     the bundle's card: classes, input, framing, calibration, measured figures
    GET  /healthz      liveness
    GET  /metrics      Prometheus text: requests by path and status, latency histogram, faces, batch sizes
    GET  /             the page (plain HTML/JS/CSS shipped in the package: no CDN, no build step)
    GET  /docs         OpenAPI docs, with their assets served locally

Limits are on by default: a bearer token when one is configured (compared in constant time), an upload size limit
(413, counted as the body arrives), a pixel limit read from the image header before decoding (413), a request
timeout (504) and a bounded queue (503). Errors are JSON {"status", "message"}; the statuses of image problems are
`predict`'s own (too large, not an image, corrupt). No request can name a file on the server.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import json
import os
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from frafer.errors import FraferError
from frafer.infer.batch import face_record
from frafer.infer.detect import Face
from frafer.infer.draw import annotate as draw_boxes
from frafer.infer.draw import face_panel
from frafer.infer.inputs import BadInput, read_image
from frafer.infer.predictor import Predictor
from frafer.serve.batcher import Busy, MicroBatcher

ENV = "FRAFER_SERVE"  # the settings as JSON, for `--workers N` and for ASGI hosts (see docs/serve.md)
STATUS_CODES = {"too large": 413, "not an image": 415, "corrupt": 422, "unreadable": 422}
DETECTORS = ("mtcnn", "haar", "none")


@dataclass
class ServeSettings:
    model: str = ""  # a bundle or run folder, or a built-in model's name ("" = the default built-in model)
    device: str = "cpu"
    detector: str = "mtcnn"  # the default of POST /v1/predict's `detector`
    token: str = ""  # bearer token required on /v1/* and /metrics; "" = open (bind to localhost then)
    max_upload_bytes: int = 20_000_000
    max_pixels: int = 50_000_000
    max_batch: int = 16  # requests classified together
    max_wait_ms: float = 10.0  # how long the first request of a batch waits for others
    max_queue: int = 64  # requests waiting beyond this are answered 503
    timeout_s: float = 30.0  # a request not answered by then gets 504
    cors_origins: list[str] = field(default_factory=list)  # CORS is off unless origins are given

    def check(self) -> ServeSettings:
        positive = {"max_upload_bytes": self.max_upload_bytes, "max_pixels": self.max_pixels,
                    "max_batch": self.max_batch, "max_queue": self.max_queue, "timeout_s": self.timeout_s}
        for name, value in positive.items():
            if value <= 0:
                raise FraferError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.max_wait_ms < 0:
            raise FraferError(f"--max-wait-ms must be 0 or more, got {self.max_wait_ms}")
        if self.detector not in DETECTORS:
            raise FraferError(f"--detector must be one of {', '.join(DETECTORS)}, got {self.detector!r}")
        return self


def build_predictor(settings: ServeSettings, detector: str) -> Predictor:
    options = dict(device=settings.device, detector=detector, keep_crops=True, max_pixels=settings.max_pixels)
    if settings.model and Path(settings.model).exists():
        return Predictor.from_bundle(settings.model, **options)
    return Predictor.from_pretrained(settings.model, **options)


def model_card(predictor: Predictor) -> dict:
    bundle = predictor.bundle
    info = bundle.info or {}
    card = {"model": Path(bundle.source).name or bundle.source, "classes": list(bundle.classes),
            "input_size": bundle.input_size, "framing": bundle.framing.to_dict(), "temperature": bundle.temperature,
            "calibration": bundle.calibration, "regions": bundle.regions is not None,
            "trained_on": info.get("data", {}).get("format"), "epoch": info.get("epoch")}
    meta_path = Path(bundle.source) / "bundle.json"
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if isinstance(meta.get("card"), dict):  # built-in models: the measured figures of their card
            card["card"] = {k: v for k, v in meta["card"].items() if not k.endswith("sha256")}
    return card


def _error(status_code: int, status: str, message: str) -> JSONResponse:
    return JSONResponse({"status": status, "message": message}, status_code=status_code)


class UploadLimit:
    """ASGI middleware: answer 413 as soon as a request body grows past `limit` bytes (before it is parsed), and
    at once when its Content-Length says it will."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = _error(413, "too large", f"the upload is over the limit of {self.limit:,} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_large(scope, receive, send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _UploadTooLarge()
            return message

        try:
            await self.app(scope, counted, send)
        except _UploadTooLarge:
            await too_large(scope, receive, send)


class _UploadTooLarge(Exception):
    pass


def create_app(settings: ServeSettings | None = None) -> FastAPIOffline:
    """The ASGI app; the model is loaded here, so a bad model fails before the server listens."""
    settings = (settings or ServeSettings()).check()
    predictors = {settings.detector: build_predictor(settings, settings.detector)}
    default = predictors[settings.detector]
    card = model_card(default)
    registry = CollectorRegistry()
    requests = Counter("frafer_requests", "HTTP requests by path and status code", ["path", "code"],
                       registry=registry)
    latency = Histogram("frafer_request_seconds", "request latency by path", ["path"], registry=registry,
                        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    faces_seen = Counter("frafer_faces", "faces classified", registry=registry)
    batch_sizes = Histogram("frafer_batch_size", "requests classified together", registry=registry,
                            buckets=(1, 2, 4, 8, 16, 32, 64))

    def predictor_for(detector: str) -> Predictor:
        if detector not in predictors:  # the same bundle and weights, another face finder
            predictors[detector] = Predictor(default.bundle, detector=detector, keep_crops=True,
                                             max_pixels=settings.max_pixels, device=settings.device)
        return predictors[detector]

    def run_batch(items: list[dict]) -> list[list]:
        """Detect each image, classify the faces of every image in one batch per detector, explain on request."""
        batch_sizes.observe(len(items))
        results: list[list | None] = [None] * len(items)
        for detector in {item["detector"] for item in items}:
            chosen = [i for i, item in enumerate(items) if item["detector"] == detector]
            predictor = predictor_for(detector)
            rgbs = [items[i]["rgb"] for i in chosen]
            found = [[Face((0.0, 0.0, float(r.shape[1]), float(r.shape[0])), 1.0)] if detector == "none"
                     else predictor.detect(r) for r in rgbs]
            for i, faces in zip(chosen, predictor.predict_detected(rgbs, found), strict=True):
                if items[i]["heatmaps"]:
                    predictor.explain(faces)
                results[i] = faces
        return results

    batcher = MicroBatcher(run_batch, settings.max_batch, settings.max_wait_ms, settings.max_queue)

    async def lifespan(app):
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPIOffline(title="frafer", version="1", lifespan=lifespan,
                         description="Facial expression recognition: faces, labels, calibrated probabilities and "
                                     "where the model looked.")
    app.state.settings, app.state.batcher, app.state.card = settings, batcher, card
    static = resources.files("frafer.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(UploadLimit, limit=settings.max_upload_bytes)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        path = request.url.path
        protected = path.startswith("/v1/") or path == "/metrics"
        start = time.perf_counter()
        if protected and settings.token and not _authorised(request, settings.token):
            response = _error(401, "unauthorised", "a valid bearer token is needed (Authorization: Bearer …)")
        else:
            response = await call_next(request)
        known = path if path in ("/", "/v1/predict", "/v1/model", "/healthz", "/metrics") else "other"
        requests.labels(known, str(response.status_code)).inc()
        latency.labels(known).observe(time.perf_counter() - start)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error(err.status_code, "error", str(err.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()))
        return _error(422, "invalid request", f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception):
        return _error(500, "internal error", f"{type(err).__name__}: the request could not be completed")

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(str(static / "index.html"), media_type="text/html")

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok", "queued": batcher.pending()}

    @app.get("/v1/model")
    async def model():
        return card

    @app.get("/metrics", include_in_schema=False)
    async def metrics():
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    def _busy() -> JSONResponse:
        return _error(503, "busy", f"the queue is full ({settings.max_queue} requests waiting); retry shortly")

    @app.post("/v1/predict")
    async def predict(request: Request, detector: str = "", heatmaps: bool = False, annotate: bool = False,
                      top_k: int = 0):
        detector = detector or settings.detector
        if detector not in DETECTORS:
            return _error(422, "invalid request", f"detector must be one of {', '.join(DETECTORS)}")
        classes = len(default.classes)
        if not 0 <= top_k <= classes:
            return _error(422, "invalid request", f"top_k must be in [0, {classes}] (0 = every class)")
        if batcher.full():  # refuse before reading or decoding anything: a full queue must stay cheap to answer
            return _busy()
        name, data = await _upload(request)
        if not data:
            return _error(422, "invalid request", "send an image: multipart field 'image', or the raw body")
        try:
            rgb = await asyncio.to_thread(read_image, data, settings.max_pixels)
        except BadInput as bad:
            return _error(STATUS_CODES.get(bad.status, 422), bad.status, bad.reason)
        job = {"rgb": rgb, "detector": detector, "heatmaps": heatmaps}
        try:
            faces = await asyncio.wait_for(batcher.submit(job), settings.timeout_s)
        except Busy:
            return _busy()
        except TimeoutError:
            return _error(504, "timeout", f"no answer within {settings.timeout_s:g} s")
        faces_seen.inc(len(faces))
        if annotate:
            buffer = io.BytesIO()
            draw_boxes(rgb, faces, default.classes).save(buffer, format="PNG")
            return Response(buffer.getvalue(), media_type="image/png")
        line = {"file": name, "frame": None, "time": None, "status": "ok" if faces else "no face", "reason": "",
                "faces": [_record(f, predictor_for(detector), top_k, heatmaps) for f in faces]}
        return line

    return app


def _record(face, predictor: Predictor, top_k: int, heatmaps: bool) -> dict:
    record = face_record(face, predictor.classes)
    if top_k:
        best = sorted(record["probabilities"].items(), key=lambda kv: -kv[1])[:top_k]
        record["probabilities"] = dict(best)
    if heatmaps:
        trunk = "pretrained" if face.heatmaps is not None else None
        buffer = io.BytesIO()
        face_panel(face, predictor.cam_layer, trunk).save(buffer, format="PNG")
        record["panel"] = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    return record


async def _upload(request: Request) -> tuple[str, bytes]:
    """(file name, bytes) of the image: the multipart field `image`, else the raw body."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return "", b""
        return Path(upload.filename or "upload").name, await upload.read()
    return "upload", await request.body()


def _authorised(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def settings_from_env() -> ServeSettings:
    raw = os.environ.get(ENV, "{}")
    try:
        return ServeSettings(**json.loads(raw))
    except (TypeError, json.JSONDecodeError) as err:
        raise FraferError(f"{ENV} must hold the serve settings as JSON ({err})") from None


def app_from_env() -> FastAPIOffline:
    """For `--workers N` and ASGI hosts: `uvicorn --factory frafer.serve.app:app_from_env` with FRAFER_SERVE set."""
    return create_app(settings_from_env())


