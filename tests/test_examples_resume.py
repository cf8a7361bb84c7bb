"""The fine-tuning examples interrupted (kill -9, Ctrl-C, a dead worker) and resumed,
and trained by two workers: the weights end as those of one uninterrupted process."""
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import REPO_ROOT
from test_example_inputs import GOOD, flags, write_data

sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))

import common  # noqa: E402
import task_sentiment_classification as sentiment  # noqa: E402
from local_cluster import worker_environments  # noqa: E402

from bertkit.resume import TrainingBackup  # noqa: E402

SENTIMENT = os.path.join(REPO_ROOT, "examples", "task_sentiment_classification.py")
EXACT = ["--dropout", "0", "--classifier-dropout", "0"]  # runs comparable to the last bit


def sentiment_argv(checkpoint, tmp_path, out, *extra, lines=GOOD * 20):
    data = write_data(tmp_path / "data", train=lines)
    return flags(checkpoint, **{"data-dir": data, "output-dir": str(out), "maxlen": 16,
                                "batch-size": 4, "epochs": 3, "lr": 1e-3}) + EXACT + list(extra)


def start(argv, env=None):
    env = dict(os.environ if env is None else env, TF_CPP_MIN_LOG_LEVEL="2",
               CUDA_VISIBLE_DEVICES="")
    # Ctrl-C as on a terminal: a shell's background job would pass SIGINT on as ignored.
    return subprocess.Popen([sys.executable, SENTIMENT, *argv], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return out


def manifest(out):
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        return json.load(f)


def wait_for_state(process, out, step):
    """Polls the run until it has saved a state at ``step`` or later."""
    while True:
        try:
            saved = manifest(out)
            if "state" in saved["files"] and saved["state"]["step"] >= step:
                return saved["state"]["step"]
        except (OSError, ValueError):
            pass  # not written yet
        assert process.poll() is None, f"the run ended before step {step}: " + \
            process.stderr.read()[-2000:]
        time.sleep(0.02)


def last_weights(out):
    saved = manifest(out)
    assert "state" not in saved["files"] and "weights" in saved["files"]  # finished
    with h5py.File(os.path.join(out, saved["files"]["last_weights"])) as f:
        found = {}

        def keep(name, item):  # returns None: visititems stops at any other value
            if isinstance(item, h5py.Dataset):
                found[name] = item[()]
        f.visititems(keep)
    assert len(found) > 20
    return found


def assert_same_weights(a, b, atol):
    assert a.keys() == b.keys()
    difference = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert difference <= atol, difference


def check_saved_files(out):
    """Every file the manifest names is whole: the state opens with its position."""
    saved = manifest(out)
    for name in saved["files"].values():
        with h5py.File(os.path.join(out, name)) as f:
            assert len(f.keys()) > 0
    with h5py.File(os.path.join(out, saved["files"]["state"])) as f:
        assert f.attrs["step"] == saved["state"]["step"]


def test_kill_9_and_ctrl_c_mid_epoch_then_resume_end_with_the_uninterrupted_weights(
        checkpoint, tmp_path):
    straight = tmp_path / "straight"
    finish(start(sentiment_argv(checkpoint, tmp_path, straight)))
    expected = last_weights(straight)

    out = tmp_path / "interrupted"
    argv = sentiment_argv(checkpoint, tmp_path, out, "--save-every-steps", "2")
    run = start(argv)
    wait_for_state(run, out, 34)  # 30 steps an epoch: in the middle of the second
    run.send_signal(signal.SIGKILL)
    run.wait()
    check_saved_files(out)

    resumed = start(argv + ["--resume"])
    step = wait_for_state(resumed, out, 64)  # the third epoch
    resumed.send_signal(signal.SIGINT)  # Ctrl-C saves where it is, then exits
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 130, err[-2000:]
    assert "interrupted" in err
    assert manifest(out)["state"]["step"] >= step
    check_saved_files(out)

    printed = finish(start(argv + ["--resume"]))
    assert "resumed at epoch 3, batch" in printed
    assert_same_weights(last_weights(out), expected, 1e-6)


def run_in_process(example, argv, stop_at=None, monkeypatch=None):
    """Runs ``example.main(argv)``; with ``stop_at``, Ctrl-C after that many steps."""
    if stop_at is None:
        return example.main(argv)
    step_end = TrainingBackup.on_train_batch_end
    seen = []

    def interrupting(self, batch, logs=None):
        step_end(self, batch, logs)
        seen.append(batch)
        if len(seen) == stop_at:
            raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(TrainingBackup, "on_train_batch_end", interrupting)
        with pytest.raises(KeyboardInterrupt):
            example.main(argv)


def ner_argv(tmp_path, out):
    import task_ner  # noqa: F401  (writes the sample data on first use)

    return ["--output-dir", str(out), "--epochs", "3", "--batch-size", "8", "--maxlen", "32",
            "--head", "crf", "--ema", "0.9", "--layerwise-lr-decay", "0.8", *EXACT[:2],
            "--head-dropout", "0"]


def triples_argv(tmp_path, out):
    from test_examples import SPO_TEXTS, write_spo_files

    train, valid, schema = write_spo_files(tmp_path / "spo", SPO_TEXTS * 6, SPO_TEXTS)
    return ["--train", train, "--valid", valid, "--schema", schema, "--epochs", "3",
            "--batch-size", "4", "--maxlen", "24", "--lr", "3e-3", "--swap-subjects", "0.5",
            "--output-dir", str(out), *EXACT[:2]]


@pytest.mark.parametrize("name", ["ner", "triples"])
def test_ner_and_triples_resume_to_the_uninterrupted_weights(name, demo_dir, tmp_path,
                                                             monkeypatch, capsys):
    import task_ner
    import task_triple_extraction

    example, make_argv = {"ner": (task_ner, ner_argv),
                          "triples": (task_triple_extraction, triples_argv)}[name]
    straight = tmp_path / "straight"
    run_in_process(example, make_argv(tmp_path, straight))
    out = tmp_path / "interrupted"
    argv = make_argv(tmp_path, out)
    steps = manifest(straight)["state"]["step"] // 3
    run_in_process(example, argv, stop_at=steps + 2, monkeypatch=monkeypatch)
    assert manifest(out)["state"]["step"] == steps + 2  # saved on Ctrl-C
    run_in_process(example, argv + ["--resume"])
    assert "resumed at epoch 2, batch 2" in capsys.readouterr().out
    assert_same_weights(last_weights(out), last_weights(straight), 1e-6)


def test_two_workers_fine_tune_as_one_process(checkpoint, tmp_path):
    one = tmp_path / "one"
    finish(start(sentiment_argv(checkpoint, tmp_path, one, "--epochs", "1")))
    two = tmp_path / "two"
    argv = sentiment_argv(checkpoint, tmp_path, two, "--epochs", "1", "--distribute",
                          "multiworker")
    workers = [start(argv, env) for env in worker_environments(2, threads=1)]
    printed = [finish(worker) for worker in workers]
    assert "2 replica(s) on 2 worker(s), this is worker 0 (the chief" in printed[0]
    assert "the chief writes the run" in printed[1]
    # The attention's key bias is left out: adding a constant to every score of a query
    # changes nothing after the softmax, so its true gradient is zero, and Adam turns
    # the rounding noise left in its place (which depends on the order the replicas'
    # sums add up) into steps of the learning rate's size.
    two, one = last_weights(two), last_weights(one)
    key_bias = [k for k in one if k.startswith("layers/multi_head_attention")
                and k.endswith("/vars/3")]
    assert len(key_bias) == 2 and all(one[k].shape == (32,) for k in key_bias)
    for k in key_bias:
        del one[k], two[k]
    assert_same_weights(two, one, 1e-5)


def test_a_dead_worker_stops_the_chief_and_resume_goes_on(checkpoint, tmp_path):
    out = tmp_path / "out"
    argv = sentiment_argv(checkpoint, tmp_path, out, "--distribute", "multiworker",
                          "--save-every-steps", "2")
    chief, other = [start(argv, env) for env in worker_environments(2, threads=1)]
    try:
        wait_for_state(chief, out, 4)
        other.send_signal(signal.SIGKILL)
        killed = time.time()
        _, err = chief.communicate(timeout=120)
        waited = time.time() - killed
    finally:
        for process in (chief, other):
            process.kill()
    assert chief.returncode == 3, err[-3000:]
    assert "error: another worker stopped answering, so training stopped" in err
    assert waited < 60, waited
    check_saved_files(out)
    saved_step = manifest(out)["state"]["step"]
    printed = finish(start(argv[:argv.index("--distribute")] + EXACT + ["--resume"]))
    epoch, batch = divmod(saved_step, 30)
    assert f"resumed at epoch {epoch + 1}, batch {batch} of 30" in printed
    assert "state" not in manifest(out)["files"]


def run_cli(checkpoint, tmp_path, capsys, *extra):
    code = common.run_cli(sentiment.main, sentiment_argv(checkpoint, tmp_path,
                                                         tmp_path / "out", *extra))
    return code, capsys.readouterr().err


def test_resume_refusals_name_what_is_wrong(checkpoint, tmp_path, capsys,
                                           monkeypatch):
    code, err = run_cli(checkpoint, tmp_path, capsys, "--resume")
    assert code == 2 and "--resume: no saved training state in" in err
    code, err = run_cli(checkpoint, tmp_path, capsys, "--resume", "--overwrite")
    assert code == 2 and "pass one of them" in err
    # A run to resume, stopped at step 5.
    run_in_process(sentiment, sentiment_argv(checkpoint, tmp_path, tmp_path / "out"),
                   stop_at=5, monkeypatch=monkeypatch)
    code, err = run_cli(checkpoint, tmp_path, capsys, "--resume", "--lr", "0.01")
    assert code == 2 and "--resume: --lr 0.01 (the saved run: 0.001)" in err
    code, err = run_cli(checkpoint, tmp_path, capsys, "--resume")
    assert code == 0, err
    code, err = run_cli(checkpoint, tmp_path, capsys, "--resume")
    assert code == 2 and "(the run there finished)" in err


def test_multiworker_without_tf_config_is_refused_before_any_work(checkpoint, tmp_path,
                                                                  capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit):
        sentiment.main(sentiment_argv(checkpoint, tmp_path, tmp_path / "out",
                                      "--distribute", "multiworker"))
    assert "--distribute multiworker needs TF_CONFIG" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "out")


def test_mirrored_runs_the_example_on_this_machines_devices(checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    result = sentiment.main(sentiment_argv(checkpoint, tmp_path, out, "--epochs", "1",
                                           "--distribute", "mirrored"))
    assert 0 <= result["test_accuracy"] <= 1
    assert "state" not in manifest(out)["files"]
