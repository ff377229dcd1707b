"""Time load_vqgan/load_clip on full-size files: first use (download + hash + load) and a cached load.

Offline stand-ins for the real weights: the f16_16384 and ViT-B/32 architectures with random weights,
saved the way the real files are (a Lightning checkpoint with loss keys; a TorchScript archive),
served from 127.0.0.1. Prints one JSON object as the last line.

    python benchmarks/model_load.py [--device cpu|cuda] [--work-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.models import loading
from engine.models.loading import build_clip_architecture, build_vqgan_architecture, load_clip, load_vqgan
from engine.models.registry import CLIP_MODELS, CLIPSpec
from tests.engine.model_files import clip_archive, taming_yaml, vqgan_checkpoint
from tests.engine.model_server import ModelServer, Reply


def _timed(fn: object, *args: object, **kwargs: object) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)  # type: ignore[operator]
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp, ModelServer() as server:
        cache = Path(tmp) / "models"
        vqgan = build_vqgan_architecture("vqgan_imagenet_f16_16384")
        ckpt = vqgan_checkpoint(vqgan)
        yaml_url = server.serve("/v.yaml", Reply(taming_yaml("taming.models.vqgan.VQModel", n_embed=16384,
                                                             embed_dim=256, ddconfig=dict(vqgan_ddconfig()))))  # fmt: skip
        ckpt_url = server.serve("/v.ckpt", Reply(ckpt))
        clip_model = build_clip_architecture("ViT-B/32").half().float()
        archive = clip_archive(clip_model)
        spec = CLIPSpec("Bench/32", server.serve("/c.pt", Reply(archive)), hashlib.sha256(archive).hexdigest(),
                        224, 512, ())  # fmt: skip
        loading.CLIP_MODELS = {**CLIP_MODELS, spec.name: spec}  # type: ignore[misc]

        load = {"model_dir": cache, "progress": False, "device": device}
        first_v, loaded = _timed(load_vqgan, "bench_vqgan", yaml_url=yaml_url, ckpt_url=ckpt_url, **load)
        cached_v = [_timed(load_vqgan, "bench_vqgan", yaml_url=yaml_url, ckpt_url=ckpt_url, **load)[0]
                    for _ in range(args.rounds)]  # fmt: skip
        z = torch.randn(1, 256, 16, 16)
        with torch.no_grad():
            same = torch.equal(loaded.decode(z.to(device)).cpu(), vqgan.to(device).decode(z.to(device)).cpu())  # type: ignore[attr-defined]
        first_c, _ = _timed(load_clip, "Bench/32", **load)
        cached_c = [_timed(load_clip, "Bench/32", **load)[0] for _ in range(args.rounds)]
        print(json.dumps({
            "device": str(device),
            "vqgan_ckpt_bytes": len(ckpt), "clip_archive_bytes": len(archive),
            "vqgan_first_use_s": round(first_v, 2), "vqgan_cached_load_s": round(statistics.median(cached_v), 2),
            "clip_first_use_s": round(first_c, 2), "clip_cached_load_s": round(statistics.median(cached_c), 2),
            "vqgan_outputs_equal": same, "requests": server.total_hits, "torch": torch.__version__,
        }))  # fmt: skip


def vqgan_ddconfig() -> dict[str, object]:
    from engine.models.registry import F16_DDCONFIG

    return {key: list(value) if isinstance(value, tuple) else value for key, value in F16_DDCONFIG.items()}


if __name__ == "__main__":
    main()
