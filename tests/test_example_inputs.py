"""Bad input stops the examples before the first step, with one line naming what is wrong."""
import json
import logging
import os
import sys

import keras
import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))

import common  # noqa: E402
import pretrain_mlm  # noqa: E402
import task_sentiment_classification as sentiment  # noqa: E402
import task_triple_extraction as triples  # noqa: E402

GOOD = ["很好\t1", "太差了\t0", "非常满意\t1", "很失望\t0", "推荐购买\t1", "不推荐\t0"]


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if any example reaches ``fit``: every check must come first."""
    def fit(*args, **kwargs):
        raise AssertionError("training started before the input was checked")
    monkeypatch.setattr(keras.Model, "fit", fit)


def flags(paths, **overrides):
    values = dict(paths, **overrides)
    return [item for key, value in values.items() for item in (f"--{key}", str(value))]


def write_data(directory, train=GOOD, valid=GOOD, test=GOOD, raw_train=None):
    os.makedirs(directory, exist_ok=True)
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        path = os.path.join(directory, f"tiny.{split}.data")
        if split == "train" and raw_train is not None:
            with open(path, "wb") as f:
                f.write(raw_train)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
    return str(directory)


def run_sentiment(checkpoint, tmp_path, capsys, *extra, **overrides):
    """``(exit code, stderr)`` of the sentiment example run through its command line."""
    values = {"data-dir": None, "output-dir": str(tmp_path / "out"), "maxlen": 16,
              "epochs": 1, "batch-size": 4, **overrides}
    values["data-dir"] = values["data-dir"] or write_data(tmp_path / "data")
    argv = flags(checkpoint, **values)
    code = common.run_cli(sentiment.main, argv + list(extra))
    return code, capsys.readouterr().err


def test_maxlen_beyond_the_position_embeddings(checkpoint, tmp_path, capsys, no_training):
    code, err = run_sentiment(checkpoint, tmp_path, capsys, maxlen=30)
    assert code == 2
    assert err == (f"error: maxlen 30 exceeds max_position_embeddings 24 of "
                   f"{checkpoint['config']}; use --maxlen 24 or less\n")
    assert not os.path.exists(tmp_path / "out" / "run.json")


def test_vocabulary_larger_than_the_config(checkpoint, tmp_path, capsys, no_training):
    vocab = tmp_path / "big_vocab.txt"
    vocab.write_text(open(checkpoint["vocab"], encoding="utf-8").read() + "甲\n乙\n",
                     encoding="utf-8")
    code, err = run_sentiment(checkpoint, tmp_path, capsys, vocab=vocab)
    assert code == 2
    assert f"error: {vocab} has 42 tokens but vocab_size is 40 of {checkpoint['config']}" in err


def test_config_value_types_and_typos(checkpoint, tmp_path, capsys, no_training, caplog):
    config = json.load(open(checkpoint["config"]))
    bad = tmp_path / "bad_config.json"
    bad.write_text(json.dumps(dict(config, layer_norm_eps="1e-12")), encoding="utf-8")
    code, err = run_sentiment(checkpoint, tmp_path, capsys, config=bad)
    assert code == 2
    assert err.startswith(f"error: {bad}: BertConfig: 'layer_norm_eps' must be a number")
    from bertkit.config import BertConfig

    with caplog.at_level(logging.WARNING, logger="bertkit"):
        BertConfig(vocab_size=40, hidden_sizee=64)
    assert "unknown key 'hidden_sizee' is ignored; did you mean 'hidden_size'?" in caplog.text


def test_truncated_checkpoint_data_is_named(checkpoint, tmp_path, capsys, no_training):
    data = checkpoint["checkpoint"] + ".data-00000-of-00001"
    with open(data, "rb") as f:
        content = f.read()
    with open(data, "wb") as f:
        f.write(content[: len(content) // 2])
    code, err = run_sentiment(checkpoint, tmp_path, capsys)
    assert code == 2
    assert err.startswith(f"error: cannot read checkpoint {checkpoint['checkpoint']}")
    assert "truncated or corrupt (nothing was loaded)" in err


@pytest.mark.parametrize("line, problem", [
    ("很好\t--1", "label '--1' is not a non-negative integer"),
    ("很好\t²", "label '²' is not a non-negative integer"),
    ("很好\t1e3", "label '1e3' is not a non-negative integer"),
    (b"\xe5\xbe\x88\xff\t1", "not UTF-8 text (byte 0xff at byte 4)"),
])
def test_bad_label_and_encoding_lines_are_named_and_skippable(checkpoint, tmp_path, capsys,
                                                              no_training, line, problem):
    raw = line if isinstance(line, bytes) else line.encode("utf-8")
    data = write_data(tmp_path / "data", raw_train=b"\xef\xbb\xbf" + "很好\t1\n".encode()
                      + raw + "\n太差了\t0\n".encode())  # a BOM first, as Windows writes
    code, err = run_sentiment(checkpoint, tmp_path, capsys, **{"data-dir": data})
    assert code == 2
    train = os.path.join(data, "tiny.train.data")
    assert err == f"error: {train}:2: {problem} (use --skip-bad-lines to skip such lines)\n"
    assert sentiment.read_labelled_lines(train, skip_bad_lines=True) == [("很好", 1),
                                                                         ("太差了", 0)]


def test_label_count_is_checked_against_the_labels(checkpoint, tmp_path, capsys, no_training):
    data = write_data(tmp_path / "data", train=GOOD + ["很好\t1000000"])
    code, err = run_sentiment(checkpoint, tmp_path, capsys, **{"data-dir": data})
    train = os.path.join(data, "tiny.train.data")
    assert code == 2
    assert err == (f"error: {train}:7: label 1000000 would make a 1000001-class classifier, "
                   "but training has 3 distinct labels; fix the label or pass --num-classes "
                   "1000001\n")
    code, err = run_sentiment(checkpoint, tmp_path, capsys, **{"data-dir": data,
                                                               "num-classes": 3})
    assert err == f"error: {train}:7: label 1000000 is not below --num-classes 3\n"

    paths = {s: f"{s}.data" for s in ("train", "valid", "test")}
    splits = {"train": [("a", 0), ("b", 1), ("c", 3)], "valid": [("d", 2), ("e", 2), ("f", 0)],
              "test": [("g", 1)]}
    numbers = {s: list(range(1, len(items) + 1)) for s, items in splits.items()}
    assert sentiment.count_classes(splits, paths, numbers) == 4
    out = capsys.readouterr().out
    assert "warning: train.data: label(s) [2] never occur in training" in out
    assert ("warning: valid.data: 2 line(s) have labels training never shows (label 2: 2); "
            "they cannot be predicted right") in out
    assert sentiment.count_classes(splits, paths, numbers, num_classes=10) == 10
    splits["test"] = [("h", 7)]  # beyond the classes: a warning, it only scores as wrong
    assert sentiment.count_classes(splits, paths, numbers) == 4
    assert ("warning: test.data: label 7 is beyond the 4 classes; --num-classes 8 gives it "
            "a class of its own") in capsys.readouterr().out


def test_a_vocabulary_with_a_byte_order_mark(tmp_path):
    from bertkit.tokenizers import Tokenizer

    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes("\ufeff[PAD]\n[UNK]\n[CLS]\n[SEP]\n好\n".encode("utf-8"))
    tokenizer = Tokenizer(str(vocab))
    assert tokenizer._token_pad_id == 0 and tokenizer.token_to_id("[PAD]") == 0
    vocab.write_bytes(b"[PAD]\n\xff\n")
    with pytest.raises(ValueError, match=r"vocab.txt:2: not utf-8 text \(byte 0xff"):
        Tokenizer(str(vocab))


def test_another_runs_output_dir_is_refused_and_overwrite_keeps_it_until_a_save(
        checkpoint, tmp_path, capsys, monkeypatch):
    code, _ = run_sentiment(checkpoint, tmp_path, capsys)
    assert code == 0
    out = str(tmp_path / "out")
    before = json.load(open(os.path.join(out, "run.json")))
    predicted = sentiment.main(["--output-dir", out, "--predict", "很好", "太差了"])
    capsys.readouterr()

    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "fit", lambda *a, **k: pytest.fail("training started"))
        code, err = run_sentiment(checkpoint, tmp_path, capsys, pooling="mean")
    assert code == 2
    assert err.startswith(f"error: {out} holds a run saved ") and "--overwrite" in err

    def interrupted_fit(*args, **kwargs):  # Ctrl-C before the first epoch ends
        raise KeyboardInterrupt
    with monkeypatch.context() as patch:
        patch.setattr(keras.Model, "fit", interrupted_fit)
        code, err = run_sentiment(checkpoint, tmp_path, capsys, "--overwrite", pooling="mean")
    assert code == 130 and "keeps its last saved version" in err
    assert json.load(open(os.path.join(out, "run.json"))) == before
    assert sentiment.main(["--output-dir", out, "--predict", "很好", "太差了"]) == predicted

    code, _ = run_sentiment(checkpoint, tmp_path, capsys, "--overwrite", pooling="mean")
    assert code == 0
    after = json.load(open(os.path.join(out, "run.json")))
    assert after["settings"]["pooling"] == "mean" and after["version"] > before["version"]
    # The finished run keeps its best and its last weights, nothing of the run it replaced.
    assert set(after["files"]) == {"weights", "last_weights"}
    assert sorted(os.listdir(out)) == sorted(["run.json", *after["files"].values()])


def test_debug_shows_the_traceback(checkpoint, tmp_path, no_training):
    argv = flags(checkpoint, maxlen=30, **{"data-dir": write_data(tmp_path / "data"),
                                           "output-dir": str(tmp_path / "out")})
    with pytest.raises(ValueError, match="exceeds max_position_embeddings"):
        common.run_cli(sentiment.main, argv + ["--debug"])


def test_triple_example_errors_are_one_line(checkpoint, tmp_path, capsys, no_training):
    train = tmp_path / "train.json"
    train.write_bytes('{"text": "很好", "spo_list": []}\n'.encode() + b'{"text": "\xff"}\n')
    code = common.run_cli(triples.main, flags(checkpoint, train=train, valid=train,
                                              **{"output-dir": str(tmp_path / "spo")}))
    assert code == 2
    assert capsys.readouterr().err.startswith(f"error: {train}:2: not UTF-8 text")


def pretrain(vocab, config, out, *extra, **overrides):
    corpus = os.path.join(REPO_ROOT, "examples", "data", "sentiment.train.data")
    values = dict(corpus=corpus, vocab=vocab, config=config, maxlen=16,
                  **{"batch-size": 8, "max-steps": 2, "verbose": 0, "output-dir": out})
    values.update(overrides)
    return common.run_cli(pretrain_mlm.main, flags(values) + list(extra))


def test_pretraining_resume_checks_the_flags(tmp_path, capsys):
    import demo

    from bertkit.tokenizers import Tokenizer

    vocab = demo.ensure_demo_checkpoint(str(tmp_path / "demo"))[2]
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(demo.DEMO_CONFIG, hidden_size=32, intermediate_size=48,
                                      max_position_embeddings=32,
                                      vocab_size=Tokenizer(vocab).vocab_size)))
    out = str(tmp_path / "pre")
    assert pretrain(vocab, config, out, "--resume") == 2
    assert capsys.readouterr().err == (f"error: --resume: no saved run in {out}; start "
                                       "without --resume\n")
    assert pretrain(vocab, config, out, maxlen=64) == 2
    assert "maxlen 64 exceeds max_position_embeddings 32" in capsys.readouterr().err
    assert pretrain(vocab, config, out) == 0
    capsys.readouterr()
    assert pretrain(vocab, config, out) == 2  # --resume forgotten: the progress is kept
    assert "holds a run saved" in capsys.readouterr().err
    assert pretrain(vocab, config, out, "--resume", maxlen=8, lr=1e-3) == 2
    err = capsys.readouterr().err
    assert "--lr 0.001 (the saved run: 0.0005)" in err
    assert "--maxlen 8 (the saved run: 16)" in err and err.count("\n") == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(json.load(open(config)), hidden_size=64)))
    assert pretrain(vocab, other, out, "--resume") == 2
    assert f"--config {other} (the saved run: {config})" in capsys.readouterr().err
    # What only changes how long it runs (or where it logs) may change.
    logs = tmp_path / "logs"
    assert pretrain(vocab, config, out, "--resume", **{"max-steps": 4, "minutes": 5,
                                                      "log-dir": str(logs)}) == 0
    assert "resumed at step 2" in capsys.readouterr().out
    assert os.listdir(logs / "train")  # TensorBoard's event file
    state = json.load(open(os.path.join(out, "run.json")))["state"]
    assert state["step"] == 4
    np.testing.assert_equal(sorted(os.listdir(out)), sorted(
        ["bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index",
         "vocab.txt", "run.json", json.load(open(os.path.join(out, "run.json")))["files"]
         ["state"]]))


def test_an_example_logged_to_a_file_is_clean(checkpoint, tmp_path):
    """No TensorFlow native log lines and no progress-bar ``\\r`` in a redirected run."""
    import subprocess

    log = tmp_path / "run.log"
    argv = flags(checkpoint, maxlen=16, epochs=2, **{"batch-size": 4,
                                                     "data-dir": write_data(tmp_path / "d"),
                                                     "output-dir": str(tmp_path / "out")})
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    with open(log, "w") as f:
        code = subprocess.call([sys.executable, os.path.join(REPO_ROOT, "examples",
                                                              "task_sentiment_classification.py"),
                                *argv], stdout=f, stderr=subprocess.STDOUT, env=env)
    text = log.read_text()
    assert code == 0, text
    assert "\r" not in text
    native = [line for line in text.splitlines()
              if line.startswith(("I0000", "W0000", "E0000", "WARNING: All log messages"))
              or "cpu_feature_guard" in line or "oneDNN custom operations" in line]
    assert not native, native
    assert "Epoch 2/2" in text and "best val_accuracy" in text  # the example's own lines


def test_log_dir_writes_scalars_and_attention_images_and_plot_a_png(checkpoint, tmp_path,
                                                                     capsys):
    import tensorflow as tf

    log_dir, plot = tmp_path / "logs", tmp_path / "run.png"
    code, err = run_sentiment(checkpoint, tmp_path, capsys, epochs=2, **{
        "log-dir": str(log_dir), "plot": str(plot)})
    assert code == 0, err
    found = {}
    for root, _, files in os.walk(log_dir):
        for name in files:
            for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
                for value in event.summary.value:
                    found.setdefault((os.path.basename(root), value.tag), []).append(event.step)
    # One event file an epoch (each epoch is a fit of its own, so a run can resume).
    assert sorted(found[("train", "epoch_loss")]) == [0, 1]
    assert sorted(found[("train", "epoch_learning_rate")]) == [0, 1]
    assert sorted(found[("validation", "epoch_accuracy")]) == [0, 1]  # the evaluator's
    assert found[("attention", "attention/layer_-1")] == [0, 1]
    with open(plot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_attention_grid_puts_the_heads_side_by_side():
    from bertkit.callbacks import attention_grid

    probs = np.array([[[0.5, 0.5], [1.0, 0.0]], [[0.25, 0.75], [0.0, 1.0]]])
    image = attention_grid(probs, cell=2)
    assert image.shape == (4, 2 * 4 + 2)
    np.testing.assert_allclose(image[:2, :4], [[1, 1, 1, 1]] * 2)  # head 0, row 0, scaled
    np.testing.assert_allclose(image[2:, 6:8], [[0, 0]] * 2)        # head 1, row 1, key 0
    np.testing.assert_allclose(image[:, 4:6], 1.0)                  # the gap
