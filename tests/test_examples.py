"""End-to-end runs of the example scripts on tiny checkpoints and data."""
import os
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))


@pytest.fixture
def demo_dir(tmp_path, monkeypatch):
    """Points the examples' demo checkpoint at a temporary directory."""
    import demo

    directory = str(tmp_path / "demo")
    monkeypatch.setattr(demo, "DEMO_DIR", directory)
    monkeypatch.setattr(demo, "DEMO_CONFIG", dict(demo.DEMO_CONFIG, hidden_size=32,
                                                   intermediate_size=64))
    return directory


def test_extract_features_default_and_explicit_checkpoint(demo_dir, capsys):
    import basic_extract_features

    features = basic_extract_features.main(["我们", "今天天气很好"])
    out = capsys.readouterr().out
    assert "RANDOM" in out and "tokens: ['[CLS]', '我', '们', '[SEP]']" in out
    assert features.shape == (2, 8, 32)
    for name in ("bert_config.json", "bert_model.ckpt.index", "vocab.txt"):
        assert os.path.exists(os.path.join(demo_dir, name))
    # The same checkpoint passed explicitly goes through the real loading path again.
    again = basic_extract_features.main([
        "--config", os.path.join(demo_dir, "bert_config.json"),
        "--checkpoint", os.path.join(demo_dir, "bert_model.ckpt"),
        "--vocab", os.path.join(demo_dir, "vocab.txt"), "我们", "今天天气很好"])
    np.testing.assert_allclose(again, features, atol=1e-6)


def test_extract_features_needs_all_three_paths(capsys):
    import basic_extract_features

    with pytest.raises(SystemExit):
        basic_extract_features.main(["--config", "x.json"])
    assert "go together" in capsys.readouterr().err


def write_split_files(directory, train, valid, test):
    os.makedirs(directory, exist_ok=True)
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        with open(os.path.join(directory, f"tiny.{split}.data"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    return str(directory)


GOOD = ["很好\t1", "太差了\t0", "非常满意\t1", "很失望\t0", "推荐购买\t1", "不推荐\t0"]


def test_sentiment_example_trains_saves_and_predicts(demo_dir, tmp_path):
    import task_sentiment_classification as example

    data_dir = write_split_files(tmp_path / "data", GOOD * 3, GOOD, GOOD)
    out = str(tmp_path / "out")
    result = example.main(["--data-dir", data_dir, "--epochs", "1", "--batch-size", "4",
                           "--maxlen", "16", "--ema", "0.9", "--layerwise-lr-decay", "0.8",
                           "--output-dir", out])
    assert 0 <= result["test_accuracy"] <= 1
    assert os.path.isfile(os.path.join(out, "best.weights.h5"))
    texts = ["很好", "太差了，不推荐"]
    encoded = [result["tokenizer"].encode(t, maxlen=16) for t in texts]
    from bertkit.data import sequence_padding

    expected = result["model"].predict([sequence_padding([e[0] for e in encoded]),
                                        sequence_padding([e[1] for e in encoded])], verbose=0)
    predictions = example.main(["--output-dir", out, "--predict", *texts])
    for (text, label, prob), row in zip(predictions, expected):
        assert label == int(np.argmax(row))
        assert prob == pytest.approx(float(row.max()), abs=1e-5)


@pytest.mark.parametrize("bad_line, message", [
    ("no tab here", "tiny.train.data:2: no tab"),
    ("好\tpositive", "tiny.train.data:2: label 'positive' is not a non-negative integer"),
    ("  \t1", "tiny.train.data:2: empty text"),
])
def test_sentiment_example_names_bad_lines(demo_dir, tmp_path, bad_line, message):
    import task_sentiment_classification as example

    data_dir = write_split_files(tmp_path / "data", ["很好\t1", bad_line, "太差\t0"], GOOD, GOOD)
    with pytest.raises(ValueError, match=message):
        example.main(["--data-dir", data_dir, "--epochs", "1", "--output-dir",
                      str(tmp_path / "out")])
    items = example.read_labelled_lines(os.path.join(data_dir, "tiny.train.data"),
                                        skip_bad_lines=True)
    assert items == [("很好", 1), ("太差", 0)]


def test_sentiment_example_missing_files(demo_dir, tmp_path):
    import task_sentiment_classification as example

    with pytest.raises(FileNotFoundError, match=r"no \*\.train\.data file in"):
        example.main(["--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "out")])
    with pytest.raises(FileNotFoundError, match="train first"):
        example.main(["--output-dir", str(tmp_path / "none"), "--predict", "很好"])
