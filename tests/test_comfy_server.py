"""The node pack in a real ComfyUI server; runs only when COMFYUI_DIR points at a ComfyUI checkout.

ComfyUI starts with `main.py --cpu` on 127.0.0.1 (a free port) and a temporary base directory whose
custom_nodes/triergon links to this repository, so the checkout is not touched. Its Python is COMFYUI_PYTHON, else
COMFYUI_DIR/venv/bin/python or .venv/bin/python, else this interpreter. The test checks /object_info, submits each
API-format example to /prompt, waits on /history and checks the saved files.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import pytest
from _comfy_graph import load_api
from _videos import write_video

from triergon import NODE_CLASS_MAPPINGS

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run this test")
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = ("triergon_video_lufs_edit", "triergon_text_reference_audio", "triergon_frames_fps")
START_TIMEOUT_S, RUN_TIMEOUT_S = 300, 600


def _python(comfy: Path) -> str:
    if os.environ.get("COMFYUI_PYTHON"):
        return os.environ["COMFYUI_PYTHON"]
    for venv in ("venv", ".venv"):
        if (comfy / venv / "bin" / "python").is_file():
            return str(comfy / venv / "bin" / "python")
    return sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def _post(url: str, data: dict) -> dict:
    req = urllib.request.Request(url, json.dumps(data).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise AssertionError(f"/prompt refused the workflow: {e.read().decode()}") from e


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    comfy = Path(COMFYUI_DIR).resolve()
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "triergon").symlink_to(REPO, target_is_directory=True)
    inputs = base / "input"
    inputs.mkdir()
    write_video(inputs / "triergon_example.mp4", fps=Fraction(30000, 1001), num_frames=45, audio=True, size=(36, 50))
    import torch

    from triergon.triergon_core.audio import write_audio

    t = torch.arange(48000 * 2) / 48000
    write_audio(inputs / "triergon_example.wav", (0.3 * torch.sin(2 * torch.pi * 330 * t))[None], sample_rate=48000)
    port = _free_port()
    log = open(base / "comfyui.log", "w")  # noqa: SIM115  (closed at teardown)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRIERGON_INPUT_DIR", "TRIERGON_TEMP_DIR")}
    proc = subprocess.Popen([_python(comfy), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                             "--base-directory", str(base), "--database-url", "sqlite:///:memory:",
                             "--disable-auto-launch"], cwd=comfy, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_TIMEOUT_S
    while True:
        try:
            _get(f"{url}/system_stats")
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                log.close()
                proc.kill()
                pytest.fail(f"ComfyUI did not start:\n{(base / 'comfyui.log').read_text()[-4000:]}")
            time.sleep(1)
    yield url, base
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_object_info_lists_every_node_with_its_inputs(server):
    url, _ = server
    info = _get(f"{url}/object_info")
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        assert node_id in info, f"{node_id} missing from /object_info"
        got = info[node_id]
        assert got["category"] == "Tri-Ergon" and got["output"] == list(cls.RETURN_TYPES)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            assert list(got["input"].get(section, {})) == list(spec.get(section, {})), (node_id, section)
    assert "triergon_example.mp4" in info["TriErgonLoadVideo"]["input"]["required"]["video"][0]


def test_example_workflows_are_served_as_templates(server):
    url, _ = server
    listed = _get(f"{url}/workflow_templates")["triergon"]
    for name in EXAMPLES:
        assert name in listed and f"{name}.api" in listed
        ui = _get(f"{url}/api/workflow_templates/triergon/{name}.json")
        assert {n["type"] for n in ui["nodes"]} == {v["class_type"] for v in load_api(name).values()}


def _run(url: str, prompt: dict) -> dict:
    prompt_id = _post(f"{url}/prompt", {"prompt": prompt, "client_id": "triergon-test"})["prompt_id"]
    deadline = time.time() + RUN_TIMEOUT_S
    while time.time() < deadline:
        history = _get(f"{url}/history/{prompt_id}")
        if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
            entry = history[prompt_id]
            assert entry["status"]["status_str"] == "success", json.dumps(entry["status"], indent=1)[-3000:]
            return entry
        time.sleep(1)
    raise AssertionError(f"workflow did not finish in {RUN_TIMEOUT_S} s")


def _audio_packet_end(path: Path) -> tuple[float, int, int]:
    import av

    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        ends = [float((p.pts + p.duration) * p.time_base) for p in c.demux(stream) if p.size]
        return max(ends), stream.codec_context.channels, stream.codec_context.sample_rate


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_workflow_runs_and_saves(server, name):
    from triergon.triergon_core.video import probe_video

    url, base = server
    prompt = load_api(name)
    before = set((base / "output").rglob("*")) if (base / "output").exists() else set()
    _run(url, prompt)
    saved = sorted(p for p in set((base / "output").rglob("*")) - before if p.is_file())
    assert saved, "no file saved"
    video_seconds = probe_video(base / "input" / "triergon_example.mp4").duration
    for path in saved:
        end, channels, rate = _audio_packet_end(path)
        assert (channels, rate) == (2, 44100), path
        if path.suffix == ".mp4":
            assert probe_video(path).duration == pytest.approx(video_seconds, abs=1e-6)
            assert end == pytest.approx(video_seconds, abs=1 / 44100), path
        else:
            assert end == pytest.approx(1.0, abs=1 / 44100), path
    shutil.copytree(base / "output", base / f"kept-{name}", dirs_exist_ok=True)


def test_cancel_stops_a_long_sampling_run(server):
    url, _ = server
    prompt = load_api("triergon_text_reference_audio")
    # 1000 steps of four 60 s takes of the tiny preset (the demo model's window is 10 s): minutes even on an idle
    # CPU (the tiny model's step is a few ms per second of audio and take), so only Cancel ends it soon
    prompt["1"]["inputs"]["checkpoint"] = "preset: tiny (random weights)"
    prompt["3"]["inputs"]["duration"] = 60.0
    prompt["5"]["inputs"]["steps"] = 1000
    prompt["5"]["inputs"]["batch_size"] = 4
    prompt["5"]["inputs"]["seed"] = 12345
    prompt_id = _post(f"{url}/prompt", {"prompt": prompt, "client_id": "triergon-test"})["prompt_id"]
    deadline = time.time() + 120
    while not _get(f"{url}/queue")["queue_running"]:
        assert time.time() < deadline, "the prompt never started"
        time.sleep(0.5)
    time.sleep(20)  # well into the sampling loop (model loading and encoding take a few seconds)
    started = time.time()
    urllib.request.urlopen(urllib.request.Request(f"{url}/interrupt", b"", method="POST"), timeout=30).close()
    while True:
        entry = _get(f"{url}/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        assert time.time() - started < 60, "Cancel did not stop the run"
        time.sleep(0.5)
    interrupted = [data for kind, data in entry["status"]["messages"] if kind == "execution_interrupted"]
    assert interrupted and interrupted[0]["node_id"] == "5", entry["status"]  # in Sample
