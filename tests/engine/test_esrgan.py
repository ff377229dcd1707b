"""Real-ESRGAN upscaling through spandrel, with small random RRDBNets saved like the official weight files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from engine.errors import InvalidJob, ModelLoadError
from engine.esrgan import inference_realesrgan
from engine.models import esrgan
from tests.engine.model_server import ModelServer, Reply
from tests.engine.rrdbnet import RRDBNet, save_official
from tests.support.mediafiles import make_video


@pytest.fixture(scope="module")
def nets(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[RRDBNet, Path]]:
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    made = {}
    for scale in (2, 4):
        net = RRDBNet(scale=scale).eval()
        made[scale] = (net, save_official(net, folder / f"tiny_x{scale}.pth"))
    return made


def _noise(size: tuple[int, int], seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _reference(net: RRDBNet, img: Image.Image) -> np.ndarray:
    x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = net(x).clamp(0, 1)[0]
    return (y * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


@pytest.mark.parametrize("scale", [2, 4])
def test_a_png_is_upscaled_by_the_model_exactly(nets: dict, tmp_path: Path, scale: int) -> None:
    net, weights = nets[scale]
    source = tmp_path / "in" / "still.png"
    source.parent.mkdir()
    img = _noise((40, 32))  # a multiple of 4: spandrel pads other sizes for the ×2 layout, changing the border
    img.save(source)
    [written] = inference_realesrgan(source, str(weights), output_images_path=tmp_path / "out")
    assert Path(written) == tmp_path / "out" / "still.png"
    with Image.open(written) as out:
        assert out.size == (40 * scale, 32 * scale)
        assert np.array_equal(np.asarray(out.convert("RGB")), _reference(net, img))


def test_odd_sizes_come_out_at_exactly_scale_times(nets: dict) -> None:
    for scale in (2, 4):
        assert esrgan.upscale_image(_noise((13, 7)), esrgan.load_upscaler(str(nets[scale][1]))).size == (
            13 * scale,
            7 * scale,
        )


def test_a_jpg_keeps_its_exif(nets: dict, tmp_path: Path) -> None:
    source = tmp_path / "render.jpg"
    exif = Image.Exif()
    exif[0x0131] = "vqbot test"  # Software
    exif[0x010E] = "a red apple | blurry:-0.5"  # ImageDescription
    _noise((32, 24)).save(source, exif=exif.tobytes())
    [written] = inference_realesrgan(source, str(nets[4][1]), output_images_path=tmp_path / "out")
    with Image.open(written) as out:
        assert out.format == "JPEG"
        assert out.size == (128, 96)
        assert out.getexif()[0x0131] == "vqbot test"
        assert out.getexif()[0x010E] == "a red apple | blurry:-0.5"


def test_a_folder_gives_one_output_per_file_with_metadata(nets: dict, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        info = PngImagePlugin.PngInfo()
        info.add_text("text_prompts", f"frame {index} 🌲")
        _noise((24, 16), index).save(frames / f"frame_{index + 1:012d}.png", pnginfo=info)
    written = inference_realesrgan(frames, str(nets[2][1]))
    assert [Path(p).name for p in written] == [f"frame_{i + 1:012d}.png" for i in range(3)]
    assert {Path(p).parent for p in written} == {tmp_path / "frames_upscaled"}
    for index, path in enumerate(written):
        with Image.open(path) as out:
            assert out.size == (48, 32)
            assert out.text["text_prompts"] == f"frame {index} 🌲"


def test_rgba_becomes_png_with_its_alpha(nets: dict, tmp_path: Path) -> None:
    source = tmp_path / "cutout.webp"
    rgba = _noise((20, 20)).convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((20, 20)))
    rgba.save(source, lossless=True)
    [written] = inference_realesrgan(source, str(nets[4][1]), output_images_path=tmp_path / "out")
    assert written.endswith("cutout.png")
    with Image.open(written) as out:
        assert (out.mode, out.size) == ("RGBA", (80, 80))
        alpha = out.getchannel("A")
        assert alpha.getpixel((40, 2)) < 30 < 220 < alpha.getpixel((40, 77))


def test_an_existing_name_gets_the_upscaled_suffix(nets: dict, tmp_path: Path) -> None:
    source = tmp_path / "still.png"
    _noise((16, 16)).save(source)
    [written] = inference_realesrgan(source, str(nets[2][1]))  # next to the input, whose name exists
    assert Path(written) == tmp_path / "still_upscaled.png"
    with Image.open(source) as original:
        assert original.size == (16, 16)


def test_tiles_give_the_same_picture(nets: dict) -> None:
    model = esrgan.load_upscaler(str(nets[4][1]))
    img = _noise((64, 48))
    whole = np.asarray(esrgan.upscale_image(img, model), dtype=int)
    tiled = np.asarray(esrgan.upscale_image(img, model, tile=24, tile_pad=8), dtype=int)
    assert tiled.shape == whole.shape == (192, 256, 3)
    assert np.abs(tiled - whole).mean() < 0.5


def test_loaded_models_are_reused_and_half_stays_fp32_on_cpu(nets: dict) -> None:
    first = esrgan.load_upscaler(str(nets[4][1]), half=True)
    assert esrgan.load_upscaler(str(nets[4][1])) is first
    assert next(first.model.parameters()).dtype == torch.float32


def test_an_mp4_is_not_an_image(nets: dict, tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", seconds=0.2)
    with pytest.raises(InvalidJob, match=r"^file could not be read as a valid image\.$"):
        inference_realesrgan(clip, str(nets[4][1]), output_images_path=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_seed_messages_for_bad_inputs(nets: dict, tmp_path: Path) -> None:
    with pytest.raises(InvalidJob, match=r"^input must be a file or a directory\.$"):
        inference_realesrgan(tmp_path / "nothing here", str(nets[4][1]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidJob, match=r"^input directory does not contain any files\.$"):
        inference_realesrgan(tmp_path / "empty", str(nets[4][1]))


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch '{self.marker}'",)


def test_a_malicious_pth_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params_ema": _Payload(marker)}, evil)
    image = tmp_path / "in.png"
    _noise((8, 8)).save(image)
    with pytest.raises(ModelLoadError, match="unsafe"):
        inference_realesrgan(image, str(evil), output_images_path=tmp_path / "out")
    assert not marker.exists()


def test_files_that_are_not_upscalers_are_refused(tmp_path: Path) -> None:
    other = tmp_path / "classifier.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(ModelLoadError, match="not an upscaler"):
        esrgan.load_upscaler(str(other))
    script = tmp_path / "model.pt"
    script.write_bytes(b"anything")
    with pytest.raises(ModelLoadError, match=r"\.pth or \.safetensors"):
        esrgan.load_upscaler(str(script))
    with pytest.raises(ModelLoadError, match="unknown upscaler"):
        esrgan.load_upscaler("NoSuchModel.pth", model_dir=tmp_path)


def test_weights_are_downloaded_once_into_the_cache(nets: dict, model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/RealESRGAN_x2plus.pth", Reply(nets[2][1].read_bytes()))
    first = esrgan.model_file("RealESRGAN_x2plus.pth", url, progress=False)
    assert first == model_dir / "RealESRGAN_x2plus.pth"
    assert esrgan.model_file("RealESRGAN_x2plus.pth", url, progress=False) == first
    assert esrgan.model_file("RealESRGAN_x2plus.pth", progress=False) == first  # the registry's name, cached
    assert model_server.hits["/RealESRGAN_x2plus.pth"] == 1
    assert esrgan.load_upscaler("RealESRGAN_x2plus.pth", progress=False).scale == 2


def test_a_cached_file_that_changed_is_refused(nets: dict, model_server: ModelServer, model_dir: Path) -> None:
    url = model_server.serve("/custom.pth", Reply(nets[4][1].read_bytes()))
    path = esrgan.model_file("custom.pth", url, progress=False)
    path.write_bytes(nets[2][1].read_bytes())  # swapped behind our back
    with pytest.raises(ModelLoadError, match="does not match"):
        esrgan.model_file("custom.pth", progress=False)
