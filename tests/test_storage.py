"""Atomic writes and run directories: kills, full disks and failures at every write step."""
import errno
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from bertkit import storage
from bertkit.storage import (RunDirectory, RunDirectoryError, atomic_write,
                             save_weights_atomically, weights_writer, write_lines_atomically)
from conftest import REPO_ROOT


def tiny_model(seed):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="out")])
    return model


def test_atomic_write_replaces_whole_or_keeps_the_old_file(tmp_path):
    path = tmp_path / "sub" / "notes.txt"  # a missing folder is created
    write_lines_atomically(str(path), ["old"])

    def failing_lines():
        yield "half"
        raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        write_lines_atomically(str(path), failing_lines())
    assert path.read_text(encoding="utf-8") == "old\n"
    assert os.listdir(path.parent) == ["notes.txt"]  # the temporary file is gone
    with atomic_write(str(path), "wb") as f:
        f.write("新\n".encode("utf-8"))
    assert path.read_text(encoding="utf-8") == "新\n"
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert os.stat(path).st_mode & 0o777 == os.stat(plain).st_mode & 0o777  # not mkstemp's 0600


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_full_disk_is_one_clear_error_and_the_old_file_is_intact(tmp_path, monkeypatch,
                                                                   failing):
    path = tmp_path / "best.weights.h5"
    model = tiny_model(0)
    save_weights_atomically(model, str(path))
    before = path.read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if failing == "fsync":
        monkeypatch.setattr(storage.os, "fsync", no_space)
    else:
        class Full:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                no_space()

            def __getattr__(self, name):
                return getattr(self.f, name)

        real_fdopen = os.fdopen
        monkeypatch.setattr(storage.os, "fdopen", lambda *a, **k: Full(real_fdopen(*a, **k)))
    with pytest.raises(OSError, match=r"cannot write .*best.weights.h5: no space left") as info:
        save_weights_atomically(tiny_model(1), str(path))
    assert info.value.errno == errno.ENOSPC
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["best.weights.h5"]


def test_weights_saved_atomically_load_with_keras(tmp_path):
    model = tiny_model(0)
    path = str(tmp_path / "m.weights.h5")
    save_weights_atomically(model, path)
    other = tiny_model(1)
    other.load_weights(path)
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="must end in .weights.h5"):
        save_weights_atomically(model, str(tmp_path / "m.h5"))


def test_run_directory_refuses_another_run_and_commits_versions(tmp_path):
    run = RunDirectory(str(tmp_path / "run"))
    assert run.claim() is None and run.read() is None
    paths = run.commit({"lr": 1.0}, {"weights": ("best.weights.h5", weights_writer(tiny_model(0)))},
                       state={"epoch": 1, "val_accuracy": 0.5})
    assert os.path.basename(paths["weights"]) == "best.1.weights.h5"
    with pytest.raises(RunDirectoryError, match=r"holds a run saved .*epoch 1.*--overwrite"):
        RunDirectory(run.path).claim()
    assert RunDirectory(run.path).claim(resume=True)["settings"] == {"lr": 1.0}
    # --overwrite: the old run stays whole until the new one commits, then its files go.
    RunDirectory(run.path).claim(overwrite=True)
    assert run.file("weights") == paths["weights"]
    second = run.commit({"lr": 2.0}, {"weights": ("best.weights.h5",
                                                  weights_writer(tiny_model(1)))})
    assert sorted(os.listdir(run.path)) == ["best.2.weights.h5", "run.json"]
    assert run.read()["settings"] == {"lr": 2.0} and run.file("weights") == second["weights"]


def test_run_directory_reads_the_old_layout_and_reports_broken_manifests(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"maxlen": 16}), encoding="utf-8")
    save_weights_atomically(tiny_model(0), str(tmp_path / "best.weights.h5"))
    run = RunDirectory(str(tmp_path))
    assert run.read()["settings"] == {"maxlen": 16}
    assert run.file("weights") == str(tmp_path / "best.weights.h5")
    os.remove(tmp_path / "best.weights.h5")
    with pytest.raises(RunDirectoryError, match="names weights file best.weights.h5, which is "
                                                "missing"):
        run.read()
    (tmp_path / "run.json").write_text("{half", encoding="utf-8")
    with pytest.raises(RunDirectoryError, match="not a readable run manifest"):
        run.read()


def assert_consistent(run_path, versions):
    """The manifest names whole files whose contents belong to its settings' version."""
    manifest = RunDirectory(run_path).read()
    if manifest is None:
        return None
    version = manifest["settings"]["version"]
    assert version in versions
    for role, name in manifest["files"].items():
        with open(os.path.join(run_path, name), "rb") as f:
            assert f.read() == versions[version][role], (role, name)
    return version


def payloads(version):
    # Large enough that writing takes a while: kills land inside writes too.
    return {"weights": bytes([version % 256]) * 3_000_000,
            "predictions": f"predictions of version {version}\n".encode() * 1000}


def commit_version(run, version):
    files = {role: (name, lambda path, data=data: storage.write_bytes_atomically(path, data))
             for (role, data), name in zip(payloads(version).items(),
                                           ("best.weights.h5", "valid_predictions.jsonl"))}
    run.commit({"version": version}, files, state={"epoch": version})


def test_a_failure_at_every_write_step_leaves_the_last_version_whole(tmp_path, monkeypatch):
    """Injects an OSError at the k-th file-system call of a commit, for every k."""
    run = RunDirectory(str(tmp_path / "run"))
    commit_version(run, 1)
    versions = {v: payloads(v) for v in (1, 2)}
    real = {name: getattr(os, name) for name in ("makedirs", "fdopen", "fsync", "replace",
                                                 "remove", "open")}
    failures, k = 0, 1
    while True:
        calls = [0]

        def make(name):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == k:
                    raise OSError(errno.EIO, f"injected failure in os.{name}")
                return real[name](*args, **kwargs)
            return call

        for name in real:
            monkeypatch.setattr(storage.os, name, make(name))
        try:
            commit_version(run, 2)
        except OSError:
            failures += 1
        for name in real:
            monkeypatch.setattr(storage.os, name, real[name])
        committed = assert_consistent(run.path, versions)
        if calls[0] < k:  # the commit made fewer calls than k: every step was covered
            break
        assert committed in (1, 2)
        if committed == 2:  # start again from version 1 for the next k
            commit_version(run, 1)
            versions = {v: payloads(v) for v in (1, 2)}
            assert assert_consistent(run.path, versions) == 1
        k += 1
    assert failures >= 5  # the commit has that many steps that can fail


KILLER = r"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("storage", sys.argv[1])
storage = importlib.util.module_from_spec(spec); spec.loader.exec_module(storage)
run = storage.RunDirectory(sys.argv[2])
version = int(sys.argv[3])
print("ready", flush=True)
while True:
    version += 1
    data = {"weights": bytes([version % 256]) * 3_000_000,
            "predictions": f"predictions of version {version}\n".encode() * 1000}
    files = {role: (name, lambda path, d=d: storage.write_bytes_atomically(path, d))
             for (role, d), name in zip(data.items(), ("best.weights.h5", "valid_predictions.jsonl"))}
    run.commit({"version": version}, files, state={"epoch": version})
"""


def test_kill_9_while_saving_leaves_a_complete_run(tmp_path):
    run = RunDirectory(str(tmp_path / "run"))
    commit_version(run, 1)
    script = tmp_path / "killer.py"
    script.write_text(KILLER, encoding="utf-8")
    module = os.path.join(REPO_ROOT, "bertkit", "storage.py")
    rng = np.random.default_rng(0)
    seen = set()
    for attempt in range(12):
        start = RunDirectory(run.path).read()["settings"]["version"]
        process = subprocess.Popen([sys.executable, str(script), module, run.path, str(start)],
                                   stdout=subprocess.PIPE)
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.0, 0.3)))
        process.send_signal(signal.SIGKILL)
        process.wait()
        versions = {v: payloads(v) for v in range(start, start + 400)}
        seen.add(assert_consistent(run.path, versions))
        RunDirectory(run.path).claim(overwrite=True)  # clears temporary files of the kill
        assert not [n for n in os.listdir(run.path) if n.startswith(".")]
    assert len(seen) > 1  # the kills landed after different numbers of commits


def test_real_full_file_system(tmp_path):
    """On a 1 MiB tmpfs (where this machine lets root mount one): one clear error."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
            capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    try:
        run = RunDirectory(str(mount / "run"))
        small = {"weights": ("best.weights.h5",
                             lambda p: storage.write_bytes_atomically(p, b"a" * 100_000))}
        run.commit({"version": 1}, small)
        big = {"weights": ("best.weights.h5",
                           lambda p: storage.write_bytes_atomically(p, b"b" * 5_000_000))}
        with pytest.raises(OSError, match="no space left on the device"):
            run.commit({"version": 2}, big)
        assert run.read()["settings"] == {"version": 1}
        with open(run.file("weights"), "rb") as f:
            assert f.read() == b"a" * 100_000
        assert sorted(os.listdir(run.path)) == ["best.1.weights.h5", "run.json"]
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_commit_directory_replaces_a_directory_whole(tmp_path, monkeypatch):
    target = tmp_path / "export"
    target.mkdir()
    (target / "old.txt").write_text("old")
    staged = tmp_path / ".export.tmp-1"
    (staged / "sub").mkdir(parents=True)
    (staged / "sub" / "new.txt").write_text("new")
    storage.commit_directory(str(staged), str(target))
    assert sorted(os.listdir(tmp_path)) == ["export"]
    assert (target / "sub" / "new.txt").read_text() == "new"
    assert not (target / "old.txt").exists()
    assert oct(os.stat(target).st_mode & 0o777) != oct(0o700)  # not mkdtemp's private mode

    # A failed rename puts the previous directory back.
    staged = tmp_path / ".export.tmp-2"
    staged.mkdir()
    real_replace = os.replace

    def crash_on_second(source, destination):
        if str(source) == str(staged):
            raise OSError(errno.EIO, "simulated crash")
        return real_replace(source, destination)
    monkeypatch.setattr(storage.os, "replace", crash_on_second)
    with pytest.raises(OSError, match="simulated crash"):
        storage.commit_directory(str(staged), str(target))
    assert sorted(os.listdir(tmp_path)) == [".export.tmp-2", "export"]
    assert (target / "sub" / "new.txt").read_text() == "new"
