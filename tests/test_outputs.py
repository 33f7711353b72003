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
from bayesirl.cli.folder import OutputError, OutputFolder
from bayesirl.inference.facade import USED_BY
from bayesirl.posterior.files import temporary_path


def write_spec(tmp_path, method="map", decisions=False, name="tiny"):
    path = tmp_path / f"{name.replace('/', '_').replace('.', '_')}.toml"
    path.write_text(tiny_spec(name, comment="a tiny problem for the output-folder tests",
                              inference=dict(method=method, **{
                                  k: v for k, v in dict(num_samples=10, steps=20).items()
                                  if method in USED_BY[k]}))
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
    with pytest.raises(OutputError, match=f"is being written by another run .*{name}"):
        OutputFolder(tmp_path / "out")  # and it keeps this run from writing the same --out
    assert not stale.exists() and alive.exists()


@pytest.mark.parametrize("inside", [False, True])
def test_a_killed_runs_staging_folder_does_not_block_an_existing_out(tmp_path, inside):
    """Killed runs staged beside --out (it was missing) or inside it (it existed): neither is
    taken for a run writing the same --out now."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    out = tmp_path / "out"
    out.mkdir()
    name = os.path.basename(temporary_path(out, ".partial"))
    stale = (out if inside else tmp_path) / name.replace(f".{os.getpid()}.",
                                                         f".{int(dead.stdout)}.")
    stale.mkdir()
    folder = OutputFolder(out)
    folder.discard()
    assert not stale.exists() and os.listdir(out) == []


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


# ---------------------------------------------------------------------------- two runs, one --out
def staged(folder, **files):
    for name, text in files.items():
        (folder.path / name).write_text(text)
    return folder


def test_a_run_never_deletes_what_another_run_committed_to_its_out(tmp_path):
    out = tmp_path / "out"
    late = staged(OutputFolder(out), **{"posterior.nc": "late", "report.md": "late"})
    out.mkdir()  # meanwhile another run (started at the same moment) finished first
    (out / "posterior.nc").write_text("first")
    with pytest.raises(OutputError, match=r"is not empty \(it holds 'posterior.nc'\) at the end "
                                          r"of the run .*--overwrite was not given; this run's "
                                          r"outputs are kept in (\S+)") as caught:
        late.commit()
    late.discard()
    assert os.listdir(out) == ["posterior.nc"] and (out / "posterior.nc").read_text() == "first"
    kept = tmp_path / str(caught.value).rsplit(" kept in ", 1)[1]
    assert kept.parent == tmp_path and not kept.name.startswith(".")
    assert sorted(os.listdir(kept)) == ["posterior.nc", "report.md"]
    assert (kept / "posterior.nc").read_text() == "late"


def test_overwrite_at_commit_replaces_the_other_runs_outputs(tmp_path):
    out = tmp_path / "out"
    late = staged(OutputFolder(out, overwrite=True), **{"posterior.nc": "late"})
    out.mkdir()
    (out / "posterior.nc").write_text("first")
    (out / "recovery.png").write_text("first")
    assert late.commit() == out
    assert os.listdir(out) == ["posterior.nc"] and (out / "posterior.nc").read_text() == "late"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_the_cli_keeps_its_outputs_when_another_run_wrote_out_meanwhile(tmp_path, capsys,
                                                                         monkeypatch):
    report_module = importlib.import_module("bayesirl.cli.report")
    out, write_report = tmp_path / "out", report_module.write_report

    def other_run_finishes_first(*args, **kwargs):
        out.mkdir()
        (out / "posterior.nc").write_text("the other run's")
        return write_report(*args, **kwargs)

    monkeypatch.setattr(report_module, "write_report", other_run_finishes_first)
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 1
    err = one_line_error(capsys)
    assert f"--out {out} is not empty" in err and "outputs are kept in" in err
    assert os.listdir(out) == ["posterior.nc"]
    assert (out / "posterior.nc").read_text() == "the other run's"
    kept = [f for f in os.listdir(tmp_path) if ".unsaved." in f]
    assert len(kept) == 1 and str(tmp_path / kept[0]) in err
    assert birl.RewardPosterior.load(tmp_path / kept[0] / "posterior.nc").method == "map"


def test_an_existing_out_is_kept_and_filled_not_replaced(tmp_path, monkeypatch):
    """A mount point or a shell's working folder: its inode, mode and anything holding it stay;
    the run stages inside it (one file system) and moves the files in, report.md last."""
    report_module = importlib.import_module("bayesirl.cli.report")
    out, seen, write_report = tmp_path / "out", {}, report_module.write_report
    out.mkdir()
    out.chmod(0o750)
    before = os.stat(out)

    def spy(*args, **kwargs):
        seen["staging"] = os.listdir(out)
        return write_report(*args, **kwargs)

    monkeypatch.setattr(report_module, "write_report", spy)
    assert cli.main(["run", str(write_spec(tmp_path)), "--out", str(out), "--quiet"]) == 0
    after = os.stat(out)
    assert (after.st_ino, after.st_mode, after.st_uid) == (before.st_ino, before.st_mode,
                                                          before.st_uid)
    assert len(seen["staging"]) == 1 and seen["staging"][0].endswith(".partial")
    assert sorted(os.listdir(out)) == ["policy.png", "posterior.nc", "report.md", "reward.png",
                                       "summary.csv"]
    assert sorted(os.listdir(tmp_path)) == ["out", "tiny.toml"]


def test_a_failed_move_keeps_the_outputs_not_yet_moved(tmp_path, monkeypatch):
    folder_module = importlib.import_module("bayesirl.cli.folder")
    out = tmp_path / "out"
    out.mkdir()
    folder = staged(OutputFolder(out), **{"posterior.nc": "p", "report.md": "r",
                                          "summary.csv": "s"})
    replace = os.replace

    def fail_on_the_report(src, dst):
        if os.path.basename(dst) == "report.md":
            raise OSError(16, "Device or resource busy")
        return replace(src, dst)

    monkeypatch.setattr(folder_module.os, "replace", fail_on_the_report)
    with pytest.raises(OutputError, match=r"moving report.md into --out .* failed \(Device or "
                                          r"resource busy\) after 2 of 3 files; this run's "
                                          r"outputs are kept in") as caught:
        folder.commit()
    folder.discard()
    kept = str(caught.value).rsplit(" kept in ", 1)[1]
    assert os.path.dirname(kept) == str(tmp_path) and os.listdir(kept) == ["report.md"]
    assert sorted(os.listdir(out)) == ["posterior.nc", "summary.csv"]


def test_a_refused_run_creates_no_folder(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(tiny_spec(inference={"method": "map"}).replace("block = 1", "block = 2"))
    out = tmp_path / "a" / "b" / "out"
    assert cli.main(["run", str(spec), "--out", str(out)]) == 2  # refused when built
    assert "block is 2" in one_line_error(capsys)
    assert sorted(os.listdir(tmp_path)) == ["bad.toml"]


def test_a_refused_run_leaves_an_existing_out_as_it_was(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text(tiny_spec(inference={"method": "map"}).replace("block = 1", "block = 2"))
    (tmp_path / "out").mkdir()
    assert cli.main(["run", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert os.listdir(tmp_path / "out") == []
