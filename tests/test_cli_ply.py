"""``splatfx ply info|lint|convert`` through the real CLI group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from splatfx.cli import cli
from splatfx.core.errors import InputError
from splatfx.io.formats import ply, read_gaussians, spz, write_gaussians
from test_formats_ply import fern_gaussians, random_arrays


@pytest.fixture(scope="module")
def fern_ply(tmp_path_factory, data_dir) -> Path:
    path = tmp_path_factory.mktemp("cli") / "fern.ply"
    gaussians = fern_gaussians(data_dir, degree=2)
    write_gaussians(gaussians.replace(extras={"segment": gaussians.means[:, 0] > 0}), path)
    return path


def run(*args: str):
    return CliRunner().invoke(cli, ["ply", *args], catch_exceptions=True)


def test_info_reports_count_degree_extras_bounds_size_and_format(fern_ply):
    result = run("info", str(fern_ply))
    assert result.exit_code == 0, result.output
    gaussians = read_gaussians(fern_ply)
    assert f"gaussians  {len(gaussians):,}" in result.output
    assert "sh degree  2" in result.output
    assert "extras     segment" in result.output
    assert "PLY binary_little_endian 1.0" in result.output
    assert f"{fern_ply.stat().st_size:,} bytes" in result.output
    facts = json.loads(run("info", str(fern_ply), "--json").output)
    np.testing.assert_allclose(facts["bounds"]["min"], gaussians.means.min(dim=0).values.numpy())
    assert facts["count"] == len(gaussians) and facts["extras"] == {"segment": []}


def test_lint_clean_file_exits_zero(tmp_path):
    arrays = random_arrays(200, 1)
    arrays.quats /= np.linalg.norm(arrays.quats, axis=1, keepdims=True)
    path = tmp_path / "clean.ply"
    ply.write_arrays(arrays, path)
    result = run("lint", str(path))
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("ok")


def test_lint_broken_file_lists_problems_and_exits_one(tmp_path):
    arrays = random_arrays(200, 1)
    arrays.means[:5, 2] = np.inf
    arrays.quats[7] = 0.0
    path = tmp_path / "broken.ply"
    ply.write_arrays(arrays, path)
    result = run("lint", str(path))
    assert result.exit_code == 1
    assert "inf" in result.output and "z: 0 −Inf and 5 +Inf values" in result.output
    assert "quat_zero" in result.output and "1 Gaussians have a zero quaternion" in result.output
    report = json.loads(run("lint", "--json", str(path)).output)
    assert not report["ok"] and {i["code"] for i in report["issues"]} >= {"inf", "quat_zero", "quat_unnormalised"}


def test_convert_between_formats_and_lower_the_sh_degree(tmp_path, fern_ply):
    compact = tmp_path / "fern.spz"
    result = run("convert", str(fern_ply), str(compact), "--sh-degree", "1")
    assert result.exit_code == 0, result.output
    assert "dropping segment" in result.output
    assert spz.read_header(compact)["sh_degree"] == 1
    back = tmp_path / "back.ply"
    assert run("convert", str(compact), str(back)).exit_code == 0
    original, converted = read_gaussians(fern_ply), read_gaussians(back)
    assert converted.sh_degree == 1 and len(converted) == len(original)
    assert (converted.means - original.means).abs().max() <= 0.5 / 4096 + 1e-6
    web = tmp_path / "fern.splat"
    result = run("convert", str(fern_ply), str(web))
    assert result.exit_code == 0 and "SH degree 2 is reduced to 0" in result.output
    assert web.stat().st_size == 32 * len(original)


def test_convert_refuses_raising_the_sh_degree_and_unknown_extensions(tmp_path, fern_ply):
    result = run("convert", str(fern_ply), str(tmp_path / "x.ply"), "--sh-degree", "3")
    assert result.exit_code == 2 and "can only be lowered" in result.output
    result = run("convert", str(fern_ply), str(tmp_path / "x.obj"))
    assert isinstance(result.exception, InputError) and "unknown Gaussian file extension '.obj'" in str(result.exception)
    assert not (tmp_path / "x.ply").exists() and not (tmp_path / "x.obj").exists()


def test_installed_command_names_a_bad_file_in_one_line_and_lint_fails(tmp_path):
    path = tmp_path / "cut.ply"
    ply.write_arrays(random_arrays(30, 0), path)
    path.write_bytes(path.read_bytes()[:-50])
    target = tmp_path / "out.spz"
    executable = Path(sys.executable).with_name("splatfx")
    done = subprocess.run([str(executable), "ply", "convert", str(path), str(target)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: PLY header declares 30 vertices (2.0 KiB)")
    assert not target.exists() and list(tmp_path.iterdir()) == [path]
    done = subprocess.run([str(executable), "ply", "lint", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "truncated" in done.stdout
