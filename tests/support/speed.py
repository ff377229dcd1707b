"""The suite's render-speed switch, for checking that no test depends on how fast a render runs.

    VQBOT_TEST_RENDER_SPEED=slow .venv/bin/python -m pytest    # every iteration takes SLOW_STEP_S longer
    VQBOT_TEST_RENDER_SPEED=fast .venv/bin/python -m pytest    # a smaller tiny model, fakes at no cost

It changes the real engine in the test process (tests/conftest.py) and in every process a test
starts (`child_env` puts `speed_hook/sitecustomize.py` on their path), and the fake renderer's step
time. Unset, nothing changes. Test-only: product code knows nothing of it.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ENV = "VQBOT_TEST_RENDER_SPEED"
ROOT = Path(__file__).resolve().parents[2]
HOOK_DIR = Path(__file__).resolve().parent / "speed_hook"
SLOW_STEP_S = 0.15  # added to every iteration of the real engine; tiny jobs of 20-80 iterations take 3-12 s


def mode() -> str:
    value = os.environ.get(ENV, "").strip().lower()
    if value not in ("", "slow", "fast"):
        raise ValueError(f"{ENV} must be slow or fast, not {value!r}")
    return value


def fake_step_s(normal: float) -> float:
    """The fake renderer's time per iteration under the switch."""
    return {"slow": max(normal * 10, 0.05), "fast": 0.0}.get(mode(), normal)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """`env` (default: this process's) for a Python process a test starts: the repository on its path, and the
    switch with its hook when it is set."""
    env = dict(os.environ if env is None else env)
    paths = [str(ROOT)]
    if mode():
        paths.insert(0, str(HOOK_DIR))
        env[ENV] = mode()
    extra = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join([*paths, *([extra] if extra else [])])
    return env


def _slow_renderer(module: ModuleType) -> None:
    render = module.Renderer.render

    def slowed(self: Any, spec: Any, output: Any, *, on_progress: Any = None, **kw: Any) -> Any:
        def progress(p: Any) -> None:
            time.sleep(SLOW_STEP_S)
            if on_progress is not None:
                on_progress(p)

        return render(self, spec, output, on_progress=progress, **kw)

    module.Renderer.render = slowed


def _small_tiny(module: ModuleType) -> None:
    # the same stride (f = 4) and classes, less work: one resolution step fewer, no residual blocks,
    # a one-layer CLIP
    module.TINY_DDCONFIG.update(ch_mult=[1, 1, 1], num_res_blocks=0)
    module.TINY_CLIP.update(vision_layers=1, transformer_layers=1, transformer_width=32, embed_dim=32)


_HOOKS: dict[str, dict[str, Callable[[ModuleType], None]]] = {
    "slow": {"engine.renderer": _slow_renderer},
    "fast": {"engine.models.tiny": _small_tiny},
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a hook on a module right after it is first executed (before anyone uses it)."""

    def __init__(self, hooks: dict[str, Callable[[ModuleType], None]]) -> None:
        self.hooks = dict(hooks)
        self._lock = threading.Lock()

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        with self._lock:
            hook = self.hooks.pop(fullname, None)
        if hook is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_then_hook(module: ModuleType) -> None:
            exec_module(module)
            hook(module)

        spec.loader.exec_module = exec_then_hook  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Apply the switch to this process (modules already imported are changed at once)."""
    hooks = _HOOKS.get(mode(), {})
    pending = {}
    for name, hook in hooks.items():
        if name in sys.modules:
            hook(sys.modules[name])
        else:
            pending[name] = hook
    if pending:
        sys.meta_path.insert(0, _AfterImport(pending))
