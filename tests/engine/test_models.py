"""load_vqgan / load_clip end to end against 127.0.0.1, and the random-weight architectures for the benchmark."""

from __future__ import annotations

import hashlib
from pathlib import Path

import clip
import pytest
import torch

from engine.errors import ModelLoadError
from engine.jobs import DEFAULT_CLIP, DEFAULT_VQGAN
from engine.models import loading
from engine.models.loading import build_clip_architecture, build_vqgan_architecture, load_clip, load_vqgan
from engine.models.registry import CLIP_MODELS, VQGAN_MODELS, CLIPSpec, VQGANKind, VQGANSpec
from engine.models.tiny import TINY_DDCONFIG, build_tiny_vqgan
from tests.engine.model_files import (
    clip_archive,
    malicious_checkpoint,
    small_clip,
    small_vqgan,
    taming_yaml,
    vqgan_checkpoint,
)
from tests.engine.model_server import ModelServer, Reply

CPU = torch.device("cpu")


def serve_vqgan(server: ModelServer, checkpoint: bytes) -> tuple[str, str]:
    yaml_url = server.serve("/custom/model.yaml", Reply(taming_yaml("taming.models.vqgan.VQModel")))
    ckpt_url = server.serve("/custom/last.ckpt", Reply(checkpoint))
    return yaml_url, ckpt_url


def test_a_custom_vqgan_downloads_once_into_engine_model_dir(model_server: ModelServer, model_dir: Path) -> None:
    source = small_vqgan(seed=11)
    yaml_url, ckpt_url = serve_vqgan(model_server, vqgan_checkpoint(source))

    first = load_vqgan("my_vqgan", device=CPU, yaml_url=yaml_url, ckpt_url=ckpt_url, progress=False)
    assert model_server.total_hits == 2
    assert {"my_vqgan.yaml", "my_vqgan.ckpt"} <= {p.name for p in model_dir.iterdir()}
    second = load_vqgan("my_vqgan", device=CPU, yaml_url=yaml_url, ckpt_url=ckpt_url, progress=False)
    assert model_server.total_hits == 2  # the second load came from the cache

    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = source.encode(pixels)
        for loaded in (first, second):
            assert torch.equal(loaded.encode(pixels), z)
            assert torch.equal(loaded.decode(z), source.decode(z))
            assert not loaded.training


def test_a_registry_model_falls_back_to_its_mirrors(
    model_server: ModelServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = small_vqgan(seed=13)
    dead_yaml = model_server.serve("/dead/model.yaml", Reply(b"gone", status=404, content_type="text/plain"))
    dead_ckpt = model_server.serve("/dead/last.ckpt", Reply(b"<html>Link does not exist.</html>"))
    yaml_url, ckpt_url = serve_vqgan(model_server, vqgan_checkpoint(source))
    spec = VQGANSpec("mirrored", dead_yaml, dead_ckpt, VQGANKind.PLAIN, TINY_DDCONFIG, 32, 64,
                     yaml_mirrors=(yaml_url,), ckpt_mirrors=(ckpt_url,))  # fmt: skip
    monkeypatch.setattr(loading, "VQGAN_MODELS", {**VQGAN_MODELS, spec.name: spec})
    loaded = load_vqgan("mirrored", device=CPU, progress=False)
    assert torch.equal(loaded.codebook, source.codebook)
    assert model_server.hits == {
        "/dead/model.yaml": 1,
        "/custom/model.yaml": 1,
        "/dead/last.ckpt": 1,
        "/custom/last.ckpt": 1,
    }
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "mirrored.ckpt",
        "mirrored.ckpt.sha256",
        "mirrored.yaml",
        "mirrored.yaml.sha256",
    ]


def test_an_explicit_model_dir_wins_over_the_environment(
    model_server: ModelServer, model_dir: Path, tmp_path: Path
) -> None:
    yaml_url, ckpt_url = serve_vqgan(model_server, vqgan_checkpoint(small_vqgan()))
    explicit = tmp_path / "explicit"
    load_vqgan("mine", device=CPU, model_dir=explicit, yaml_url=yaml_url, ckpt_url=ckpt_url, progress=False)
    assert (explicit / "mine.ckpt").exists()
    assert not model_dir.exists()


def test_a_malicious_checkpoint_fails_to_load_without_running(
    model_server: ModelServer, model_dir: Path, tmp_path: Path
) -> None:
    marker = tmp_path / "payload-ran"
    yaml_url, ckpt_url = serve_vqgan(model_server, malicious_checkpoint(small_vqgan(), marker))
    with pytest.raises(ModelLoadError, match=r"posix\.system"):
        load_vqgan("evil", device=CPU, yaml_url=yaml_url, ckpt_url=ckpt_url, progress=False)
    assert not marker.exists()


def test_an_html_page_for_the_yaml_is_a_clean_error(model_server: ModelServer, model_dir: Path) -> None:
    page = b"<!DOCTYPE html><html><body>Link does not exist.</body></html>"
    yaml_url = model_server.serve("/dead.yaml", Reply(page, content_type="text/html"))
    ckpt_url = model_server.serve("/dead.ckpt", Reply(vqgan_checkpoint(small_vqgan())))
    with pytest.raises(ModelLoadError, match="HTML page"):
        load_vqgan("dead", device=CPU, yaml_url=yaml_url, ckpt_url=ckpt_url, progress=False)
    assert not model_dir.exists() or not any(model_dir.iterdir())


def test_clip_is_loaded_from_an_archive_like_openais(
    model_server: ModelServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = small_clip()
    archive = clip_archive(source)
    url = model_server.serve("/clip/Small-B-16.pt", Reply(archive))
    spec = CLIPSpec("Small/16", url, hashlib.sha256(archive).hexdigest(), 32, 64, ())
    monkeypatch.setattr(loading, "CLIP_MODELS", {**CLIP_MODELS, spec.name: spec})  # a model known to the registry

    first = load_clip("Small/16", device=CPU, progress=False)
    second = load_clip("Small/16", device=CPU, progress=False)
    assert model_server.total_hits == 1
    assert (model_dir / "Small-16.pt").read_bytes() == archive

    image, text = torch.rand(2, 3, 32, 32), clip.tokenize(["a red apple", "blurry"])
    with torch.no_grad():
        for loaded in (first, second):
            assert torch.equal(loaded.encode_image(image), source.encode_image(image))
            assert torch.equal(loaded.encode_text(text), source.encode_text(text))
            assert all(p.dtype == torch.float32 and not p.requires_grad for p in loaded.parameters())
            assert not loaded.training


def test_a_clip_file_with_the_wrong_hash_is_refused(
    model_server: ModelServer, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = model_server.serve("/clip/tampered.pt", Reply(clip_archive(small_clip())))
    spec = CLIPSpec("Tampered", url, hashlib.sha256(b"the real file").hexdigest(), 32, 64, ())
    monkeypatch.setattr(loading, "CLIP_MODELS", {**CLIP_MODELS, spec.name: spec})
    with pytest.raises(ModelLoadError, match="SHA-256"):
        load_clip("Tampered", device=CPU, progress=False)
    assert not model_dir.exists() or not any(model_dir.iterdir())


@pytest.mark.parametrize(
    ("name", "urls", "message"),
    [
        ("no_such_model", {}, "unknown VQGAN model 'no_such_model'"),
        ("half_custom", {"yaml_url": "http://127.0.0.1:9/m.yaml"}, "needs both a YAML URL and a checkpoint URL"),
        ("../escape", {"yaml_url": "http://127.0.0.1:9/a", "ckpt_url": "http://127.0.0.1:9/b"}, "custom model name"),
        ("sflckr", {"yaml_url": "http://127.0.0.1:9/a", "ckpt_url": "http://127.0.0.1:9/b"}, "registry model"),
    ],
)
def test_vqgan_names_and_urls_that_cannot_work_are_refused_before_any_download(
    model_dir: Path, name: str, urls: dict[str, str], message: str
) -> None:
    with pytest.raises(ModelLoadError, match=message):
        load_vqgan(name, device=CPU, progress=False, **urls)
    assert not model_dir.exists()


def test_an_unknown_clip_name_is_refused(model_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"unknown CLIP model 'ViT-Z/99'.*ViT-B/32"):
        load_clip("ViT-Z/99", device=CPU)


def test_tiny_needs_no_download_and_no_cache(model_dir: Path) -> None:
    vqgan = load_vqgan("tiny", device=CPU)
    reference = build_tiny_vqgan()
    assert all(
        torch.equal(a, b) for a, b in zip(vqgan.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    assert load_clip("tiny", device=CPU).visual.input_resolution == 64
    assert not model_dir.exists()


def test_the_registry_has_the_real_urls() -> None:
    assert VQGAN_MODELS[DEFAULT_VQGAN].ckpt_url == (
        "https://heibox.uni-heidelberg.de/d/a7530b09fed84f80a887/files/?p=%2Fckpts%2Flast.ckpt&dl=1"
    )
    assert VQGAN_MODELS["vqgan_imagenet_f16_1024"].ckpt_url.endswith("&dl=1")  # not the seed README's "&dl="
    vit = CLIP_MODELS[DEFAULT_CLIP]
    assert vit.url == (
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt"
    )
    assert all(spec.sha256 in spec.url for spec in CLIP_MODELS.values() if spec.url)


def test_the_benchmark_vqgan_is_the_real_architecture_with_repeatable_weights() -> None:
    torch.manual_seed(0)
    expected_next = torch.rand(3)
    torch.manual_seed(0)
    model = build_vqgan_architecture(DEFAULT_VQGAN)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is left alone
    assert sum(p.numel() for p in model.parameters()) == 76_073_859
    assert len(model.state_dict()) == 343
    assert model.stride == 16
    again = build_vqgan_architecture(DEFAULT_VQGAN)
    assert torch.equal(model.codebook, again.codebook)
    assert torch.equal(model.decoder.conv_out.weight, again.decoder.conv_out.weight)
    assert build_vqgan_architecture("vqgan_gumbel_f8").stride == 8


def test_the_benchmark_clip_is_vit_b_32() -> None:
    model = build_clip_architecture(DEFAULT_CLIP)
    assert sum(p.numel() for p in model.parameters()) == 151_277_313
    assert model.visual.input_resolution == 224
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in model.parameters())


def test_an_architecture_known_only_from_its_yaml_is_refused() -> None:
    with pytest.raises(ModelLoadError, match="known only from its YAML"):
        build_vqgan_architecture("coco")
