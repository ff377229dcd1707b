"""`python -m engine models list | download | verify` against the suite's model server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.cli.main import main
from engine.models import loading, registry
from engine.models.loading import load_vqgan
from engine.models.registry import CLIPSpec, UpscalerSpec, VQGANKind, VQGANSpec
from engine.models.tiny import TINY_DDCONFIG
from tests.engine.model_files import small_vqgan, taming_yaml, vqgan_checkpoint
from tests.engine.model_server import ModelServer, Reply

ROOT = Path(__file__).resolve().parents[2]
CLIP_BYTES = os.urandom(300_000)  # never loaded here: only downloaded and hashed
UPSCALER_BYTES = os.urandom(200_000)


@pytest.fixture
def served_registry(model_server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> ModelServer:
    """A registry of one VQGAN (with a dead main URL and a mirror), one CLIP and one upscaler, all on the server."""
    source = small_vqgan(seed=21)
    dead = model_server.serve("/dead.yaml", Reply(b"gone", status=404, content_type="text/plain"))
    yaml = model_server.serve("/vqgan/model.yaml", Reply(taming_yaml("taming.models.vqgan.VQModel")))
    ckpt = model_server.serve("/vqgan/last.ckpt", Reply(vqgan_checkpoint(source)))
    vqgan = VQGANSpec("small_vqgan", dead, ckpt, VQGANKind.PLAIN, TINY_DDCONFIG, 32, 64, yaml_mirrors=(yaml,))
    clip_url = model_server.serve("/clip/Small-16.pt", Reply(CLIP_BYTES))
    clip = CLIPSpec("Small/16", clip_url, hashlib.sha256(CLIP_BYTES).hexdigest(), 32, 64, ())
    upscaler = UpscalerSpec("Small_x2.pth", model_server.serve("/Small_x2.pth", Reply(UPSCALER_BYTES)), 2, 1)
    monkeypatch.setattr(registry, "VQGAN_MODELS", {vqgan.name: vqgan})
    monkeypatch.setattr(registry, "CLIP_MODELS", {clip.name: clip})
    monkeypatch.setattr(registry, "REAL_ESRGAN_MODELS", {upscaler.file_name: upscaler})
    monkeypatch.setattr(registry, "DOWNLOAD_SIZES", {"small_vqgan": 7 * 10**6})
    monkeypatch.setattr(loading, "VQGAN_MODELS", {vqgan.name: vqgan})  # first use reads the same registry
    return model_server


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    status = main(["models", *args])
    captured = capsys.readouterr()
    return status, captured.out.splitlines(), captured.err.splitlines()


def rows(out: list[str]) -> dict[str, list[str]]:
    """`models list` rows by model name: [kind, size, cached, checksum] (columns are 2 or more spaces apart)."""
    assert re.split(r"\s{2,}", out[0]) == ["NAME", "KIND", "SIZE", "CACHED", "CHECKSUM"]
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in out[1:-1])}


def test_list_shows_every_registry_model_with_nothing_cached(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(capsys, "list")
    assert status == 0
    assert err == []
    table = rows(out)
    names = {"tiny", *registry.VQGAN_MODELS, *registry.CLIP_MODELS}
    names |= {Path(key).stem for key in registry.REAL_ESRGAN_MODELS}
    assert set(table) == names
    assert table["vqgan_imagenet_f16_16384"] == ["vqgan", "~980 MB", "no", "-"]
    assert table["ViT-B/32"][0::2] == ["clip", "no"]
    assert table["faceshq"][1] == "?"  # no size known until it is cached
    assert table["RealESRGAN_x4plus"][0] == "upscaler"
    assert table["tiny"] == ["preset", "-", "built in", "-"]
    assert out[-1] == f"cache: {model_dir}"


def test_download_two_models_then_list_shows_them_cached_and_checked(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, before, _ = run(capsys, "list")
    assert {name: row[2] for name, row in rows(before).items()} == {
        "tiny": "built in", "small_vqgan": "no", "Small/16": "no", "Small_x2": "no",
    }  # fmt: skip
    assert rows(before)["small_vqgan"][1] == "~7 MB"

    status, out, err = run(capsys, "download", "small_vqgan", "Small/16")
    assert status == 0, err
    assert out[1:] == ["Small/16: downloaded (300 kB)", f"cache: {model_dir}"]
    assert out[0].startswith("small_vqgan: downloaded (")
    assert any("small_vqgan.ckpt" in line and "100%" in line for line in err)  # the progress bars
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "Small-16.pt", "small_vqgan.ckpt", "small_vqgan.ckpt.sha256", "small_vqgan.yaml", "small_vqgan.yaml.sha256",
    ]  # fmt: skip  # the CLIP's checksum is OpenAI's, known in advance: nothing to record

    _, after, _ = run(capsys, "list")
    table = rows(after)
    assert table["small_vqgan"][2:] == ["yes", "recorded-at-first-download"]
    assert table["Small/16"][2:] == ["yes", "verified"]
    assert table["Small_x2"][2:] == ["no", "-"]
    assert not table["small_vqgan"][1].startswith("~")  # the size on disk now, no longer the registry's guess


def test_a_downloaded_model_is_found_by_its_first_use_without_a_request(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "download", "small_vqgan")[0] == 0
    hits = served_registry.total_hits
    model = load_vqgan("small_vqgan", device=torch.device("cpu"), progress=False)
    assert served_registry.total_hits == hits
    assert torch.equal(model.codebook, small_vqgan(seed=21).codebook)


def test_download_all_then_again_fetches_nothing_twice(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, _ = run(capsys, "download", "--all")
    assert status == 0
    assert out[0] == "tiny: built in, nothing to download"
    assert {line.split(":")[0] for line in out[1:4]} == {"small_vqgan", "Small/16", "Small_x2"}
    hits = served_registry.total_hits
    status, again, _ = run(capsys, "download", "--all")
    assert status == 0
    assert served_registry.total_hits == hits
    assert all("already cached, checksum ok" in line for line in again[1:4])


def test_verify_catches_a_corrupted_cached_file(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "download", "--all")[0] == 0
    status, out, _ = run(capsys, "verify")
    assert status == 0
    assert out == [
        f"all well: 4 cached model files in {model_dir}: 1 verified, 3 as recorded at first download, 0 with no checksum"
    ]

    checkpoint = model_dir / "small_vqgan.ckpt"
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, as a bad disk or a partial copy leaves it
    checkpoint.write_bytes(bytes(data))
    (model_dir / "Small-16.pt").write_bytes(b"not the file OpenAI published")

    status, out, _ = run(capsys, "verify")
    assert status == 1
    assert len(out) == 3  # one line per mismatch, then the count
    assert out[0].startswith(f"mismatch: the cached file {model_dir / 'Small-16.pt'} does not match its known SHA-256")
    assert out[1].startswith(f"mismatch: the cached file {checkpoint} does not match its recorded SHA-256")
    assert out[1].endswith("delete it to download it again")
    assert out[2] == f"2 of 4 cached model files in {model_dir} changed after their download"
    assert rows(run(capsys, "list")[1])["small_vqgan"][3] == "mismatch"


def test_a_file_placed_by_hand_has_an_unknown_checksum(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir.mkdir()
    (model_dir / "Small_x2.pth").write_bytes(UPSCALER_BYTES)
    (model_dir / ".Small-16.pt.x1y2.part").write_bytes(b"an unfinished download")
    assert rows(run(capsys, "list")[1])["Small_x2"][2:] == ["yes", "unknown"]
    status, out, _ = run(capsys, "verify")
    assert status == 0
    assert out[0].endswith(": 0 verified, 0 as recorded at first download, 1 with no checksum")
    assert not (model_dir / "Small_x2.pth.sha256").exists()  # verifying changes nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["download", "nosuch"], "error: unknown model 'nosuch'; `python -m engine models list` shows the known names"),
        (["download", "small_vqgan", "nosuch"], "error: unknown model 'nosuch'"),
        (["download"], "error: name the models to download"),
        (["download", "--all", "small_vqgan"], "error: give model names or --all, not both"),
        (["check"], "error: argument list|download|verify: invalid choice: 'check'"),
    ],
)
def test_a_bad_request_is_one_line_and_status_2_and_fetches_nothing(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    status, out, err = run(capsys, *args)
    assert status == 2
    assert out == []
    assert len(err) == 1
    assert err[0].startswith(message)
    assert served_registry.total_hits == 0
    assert not model_dir.exists()


def test_a_failed_download_fails_the_command_and_the_others_still_arrive(
    served_registry: ModelServer, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = served_registry.serve("/Small_x2.pth", Reply(b"missing", status=404, content_type="text/plain"))
    status, out, err = run(capsys, "download", "Small_x2", "Small/16")
    assert status == 1
    assert [line for line in err if line.startswith("error:")] == [
        f"error: Small_x2: downloading {url} failed: HTTP 404 Not Found"
    ]
    assert out[0].startswith("Small/16: downloaded")
    assert sorted(p.name for p in model_dir.iterdir()) == ["Small-16.pt"]


def test_the_models_command_runs_in_a_real_process(model_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "engine", "models", "verify"], capture_output=True, text=True, env=env, timeout=120
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, f"no model files in {model_dir}\n", "")
