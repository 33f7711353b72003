"""The output folder of `bayesirl run`: checked before any work, written aside and moved into
place complete, never two runs' files mixed, never outside the chosen folder."""

import importlib
import os
import subprocess
import sys

import pytest
from helpers import tiny_spec

import bayesirl as birl
from bayesirl.cli import app as cli
from bayesirl.cli.folder import OutputFolder
from bayesirl.posterior.files import temporary_path


def write_spec(tmp_path, method="map", decisions=False, name="tiny"):
    path = tmp_path / f"{name.replace('/', '_').replace('.', '_')}.toml"
    path.write_text(tiny_spec(name, comment="a tiny problem for the output-folder tests",
                              inference=dict(method=method, num_samples=10, steps=20))
                    + ("[decisions]\nalpha = 0.9\n" if decisions else ""))
    return path


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err, err
    return err


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if the run gets as far as building the problem."""
    def never(*args, **kwargs):
        raise AssertionError("the run started work")

    monkeypatch.setattr(cli, "build", never)


def test_an_out_under_a_file_is_refused_before_any_work(tmp_path, capsys, no_work):
    (tmp_path / "file").write_text("in the way")
    spec = write_spec(tmp_path)
    assert cli.main(["run", str(spec), "--out", str(tmp_path / "file" / "out")]) == 2
    err = one_line_error(capsys)
    assert err.startswith("bayesirl: error: --out ") and "cannot create the folder" in err
    assert str(tmp_path / "file") in err
    assert sorted(os.listdir(tmp_path)) == ["file", spec.name]


def test_an_out_that_is_a_file_is_refused_before_any_work(tmp_path, capsys, no_work):
    (tmp_path / "out").write_text("a file")
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(tmp_path / "out")]) == 2
    assert "exists and is not a folder" in one_line_error(capsys)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_a_read_only_parent_is_refused_before_any_work(tmp_path, capsys, no_work):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(parent / "out")]) == 2
    finally:
        parent.chmod(0o700)
    err = one_line_error(capsys)
    assert "cannot write in" in err and "Permission denied" in err


def test_a_non_empty_out_is_refused_unless_overwrite(tmp_path, capsys):
    spec, out = write_spec(tmp_path), tmp_path / "out"
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet"]) == 0
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    capsys.readouterr()
    assert cli.main(["run", str(spec), "--out", str(out), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert f"--out {out} is not empty" in err and "--overwrite" in err
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before


def test_overwrite_replaces_the_previous_run_leaving_none_of_its_files(tmp_path, capsys):
    out = tmp_path / "out"
    first = write_spec(tmp_path, method="svi", decisions=True, name="first")
    assert cli.main(["run", str(first), "--out", str(out), "--quiet"]) == 0
    assert {"decisions.csv", "decisions.png", "recovery.png", "diagnostics.png"} <= set(
        os.listdir(out))
    second = write_spec(tmp_path, method="map", name="second")
    assert cli.main(["run", str(second), "--out", str(out), "--quiet", "--overwrite"]) == 0
    assert sorted(os.listdir(out)) == ["policy.png", "posterior.nc", "report.md", "reward.png",
                                       "summary.csv"]
    assert birl.RewardPosterior.load(out / "posterior.nc").method == "map"
    assert "bayesirl report: second" in (out / "report.md").read_text()
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]


def test_overwrite_never_replaces_a_folder_holding_other_files(tmp_path, capsys, no_work):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "posterior.nc").write_text("an old run")
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(out), "--overwrite"]) == 2
    err = one_line_error(capsys)
    assert "holds 'notes.txt', which a run does not write" in err
    assert (out / "notes.txt").read_text() == "mine"


def test_an_empty_existing_out_is_used(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert (out / "posterior.nc").is_file()


def test_the_run_is_written_aside_and_moved_into_place_complete(tmp_path, monkeypatch):
    report_module = importlib.import_module("bayesirl.cli.report")
    out, seen = tmp_path / "out", {}
    write_report = report_module.write_report

    def spy(*args, **kwargs):
        seen["target exists"] = out.exists()
        seen["staging"] = [f for f in os.listdir(tmp_path) if f.endswith(".partial")]
        return write_report(*args, **kwargs)

    monkeypatch.setattr(report_module, "write_report", spy)
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    assert seen["target exists"] is False
    assert len(seen["staging"]) == 1 and seen["staging"][0].startswith(".out.")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".partial")]
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_a_failed_run_leaves_no_folder(tmp_path, capsys, monkeypatch):
    infer_module = importlib.import_module("bayesirl.inference.facade")

    def boom(*args, **kwargs):
        raise FloatingPointError("the ELBO became nan at step 3")

    monkeypatch.setattr(infer_module, "infer", boom)
    spec = write_spec(tmp_path)
    assert cli.main(["run", str(spec), "--out", str(tmp_path / "out")]) == 1
    assert "inference failed" in one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == [spec.name]


def test_a_killed_runs_staging_folder_is_removed_by_the_next_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    name = os.path.basename(temporary_path(tmp_path / "out", ".partial"))
    stale = tmp_path / name.replace(f".{os.getpid()}.", f".{pid}.")
    stale.mkdir()
    (stale / "posterior.nc").write_text("half a run")
    alive = tmp_path / name  # this process's own name pattern: a live writer, kept
    alive.mkdir()
    folder = OutputFolder(tmp_path / "out")
    folder.discard()
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("name", ["../escaped", "/abs/escaped"])
def test_a_spec_name_cannot_put_the_default_folder_elsewhere(tmp_path, capsys, monkeypatch,
                                                             name):
    work = tmp_path / "work"
    work.mkdir()
    spec = write_spec(work, name=name)
    monkeypatch.chdir(work)
    assert cli.main(["run", str(spec), "--quiet"]) == 2
    err = one_line_error(capsys)
    assert f"name is {name!r}, expected a plain file name" in err
    assert sorted(os.listdir(work)) == [spec.name] and sorted(os.listdir(tmp_path)) == ["work"]
    assert not os.path.exists("/abs/escaped")


def test_a_figure_that_fails_does_not_cost_the_posterior(tmp_path, capsys, monkeypatch):
    from bayesirl import plots

    def broken(*args, **kwargs):
        raise ValueError("no room for the arrows")

    monkeypatch.setattr(plots, "plot_policy", broken)
    out = tmp_path / "out"
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 1
    err = one_line_error(capsys)
    assert "a figure failed (ValueError: no room for the arrows); only reward.png written" in err
    assert sorted(os.listdir(out)) == ["posterior.nc", "report.md", "reward.png",
                                       "summary.csv"]
    assert birl.RewardPosterior.load(out / "posterior.nc").method == "map"
    assert "## Problems" in (out / "report.md").read_text()
