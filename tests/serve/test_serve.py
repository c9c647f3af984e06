"""`frafer serve` through an HTTP client: the predict schema, every limit and error, the token, the queue, batching."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from frafer.artifacts.bundle import save_bundle
from frafer.artifacts.trunk_init import TrunkLayout
from frafer.cli import main
from frafer.models.backbones import build_trunk
from frafer.models.classifier import FERClassifier
from frafer.serve.app import ServeSettings, create_app
from frafer.serve.batcher import Busy, MicroBatcher

httpx = pytest.importorskip("httpx", reason="httpx is a test dependency (pip install -e .[dev])")
from fastapi.testclient import TestClient  # noqa: E402  (needs httpx)

skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is a test dependency")
CLASSES = ["neutral", "happy", "sad"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = FERClassifier(build_trunk("resnet18", width=4, remove_maxpool=True), len(CLASSES), head_init_std=0.5)
    return save_bundle(tmp_path_factory.mktemp("serve") / "b", model.eval(), CLASSES, 32, (0.5,) * 3, (0.25,) * 3,
                       TrunkLayout("resnet18", (2, 2, 2, 2), 4, True), {"data": {"format": "ferplus"}})


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    Image.fromarray(skimage_data.astronaut()).save(path)
    return path


def client(bundle, **settings) -> TestClient:
    return TestClient(create_app(ServeSettings(model=str(bundle), **settings)))


def png(size=(32, 32), value=128) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_api_answers_with_predicts_own_schema(bundle, astronaut, tmp_path):
    assert main(["predict", "--model", str(bundle), str(astronaut), "--out", str(tmp_path / "o")]) == 0
    want = json.loads((tmp_path / "o" / "predictions.jsonl").read_text())
    with client(bundle) as c:
        got = c.post("/v1/predict", files={"image": ("astronaut.png", astronaut.read_bytes(), "image/png")})
        raw = c.post("/v1/predict", content=astronaut.read_bytes(), headers={"content-type": "image/png"})
    assert got.status_code == 200 and raw.status_code == 200
    got = got.json()
    assert set(got) == set(want) and got["status"] == want["status"] == "ok"
    assert got["file"] == Path(want["file"]).name
    assert got["faces"] == want["faces"]  # identical boxes, landmarks, labels and probabilities
    assert raw.json()["faces"] == want["faces"]


def test_model_health_and_metrics(bundle):
    with client(bundle, detector="none") as c:
        card = c.get("/v1/model").json()
        assert card["classes"] == CLASSES and card["input_size"] == 32
        assert c.get("/healthz").json()["status"] == "ok"
        c.post("/v1/predict", content=png())
        metrics = c.get("/metrics").text
    assert 'frafer_requests_total{code="200",path="/v1/predict"} 1.0' in metrics
    assert "frafer_request_seconds_bucket" in metrics and "frafer_faces_total 1.0" in metrics


def test_options_top_k_annotate_heatmaps_and_detector(bundle, astronaut):
    with client(bundle) as c:
        top = c.post("/v1/predict?top_k=2&detector=none", content=png()).json()
        assert len(top["faces"][0]["probabilities"]) == 2
        picture = c.post("/v1/predict?annotate=true", content=astronaut.read_bytes())
        assert picture.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(picture.content)).size == (512, 512)
        explained = c.post("/v1/predict?heatmaps=true", content=astronaut.read_bytes()).json()
        assert explained["faces"][0]["panel"].startswith("data:image/png;base64,")
        plain = c.post("/v1/predict", content=astronaut.read_bytes()).json()
        assert "panel" not in plain["faces"][0]  # a request without heatmaps does not pay for them
        for bad in ("top_k=9", "top_k=abc", "detector=nosuch"):
            r = c.post(f"/v1/predict?{bad}", content=png())
            assert r.status_code == 422 and r.json()["status"] == "invalid request"


def test_the_token(bundle):
    with client(bundle, token="s3cret", detector="none") as c:
        assert c.post("/v1/predict", content=png()).status_code == 401
        assert c.get("/v1/model", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/metrics").status_code == 401
        r = c.post("/v1/predict", content=png(), headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200  # the page loads; asks


@pytest.mark.parametrize("case, code, status", [
    ("upload", 413, "too large"), ("pixels", 413, "too large"), ("text", 415, "not an image"),
    ("truncated", 422, "corrupt"), ("empty", 422, "invalid request"),
])
def test_limits_and_bad_images(bundle, case, code, status):
    big = png((4000, 3000))  # 12 MP of one colour: a few KB of PNG
    body = {"upload": b"x" * 3_000_000, "pixels": big, "text": b"hello, not an image",
            "truncated": png((64, 64), 7)[:60] + b"\0" * 40, "empty": b""}[case]
    with client(bundle, detector="none", max_upload_bytes=2_000_000, max_pixels=1_000_000) as c:
        r = c.post("/v1/predict", files={"image": ("x.png", body, "image/png")})
    assert r.status_code == code and r.json()["status"] == status, r.text
    assert "Traceback" not in r.text


def test_errors_are_json(bundle):
    with client(bundle) as c:
        missing = c.get("/v1/nothing")
        wrong = c.get("/v1/predict")
    assert missing.status_code == 404 and missing.json()["message"]
    assert wrong.status_code == 405 and wrong.json()["message"]


def test_the_openapi_docs_are_served_without_a_cdn(bundle):
    with client(bundle) as c:
        page = c.get("/docs").text
        assert "cdn" not in page.lower()
        assert "/v1/predict" in c.get("/openapi.json").json()["paths"]


# ----------------------------------------------------------------------------------------------- load behaviour


def slow(run_batch, seconds):
    def run(items):
        time.sleep(seconds)
        return run_batch(items)
    return run


def test_a_full_queue_answers_503_and_a_slow_answer_504(bundle):
    app = create_app(ServeSettings(model=str(bundle), detector="none", max_queue=2, max_batch=1, timeout_s=5))
    batcher = app.state.batcher
    batcher.run_batch = slow(batcher.run_batch, 0.5)

    async def burst():
        await batcher.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            answers = await asyncio.gather(*[c.post("/v1/predict", content=png()) for _ in range(8)])
        await batcher.stop()
        return answers

    answers = asyncio.run(burst())
    codes = sorted(r.status_code for r in answers)
    assert codes.count(503) >= 4 and codes.count(200) >= 2, codes
    assert all(r.json()["status"] == "busy" for r in answers if r.status_code == 503)

    app = create_app(ServeSettings(model=str(bundle), detector="none", timeout_s=0.2))
    app.state.batcher.run_batch = slow(app.state.batcher.run_batch, 1.0)
    with TestClient(app) as c:
        r = c.post("/v1/predict", content=png())
    assert r.status_code == 504 and r.json()["status"] == "timeout"


def test_requests_arriving_together_share_a_batch(bundle):
    app = create_app(ServeSettings(model=str(bundle), detector="none", max_batch=16, max_wait_ms=200))

    async def together():
        await app.state.batcher.start()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            answers = await asyncio.gather(*[c.post("/v1/predict", content=png(value=v)) for v in range(6)])
        await app.state.batcher.stop()
        return answers

    answers = asyncio.run(together())
    assert all(r.status_code == 200 for r in answers)
    assert app.state.batcher.items == 6 and app.state.batcher.batches < 6


def test_the_batcher_refuses_beyond_its_queue():
    started = threading.Event()

    def block(items):
        started.set()
        time.sleep(0.3)
        return items

    async def scenario():
        batcher = MicroBatcher(block, max_batch=1, max_wait_ms=0, max_queue=1)
        await batcher.start()
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)  # the first is running; the queue is empty again
        second = asyncio.create_task(batcher.submit(2))
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher.submit(3)
        results = await asyncio.gather(first, second)
        await batcher.stop()
        return results

    assert asyncio.run(scenario()) == [1, 2]


def test_serve_refuses_bad_settings_in_one_line(bundle, tmp_path, capsys):
    assert main(["serve", str(bundle), "--max-queue", "0"]) == 2
    assert "--max-queue" in capsys.readouterr().err
    assert main(["serve", str(bundle), "--token-file", str(tmp_path / "missing")]) == 2
    assert "--token-file" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "nothing-here")]) == 2
    assert "unknown built-in model" in capsys.readouterr().err
