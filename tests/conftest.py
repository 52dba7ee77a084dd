"""Shared fixtures: where the real captures live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_root() -> Path:
    """Where the reference captures are, for module-level use (the fixture wraps it)."""
    return _data_dir()


def _data_dir() -> Path:
    env = os.environ.get("SPLATFX_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The read-only reference captures (``../shared/data``)."""
    path = _data_dir()
    if not path.is_dir():
        pytest.fail(f"reference data not found at {path} (set SPLATFX_DATA)")
    return path


@pytest.fixture(scope="session")
def ray_cluster():
    """A local two-CPU Ray cluster, started once for the session, whose workers can import
    the test modules (tests/test_farm.py's work functions live there)."""
    ray = pytest.importorskip("ray")
    here = str(Path(__file__).resolve().parent)
    with pytest.MonkeyPatch.context() as patch:  # workers inherit the driver's environment
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])))
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def fern_shot(root: Path, data: Path, **train: str) -> Path:
    """A shot of fern's 20 photos (``images_8``) with their known cameras imported as its solve,
    made through the CLI; ``train`` sets ``[train]`` keys in shot.toml (each must be there once)."""
    import re

    from click.testing import CliRunner

    from splatfx.cli import cli

    runner = CliRunner()
    for args in (["init", str(root), "--plates", str(data / "fern" / "images_8")],
                 ["solve", str(root), "--import", str(data / "fern")]):
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
    toml = root / "shot.toml"
    text = toml.read_text()
    for key, value in train.items():
        text, count = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert count == 1, key
    toml.write_text(text)
    return root


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module of tiny tensors or models: thread start-up costs more
    than it saves (a lot on a busy machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
