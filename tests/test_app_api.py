"""The app's API through gradio_client against an in-process server (real HTTP, queue, sessions)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image
from test_studio import private_studio

from app.main import launch_app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, synthcity_tiny: Path):
    studio = private_studio(tmp_path_factory, synthcity_tiny)
    demo, url = launch_app(studio, port=None, prevent_thread_lock=True, quiet=True)
    _wait_ready(url)
    yield studio, url
    studio.shutdown()
    demo.close()


def _wait_ready(url: str, timeout: float = 60.0) -> None:
    """The "Running on" line prints before the server answers; poll its info route."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}gradio_api/info", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@pytest.fixture
def client(served) -> Client:
    return Client(served[1], verbose=False, analytics_enabled=False, download_files=False)


def test_api_lists_the_named_endpoints(client: Client) -> None:
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    expected = {"/grid", "/readout", "/click", "/diff", "/iou_table", "/upload", "/gallery",
                "/tp_explain", "/umap_project", "/bank_show", "/longtail_iou", "/train_start",
                "/train_poll", "/train_stop", "/refresh"}  # fmt: skip
    assert expected <= names


def test_readout_over_http_matches_the_engine(served, client: Client) -> None:
    studio, _ = served
    heading, table = client.predict(["run:dida", "run:source_only"], 12, 30, api_name="/readout")
    assert "x=12, y=30" in heading
    rows = table["data"]
    assert rows[0][:2] == ["ground truth", studio.readout([], 0, 12, 30)[0].class_name]
    dida = studio.readout(["run:dida"], 0, 12, 30)[1]
    assert rows[1][1] == dida.class_name and float(rows[1][2]) == pytest.approx(dida.prob, abs=1e-3)


def test_bad_uploads_come_back_as_named_errors(client: Client, tmp_path: Path) -> None:
    fake = tmp_path / "photo.png"
    fake.write_bytes(b"\x00\x01\x02 not an image")
    with pytest.raises(Exception, match="photo.png is not a readable image"):
        client.predict(handle_file(str(fake)), api_name="/upload")
    other = tmp_path / "weights.bin"
    other.write_bytes(b"\x00")
    with pytest.raises(Exception, match="Invalid file type"):
        client.predict(handle_file(str(other)), api_name="/upload")


def test_an_upload_becomes_the_session_image(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "street.png"
    Image.fromarray(np.full((48, 80, 3), 120, np.uint8)).save(path)
    client.predict(handle_file(str(path)), api_name="/upload")  # sets the session's image (a State)
    heading, table = client.predict(["run:dida"], 79, 47, api_name="/readout")
    assert "x=79, y=47" in heading
    assert [r[0][:11] for r in table["data"]] == ["DIDA · dida"]  # an upload has no ground truth


def test_training_over_the_api_reports_progress_and_stops(served, client: Client) -> None:
    studio, _ = served
    status, timer = client.predict(
        "source_only", "tiny", 400, 0, "api_run", 300, 0.1, 1.0, "scratch", api_name="/train_start"
    )
    job = next(j for j in studio.trainer.jobs.values() if j.name == "api_run")
    assert f"**{job.job_id}**" in status and timer["active"] is True
    assert "`python -m dida.train --method source_only --preset tiny --seed 0 --iters 400" in status
    assert "--name api_run" in status and "--set method.tp=0.1" not in status  # source-only: no tp
    deadline = time.monotonic() + 120
    while not any(e.kind == "train" for e in job.events) and time.monotonic() < deadline:
        time.sleep(0.1)
    status, progress, losses, *_ = client.predict("cityscapes", api_name="/train_poll")
    assert "running" in status and "<progress" in progress and "loss_source" in losses["plot"]
    assert "stop requested" in client.predict(api_name="/train_stop")
    while not job.done and time.monotonic() < deadline:
        time.sleep(0.1)
    status, *_ = client.predict("cityscapes", api_name="/train_poll")
    assert job.state == "stopped" and "stopped" in status and job.last.it < 400
