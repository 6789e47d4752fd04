"""examples/mnist_sweep.py on Dask (``--executor dask``), against a real LocalCluster of worker
processes: the same results.json as the local executor, byte for byte; a restart after the
driver is killed resumes; a worker killed mid-run is run again; a running scheduler's address;
a run that raises on its worker ends the sweep with its traceback and one line.

They need the ``distributed`` extra (``pip install -e ".[distributed]"``) and the real MNIST (the
``mnist_root`` fixture). Subprocess timeouts are hang guards (see test_examples.HANG_GUARD).
"""

import json
import os
import signal
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow   # clusters of worker processes: about 1.5 minutes in all

from conftest import REPO  # noqa: E402
from test_examples import (Sweep, children_of, kill_after_the_first_run_then_resume, mnist_sweep,  # noqa: E402
                           needs_proc, quick_sweep_args, run_example, run_script,
                           still_running_soon_after)

# two settings at once (depth x optimizer): four quick runs of a few seconds each
GRID = ("--layers", "2", "3", "--optimizer", "sgd", "adam", "--lr", "0.005", "--jobs", "2")


def test_dask_results_equal_the_local_executors_byte_for_byte(tmp_path, mnist_root):
    local, dask = tmp_path / "local", tmp_path / "dask"
    run_example("mnist_sweep.py", *quick_sweep_args(local, mnist_root, *GRID), normal=30)
    out = run_example("mnist_sweep.py", *quick_sweep_args(dask, mnist_root, *GRID, "--executor", "dask", "--report"),
                      normal=40)
    assert "4 runs: 0 already finished" in out and "on Dask (a LocalCluster of 2 worker(s))" in out
    # the report reads the model's source after the cluster is gone: the LocalCluster's scheduler,
    # in the driver's process, must not have replaced the driver's modules with its temporary copies
    assert (dask / "report.pdf").stat().st_size > 0 and "class MLP(nn.Module)" in (dask / "report.md").read_text()
    assert (dask / "results.json").read_bytes() == (local / "results.json").read_bytes()
    results = json.loads((dask / "results.json").read_text())
    assert len({r["final_train_loss"] for r in results}) == 4   # four different runs, not one four times
    local_times, dask_times = (json.loads((folder / "timings.json").read_text()) for folder in (local, dask))
    assert set(local_times) == set(dask_times) == {r["key"] for r in results}
    assert not {t["pid"] for t in local_times.values()} & {t["pid"] for t in dask_times.values()}
    provenance = json.loads((dask / "provenance.json").read_text())
    for r in results:   # each run's own file holds its time and provenance (taken on its worker) besides
        saved = json.loads((dask / "runs" / f"{r['key']}.json").read_text())   # the results
        assert saved == dict(r, **dask_times[r["key"]], provenance=provenance[r["key"]])
        assert saved["provenance"]["hostname"] == saved["host"] and saved["provenance"]["data_md5"]


@needs_proc
def test_dask_sweep_resumes_after_the_driver_is_killed(tmp_path, mnist_root):
    args = quick_sweep_args(tmp_path, mnist_root, "--layers", "2", "3", "4", "--epochs", "2", "--jobs", "1",
                            "--executor", "dask")

    def killed(children):
        assert not still_running_soon_after(children), "the LocalCluster's processes outlived the killed driver"
    kill_after_the_first_run_then_resume(tmp_path, args, normal=40, killed=killed)


def test_dask_runs_again_a_run_whose_worker_was_killed(tmp_path, mnist_root):
    """The first attempt of one run kills its own worker process after its first epoch (as the OS
    does when memory runs out; mnist_sweep's test-only KILL_WORKER_ONCE); Dask starts the run
    again on a worker the nanny restarts, the sweep completes and says so."""
    args = quick_sweep_args(tmp_path / "out", mnist_root, "--layers", "2", "3", "--epochs", "2", "--jobs", "2",
                            "--executor", "dask")
    victim = mnist_sweep.run_configs(mnist_sweep.parse_args(args))[0]["key"]
    marker = tmp_path / "killed-once"
    result = run_script("mnist_sweep.py", *args, normal=40,
                        env=dict(os.environ, **{mnist_sweep.KILL_WORKER_ONCE: f"{victim}:{marker}"}))
    assert result.returncode == 0, result.stderr
    assert marker.exists(), "the first attempt should have killed its worker"
    assert f"{victim}: its worker was lost; Dask runs it again (attempt 2" in result.stderr
    assert f"1 run(s) were trained again after their worker was lost: {victim}" in result.stderr
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [r["key"] for r in results][0] == victim and all(len(r["test_accuracy"]) == 2 for r in results)


@pytest.fixture
def running_scheduler():
    """A LocalCluster of two single-threaded worker processes, as a user would start with
    ``dask worker ADDRESS --nthreads 1`` and TINYGRAD_EDU_NUM_THREADS=1."""
    import dask
    threads = {var: 1 for var in mnist_sweep.THREAD_LIMITS}
    with dask.config.set({"distributed.nanny.pre-spawn-environ": threads}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                           dashboard_address=None)
    with cluster:
        yield cluster.scheduler_address


def test_dask_sweep_on_a_running_scheduler_matches_the_local_cluster(tmp_path, mnist_root, running_scheduler):
    local_cluster, scheduler = tmp_path / "local-cluster", tmp_path / "scheduler"
    flags = ("--layers", "2", "3", "--executor", "dask")
    run_example("mnist_sweep.py", *quick_sweep_args(local_cluster, mnist_root, *flags), normal=30)
    out = run_example("mnist_sweep.py", *quick_sweep_args(scheduler, mnist_root, *flags, "--scheduler",
                                                          running_scheduler), normal=30)
    assert f"2 to train on Dask ({running_scheduler})" in out
    assert (scheduler / "results.json").read_bytes() == (local_cluster / "results.json").read_bytes()
    # this test's process runs that scheduler: the upload left its own modules alone
    assert Path(sys.modules["mnist_common"].__file__).parent == REPO / "examples"


def test_dask_sweep_says_when_the_scheduler_cannot_be_reached(tmp_path, mnist_root):
    result = run_script("mnist_sweep.py", *quick_sweep_args(tmp_path, mnist_root, "--layers", "2", "--executor",
                        "dask", "--scheduler", "tcp://127.0.0.1:9"), normal=30,
                        env=dict(os.environ, DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT="2s"))   # Dask's own setting
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        "error: cannot reach the Dask scheduler at tcp://127.0.0.1:9")


@needs_proc
def test_dask_sweep_stops_on_ctrl_c_with_one_line_and_closes_its_cluster(tmp_path, mnist_root):
    args = quick_sweep_args(tmp_path, mnist_root, "--layers", "2", "3", "4", "--epochs", "3", "--jobs", "2",
                            "--executor", "dask")
    sweep = Sweep(tmp_path, *args)
    sweep.wait_for_output("epoch 1 test accuracy", normal=40)   # the workers are training
    children = children_of(sweep.proc.pid)
    sweep.proc.send_signal(signal.SIGINT)
    returncode, _, err = sweep.finish(normal=10)
    assert not still_running_soon_after(children), "the LocalCluster's workers outlived the stopped sweep"
    saved = len(list((tmp_path / "runs").glob("*.json")))
    assert returncode == 130 and err.strip().splitlines() == [
        f"interrupted: {saved} finished run(s) are saved in {tmp_path / 'runs'}; run the same command again to "
        f"continue"], err


def test_a_run_that_raises_on_its_worker_ends_the_sweep_with_its_traceback_and_one_line(tmp_path, monkeypatch,
                                                                                       capsys):
    """As with local workers: the run's own traceback, then one line naming the run (and the
    finished runs are kept: main() says so). On a cluster of worker threads in this process, where
    train_run can be made to fail; no data is read."""
    def failing_run(config, data_dir, report, jit):
        raise ValueError("no such layer size")
    monkeypatch.setattr(mnist_sweep, "train_run", failing_run)
    args = mnist_sweep.parse_args(quick_sweep_args(tmp_path, tmp_path, "--layers", "2", "--executor", "dask"))
    todo = mnist_sweep.run_configs(args)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        args.scheduler = cluster.scheduler_address
        with pytest.raises(mnist_sweep.WorkerLost, match=f"the run {todo[0]['key']} ended with ValueError "
                                                         r"\(its traceback is printed above\)"):
            mnist_sweep.run_dask(todo, args, tmp_path, tmp_path, mnist_sweep.Progress(1), {})
    err = capsys.readouterr().err
    assert "Traceback" in err and "ValueError: no such layer size" in err and "failing_run" in err
