"""Reading taming YAMLs and torch checkpoints safely: the weights of any Lightning checkpoint in, code never run."""

from __future__ import annotations

import argparse
import io
import pathlib
import pickle
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from torch.serialization import get_unsafe_globals_in_checkpoint

from engine.errors import ModelLoadError
from engine.models import inert_pickle
from engine.models.registry import VQGANKind
from engine.models.tiny import TINY_DDCONFIG
from engine.models.vqgan import VQGAN
from engine.models.weights import load_vqgan_checkpoint, read_checkpoint, read_vqgan_yaml
from tests.engine.hostile_files import Call, Payload, extension_registered, hostile_checkpoint, payloads
from tests.engine.lightning_files import LIGHTNING_1_0, LIGHTNING_1_9, LIGHTNING_2, LightningRelease
from tests.engine.model_files import LOSS_TARGET, clip_archive, small_clip, small_vqgan, taming_yaml, vqgan_checkpoint

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


LIGHTNING_SHAPES = [
    pytest.param(LIGHTNING_1_0, "attribute_dict", False, id="1.0-attribute_dict"),
    pytest.param(LIGHTNING_1_0, "dictconfig", True, id="1.0-dictconfig-numpy_scores"),
    pytest.param(LIGHTNING_1_9, "dictconfig", False, id="1.9-dictconfig"),
    pytest.param(LIGHTNING_1_9, "namespace", True, id="1.9-namespace-numpy_scores"),
    pytest.param(LIGHTNING_2, "attribute_dict", True, id="2.x-attribute_dict-numpy_scores"),
    pytest.param(LIGHTNING_2, "dictconfig", False, id="2.x-dictconfig"),
    pytest.param(LIGHTNING_2, "namespace", False, id="2.x-namespace"),
]


@pytest.mark.parametrize(("release", "hparams", "numpy_score"), LIGHTNING_SHAPES)
def test_a_lightning_checkpoint_of_any_shape_loads_without_lightning(
    tmp_path: Path, release: LightningRelease, hparams: str, numpy_score: bool
) -> None:
    imported_before = set(sys.modules)
    source = small_vqgan()
    checkpoint = vqgan_checkpoint(source, release=release, hparams=hparams, numpy_score=numpy_score)
    named = set(get_unsafe_globals_in_checkpoint(write(tmp_path / "lightning.ckpt", checkpoint)))
    hparams_class = {
        "attribute_dict": f"{release.attribute_dict_module}.AttributeDict",
        "dictconfig": "omegaconf.dictconfig.DictConfig",
        "namespace": "argparse.Namespace",
    }[hparams]
    assert hparams_class in named  # the file names what a real one of its shape names
    if release.callbacks_keyed_by_class:
        assert f"{release.package}.callbacks.model_checkpoint.ModelCheckpoint" in named
    if numpy_score:
        assert {"numpy._core.multiarray.scalar", "numpy.dtype"} <= named
    loaded = load(tmp_path, taming_yaml(VQMODEL), checkpoint)
    assert_same_vqgan(loaded, source)
    newly_imported = set(sys.modules) - imported_before
    assert not {name for name in newly_imported if name.partition(".")[0] in inert_pickle.INERT_NAMESPACES}


def test_a_legacy_format_checkpoint_loads(tmp_path: Path) -> None:
    # torch < 1.6 wrote a stream of pickles instead of a zip archive
    source = small_vqgan(seed=3)
    checkpoint = vqgan_checkpoint(source, release=LIGHTNING_1_0, hparams="dictconfig", legacy_format=True)
    assert not checkpoint.startswith(b"PK")
    assert_same_vqgan(load(tmp_path, taming_yaml(VQMODEL), checkpoint), source)


@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy"])
def test_the_other_parts_of_a_checkpoint_come_back_as_inert_data(tmp_path: Path, legacy_format: bool) -> None:
    checkpoint = vqgan_checkpoint(small_vqgan(), release=LIGHTNING_2, hparams="dictconfig", legacy_format=legacy_format)
    contents = read_checkpoint(write(tmp_path / "lightning.ckpt", checkpoint))
    assert (contents["epoch"], contents["global_step"], contents["pytorch-lightning_version"]) == (3, 1200, "2.4.0")
    hparams = contents["hyper_parameters"]
    assert isinstance(hparams, inert_pickle.Inert)
    assert hparams.name == "omegaconf.dictconfig.DictConfig"  # recorded by name; omegaconf built nothing
    assert contents["hparams_type"] == inert_pickle.InertName("omegaconf.dictconfig.DictConfig")
    custom = contents["callbacks"]["ImageLogger"]
    assert custom["best"].name == "numpy._core.multiarray.scalar"
    assert (custom["logdir"].name, custom["logdir"].args) == ("pathlib.PosixPath", ("/", "data", "logs", "images"))
    windows = custom["windows_logdir"]
    assert (windows.name, windows.args) == ("pathlib.WindowsPath", ("C:\\", "logs", "images"))
    assert custom["seen_splits"] == {"train", "validation"}  # plain values stay plain
    assert (custom["window"], custom["tag"], custom["complex"]) == (slice(0, 10, 2), b"\x00run-7", 1 + 2j)
    assert custom["counts"] == {"images": 3}
    adam = contents["optimizer_states"][0]
    assert adam["param_groups"][0]["betas"] == (0.5, 0.9)
    assert isinstance(adam["state"][0]["exp_avg"], torch.Tensor)


def test_a_state_dict_of_something_else_than_tensors_is_refused(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"encoder.weight": argparse.Namespace(a=1)}}, buffer)
    with pytest.raises(ModelLoadError, match=r"holds other things than tensors: encoder\.weight"):
        load(tmp_path, taming_yaml(VQMODEL), buffer.getvalue())


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


@pytest.mark.parametrize("legacy_format", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("name", list(payloads(Path("/nonexistent/marker"), Path("/tmp"))))
def test_a_hostile_checkpoint_is_refused_and_its_payload_never_runs(
    tmp_path: Path, name: str, legacy_format: bool
) -> None:
    marker = tmp_path / "payload-ran"
    payload = payloads(marker, tmp_path)[name]
    path = write(tmp_path / "evil.ckpt", hostile_checkpoint(payload, legacy_format=legacy_format))
    with extension_registered(), pytest.raises(ModelLoadError) as refusal:  # the extension code would resolve
        read_checkpoint(path)
    assert str(refusal.value).startswith(f"refusing evil.ckpt: {payload.refused}, ")
    assert "nothing in it was run" in str(refusal.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    "name", [name for name, payload in payloads(Path("/nonexistent/marker"), Path("/tmp")).items() if payload.live]
)
def test_the_hostile_payloads_really_are_live(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The control for the test above: an unrestricted load of our own file runs each payload.
    monkeypatch.syspath_prepend(str(tmp_path))  # where the import payloads' module lies
    marker = tmp_path / "payload-ran"
    payload = payloads(marker, tmp_path)[name]
    with extension_registered():
        if payload.raw is not None:
            pickle.loads(payload.raw)  # safe only because this test made it
        else:
            torch.load(io.BytesIO(hostile_checkpoint(payload)), weights_only=False)  # likewise
    assert marker.exists()


def test_a_name_under_a_data_namespace_is_recorded_and_never_called(tmp_path: Path) -> None:
    # pathlib.Path.touch would create the marker; under the inert namespaces it is only a name
    marker = tmp_path / "touched"
    payload = Payload("", Call(pathlib.Path.touch, pathlib.Path(marker)), protocol=4)  # protocol 4: a dotted name
    contents = read_checkpoint(write(tmp_path / "odd.ckpt", hostile_checkpoint(payload)))
    recorded = contents["callbacks"]["ModelCheckpoint"]
    assert recorded.name == "pathlib.Path.touch"
    assert recorded.args[0].name == "pathlib.PosixPath"
    assert not marker.exists()


def test_a_torchscript_archive_is_refused_as_a_checkpoint(tmp_path: Path) -> None:
    path = write(tmp_path / "model.ckpt", clip_archive(small_clip()))
    with pytest.raises(ModelLoadError, match=r"refusing model\.ckpt: it is a TorchScript archive"):
        read_checkpoint(path)


def test_the_pre_0_4_tar_format_is_refused_with_how_to_convert_it(tmp_path: Path) -> None:
    path = tmp_path / "ancient.ckpt"
    with tarfile.open(path, "w") as tar:
        for member in ("sys_info", "pickle", "storages", "tensors"):
            info = tarfile.TarInfo(member)
            data = pickle.dumps(0, protocol=2)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ModelLoadError, match=r"tar format \(before torch 0\.4\).*torch\.save\(torch\.load\(") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


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


@pytest.mark.parametrize(
    "data",
    [b"PK\x03\x04 but not really a zip", b"<!DOCTYPE html><html>Link does not exist.</html>", b"", b"\x80\x02junk"],
    ids=["broken zip", "html", "empty", "broken pickle"],
)
def test_a_file_that_is_not_a_checkpoint_is_refused_in_one_line(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(ModelLoadError, match=r"model\.ckpt is not a (readable )?torch checkpoint") as error:
        read_checkpoint(write(tmp_path / "model.ckpt", data))
    assert "\n" not in str(error.value)


def test_a_truncated_checkpoint_is_refused(tmp_path: Path) -> None:
    checkpoint = vqgan_checkpoint(small_vqgan())
    with pytest.raises(ModelLoadError, match=r"model\.ckpt is not a (readable )?torch checkpoint"):
        read_checkpoint(write(tmp_path / "model.ckpt", checkpoint[: len(checkpoint) // 2]))
