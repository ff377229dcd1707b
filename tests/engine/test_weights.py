"""Reading taming YAMLs and Lightning checkpoints safely: right weights in, code never run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

from engine.errors import ModelLoadError
from engine.models import weights
from engine.models.registry import VQGANKind
from engine.models.tiny import TINY_DDCONFIG
from engine.models.vqgan import VQGAN
from engine.models.weights import load_vqgan_checkpoint, read_checkpoint, read_vqgan_yaml
from tests.engine.model_files import (
    LOSS_TARGET,
    malicious_checkpoint,
    small_vqgan,
    taming_yaml,
    vqgan_checkpoint,
)

VQMODEL = "taming.models.vqgan.VQModel"
GUMBEL = "taming.models.vqgan.GumbelVQ"
NET2NET = "taming.models.cond_transformer.Net2NetTransformer"


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def load(tmp_path: Path, yaml: bytes, checkpoint: bytes) -> VQGAN:
    architecture = read_vqgan_yaml(write(tmp_path / "model.yaml", yaml))
    return load_vqgan_checkpoint(write(tmp_path / "model.ckpt", checkpoint), architecture)


def assert_same_vqgan(loaded: VQGAN, source: VQGAN) -> None:
    pixels = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        z = source.encode(pixels)
        assert torch.equal(loaded.encode(pixels), z)
        assert torch.equal(loaded.decode(z), source.decode(z))
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_a_lightning_checkpoint_loads_without_lightning(tmp_path: Path) -> None:
    lightning_was_imported = "pytorch_lightning" in sys.modules
    source = small_vqgan()
    checkpoint = write(tmp_path / "lightning.ckpt", vqgan_checkpoint(source))
    assert set(get_unsafe_globals_in_checkpoint(checkpoint)) == {
        "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
        "pytorch_lightning.utilities.parsing.AttributeDict",
    }  # the file names Lightning's classes, as the real ones do
    loaded = load(tmp_path, taming_yaml(VQMODEL), checkpoint.read_bytes())
    assert_same_vqgan(loaded, source)
    if not lightning_was_imported:  # the names in the file were mapped to stand-ins, never imported
        assert "pytorch_lightning" not in sys.modules


def test_the_yaml_is_read_as_data_and_its_loss_is_never_built(tmp_path: Path) -> None:
    architecture = read_vqgan_yaml(write(tmp_path / "model.yaml", taming_yaml(VQMODEL, n_embed=77)))
    assert (architecture.kind, architecture.embed_dim, architecture.n_embed) == (VQGANKind.PLAIN, 32, 77)
    assert architecture.ddconfig == TINY_DDCONFIG  # the file's architecture, every key
    assert LOSS_TARGET.rsplit(".", 1)[0] not in sys.modules


def test_a_transformer_checkpoint_gives_its_first_stage(tmp_path: Path) -> None:
    source = small_vqgan(seed=5)
    loaded = load(tmp_path, taming_yaml(NET2NET), vqgan_checkpoint(source, prefix="first_stage_model."))
    assert_same_vqgan(loaded, source)


def test_a_gumbel_checkpoint_loads_its_embed_codebook(tmp_path: Path) -> None:
    source = small_vqgan(gumbel=True, seed=7)
    loaded = load(tmp_path, taming_yaml(GUMBEL), vqgan_checkpoint(source))
    assert loaded.gumbel
    assert torch.equal(loaded.codebook, source.quantize.embed.weight)
    assert_same_vqgan(loaded, source)


def test_an_fp16_checkpoint_loads_as_fp32(tmp_path: Path) -> None:
    source = small_vqgan()
    half = small_vqgan().half()
    loaded = load(tmp_path, taming_yaml(VQMODEL), vqgan_checkpoint(half))
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    assert torch.equal(loaded.codebook, source.codebook.half().float())


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    other = small_vqgan(n_embed=128)
    with pytest.raises(ModelLoadError, match="does not fit the architecture"):
        load(tmp_path, taming_yaml(VQMODEL, n_embed=64), vqgan_checkpoint(other))


def test_a_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = write(tmp_path / "evil.ckpt", malicious_checkpoint(small_vqgan(), marker))
    with pytest.raises(ModelLoadError, match=r"refusing evil\.ckpt: it names posix\.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_a_fooled_pre_check_still_cannot_let_the_payload_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Defence in depth: should the by-name pre-check miss a name, torch's restricted unpickler is the second wall.
    monkeypatch.setattr(weights, "get_unsafe_globals_in_checkpoint", lambda path: [])
    marker = tmp_path / "payload-ran"
    path = write(tmp_path / "evil.ckpt", malicious_checkpoint(small_vqgan(), marker))
    with pytest.raises(ModelLoadError, match=r"could not be loaded safely.*posix\.system"):
        read_checkpoint(path)
    assert not marker.exists()


def test_the_malicious_pickle_really_is_live(tmp_path: Path) -> None:
    # The control for the two tests above: an unrestricted load of our own file runs the payload.
    marker = tmp_path / "payload-ran"
    path = write(tmp_path / "evil.ckpt", malicious_checkpoint(small_vqgan(), marker))
    torch.load(path, weights_only=False)  # safe only because this test made the file
    assert marker.exists()


@pytest.mark.parametrize(
    ("yaml", "message"),
    [
        (b"model:\n  target: taming.models.vqgan.SomethingElse\n  params: {}\n", "does not describe a taming VQGAN"),
        (b"model: [unclosed\n", "not a readable YAML"),
        (b"<!DOCTYPE html><html>Link does not exist.</html>\n", "does not describe a taming VQGAN"),
    ],
)
def test_a_yaml_that_is_not_a_vqgan_config_is_refused(tmp_path: Path, yaml: bytes, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message):
        read_vqgan_yaml(write(tmp_path / "model.yaml", yaml))


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not a torch checkpoint"):
        read_checkpoint(write(tmp_path / "model.ckpt", b"PK\x03\x04 but not really a zip"))
