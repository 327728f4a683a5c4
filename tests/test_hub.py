"""An unreachable Hugging Face hub fails in seconds, with one line, and a cached checkpoint still loads.

The hub is made unreachable by the test itself: ``HF_ENDPOINT`` points at a loopback port that was
bound and closed (connection refused at once), never by the machine's network. Each case runs in a
fresh interpreter because ``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_OFFLINE`` when it is
imported. Without the reachability check ``huggingface_hub`` retries for about 25 s (1+2+4+8+8 s).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

#: Generous bound (s) for a failed hub lookup, interpreter start and torch import included.
BOUND_S = 10.0


def _closed_port_endpoint() -> str:
    """``http://127.0.0.1:PORT`` of a port that was bound and closed: connecting is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _unreachable_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("HF_HUB_OFFLINE", None)             # conftest sets it; here the network path is tested
    env.update(HF_ENDPOINT=_closed_port_endpoint(), HF_HOME=str(tmp_path / "hf_home"),
               PYTHONPATH=str(REPO))
    return env


def _timed(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - t0


def test_vos_run_with_unreachable_hub_fails_in_seconds(shared_data, tmp_path):
    seq = shared_data / "davis_sample"
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("00000.jpg", "00001.jpg"):
        shutil.copy(seq / "JPEGImages/480p/car-shadow" / name, frames / name)
    mask = seq / "Annotations/480p/car-shadow/00000.png"
    proc, elapsed = _timed([sys.executable, "-m", "vos.cli", "run", str(frames), "--first-mask", str(mask),
                            "--output", str(tmp_path / "out"), "--device", "cpu", "--quiet"],
                           _unreachable_env(tmp_path))
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "'BAAI/seggpt-vit-large' is not in the local Hugging Face cache and cannot be downloaded" in lines[0]
    assert elapsed < BOUND_S, f"an unreachable hub took {elapsed:.1f} s to report"
    assert not any((tmp_path / "out").glob("*/manifest.json"))


def test_cached_checkpoint_loads_with_unreachable_hub(tiny_hf_dir, tmp_path):
    """A checkpoint in the local cache (hub cache layout: refs/main -> snapshots/COMMIT/...) is used
    at once when the hub does not answer, as with ``HF_HUB_OFFLINE=1``."""
    cache = tmp_path / "hub_cache"
    repo = cache / "models--someone--tiny-seggpt"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_hf_dir / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    code = ("import sys; from seggpt_model.weights import resolve_checkpoint; "
            f"cfg, sd, src = resolve_checkpoint('someone/tiny-seggpt', cache_dir={str(cache)!r}); "
            "print(cfg.hidden_size, len(sd), src)")
    proc, elapsed = _timed([sys.executable, "-c", code], _unreachable_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    hidden, keys, source = proc.stdout.split(maxsplit=2)
    from safetensors import safe_open

    with safe_open(str(tiny_hf_dir / "model.safetensors"), "pt") as f:
        assert int(keys) == len(list(f.keys()))
    import json

    assert int(hidden) == json.loads((tiny_hf_dir / "config.json").read_text())["hidden_size"]
    assert str(snapshot / "model.safetensors") in source
    assert elapsed < BOUND_S, f"a cached checkpoint took {elapsed:.1f} s with the hub unreachable"
