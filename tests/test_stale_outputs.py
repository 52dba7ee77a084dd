"""Issue #21 cases 1, 2, 7 and 12: never a stale frame, one run of a stage at a time.

A stage reads what other stages wrote; it must never run on outputs that no longer match the
shot (a failed or re-run stage upstream, a refined frame made from an older render), and two
processes must not run one stage on one shot at once.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from splatfx.comp.stage import run_comp
from splatfx.core.errors import ConfigError, InputError
from splatfx.fx.stage import run_collapse, run_select
from splatfx.render.stage import run_render
from splatfx.shot.config import config_from_dict, config_to_dict, save_config
from splatfx.shot.folder import Shot
from splatfx.shot.runner import StageError
from test_comp import make_shot


def set_keys(shot: Shot, table: str, **values) -> Shot:
    """``shot`` with ``[table]`` keys changed in shot.toml (``fx.collapse`` style dotted tables)."""
    settings = config_to_dict(shot.config)
    node = settings
    for part in table.split("."):
        node = node.setdefault(part, {})
    node.update(values)
    save_config(config_from_dict(settings, shot.toml_path), shot.toml_path)
    return Shot.open(shot.root)


def fake_refinement(shot: Shot) -> Shot:
    """Refined frames as the refine stage leaves untouched ones (the render's channels and
    header, its frame key included), with ``[refine] model`` set."""
    model = shot.refine_dir / "model"
    model.mkdir(parents=True, exist_ok=True)
    for frame in shot.frames:
        shutil.copyfile(shot.render_frame(frame), shot.refined_frame(frame))
    return set_keys(shot, "refine", model="refine/model")


@pytest.fixture
def rendered(tmp_path, data_dir) -> Shot:
    shot = make_shot(tmp_path, data_dir)
    run_render(shot)
    return shot


def test_comp_refuses_refined_frames_made_from_an_older_render(rendered):
    """Case 1: new fragments, collapse and render again: the refined frames belong to the old
    render, and the comp must not ghost them in (it used to write 40k wrong pixels)."""
    shot = fake_refinement(rendered)
    assert run_comp(shot).ran  # refined frames that match their renders are used
    shot = set_keys(shot, "fx.collapse", fragments=9)
    run_collapse(shot)
    run_render(shot)
    with pytest.raises(InputError, match=r"refine/frame\.1001\.exr.*older render.*splatfx refine"):
        run_comp(shot)


def test_comp_refuses_refined_frames_of_another_size(rendered):
    """Case 7: refined frames at the old size after `[render] resolution_scale` changed gave
    "operands could not be broadcast together"."""
    shot = fake_refinement(rendered)
    shot = set_keys(shot, "render", resolution_scale=0.5)
    run_render(shot)
    with pytest.raises(InputError, match=r"refine/frame\.1001\.exr.*is \d+x\d+ and the render is \d+x\d+"):
        run_comp(shot)


def test_a_failed_stage_makes_the_stages_after_it_refuse(rendered):
    """Case 2: after `fx select` fails on a moved box, collapse and render said "up to date"
    with the old selection."""
    shot = set_keys(rendered, "fx.select", center=[50.0, 50.0, 2.0])
    with pytest.raises(ConfigError, match="selection contains no Gaussians"):
        run_select(shot)
    with pytest.raises(StageError, match=r"fx\.select failed in its last run.*splatfx fx select"):
        run_collapse(shot)
    with pytest.raises(StageError, match=r"fx\.select"):
        run_render(shot)


def test_a_new_collapse_makes_the_comp_wait_for_a_new_render(rendered):
    """Case 2: after a new collapse, comp said "up to date" without a re-render."""
    shot = rendered
    assert run_comp(shot).ran
    assert not run_comp(shot).ran
    shot = set_keys(shot, "fx.collapse", fragments=9)
    run_collapse(shot)
    with pytest.raises(StageError, match=r"render is out of date \(fx\.collapse ran since it\)"):
        run_comp(shot)
    assert run_render(shot).ran
    result = run_comp(shot)
    assert result.ran and result.reason == "inputs changed: render"


def test_a_rerun_upstream_that_writes_the_same_bytes_keeps_the_chain_up_to_date(rendered):
    """Skipping is by content: a forced render that rewrites the same frames leaves comp up to
    date, and the comp's record now names that render run, so nothing downstream refuses."""
    from splatfx.shot.manifest import Manifest

    shot = rendered
    run_comp(shot)
    render = run_render(shot, force=True)
    assert not run_comp(shot).ran
    assert Manifest.load(shot.manifest_path).last("comp").upstream["render"] == render.record.id


def test_a_second_process_cannot_run_the_same_stage(rendered):
    """Case 12: two runs of one stage on one shot at once were not detected."""
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from splatfx.shot.folder import Shot
        from splatfx.shot.runner import stage_lock
        with stage_lock(Shot.open({str(rendered.root)!r}), "comp"):
            print("held", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(StageError, match=rf"pid {holder.pid}\) is running comp on this shot"):
            run_comp(rendered)
    finally:
        holder.kill()
        holder.wait()
    assert run_comp(rendered).ran  # the lock goes with the process that held it


def test_temporary_files_of_a_killed_run_are_removed_by_the_next(rendered):
    """Case 12: kill -9 left hidden .tmp files behind that nothing cleaned up."""
    shot = rendered
    shot.comp_dir.mkdir(exist_ok=True)
    leftover = shot.comp_dir / ".comp.1001.exr.tmp.k1ll3d.exr"
    leftover.write_bytes(b"half a frame")
    other = shot.fx_dir / ".snow.npz.tmp.other.npz"  # another stage's file: not comp's to remove
    other.write_bytes(b"x")
    run_comp(shot)
    assert not leftover.exists() and other.exists()
