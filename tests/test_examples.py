"""End-to-end runs of the example scripts on tiny checkpoints and data."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import REPO_ROOT, read_export

sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))


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
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    assert os.path.join(out, manifest["files"]["weights"]) == result["weights"]
    assert result["weights"].endswith(".weights.h5") and os.path.isfile(result["weights"])
    assert manifest["settings"]["maxlen"] == 16 and manifest["state"]["epoch"] == 1
    texts = ["很好", "太差了，不推荐"]
    encoded = [result["tokenizer"].encode(t, maxlen=16) for t in texts]
    from bertkit.data import sequence_padding

    expected = result["model"].predict([sequence_padding([e[0] for e in encoded]),
                                        sequence_padding([e[1] for e in encoded])], verbose=0)
    predictions = example.main(["--output-dir", out, "--predict", *texts])
    for (text, label, prob), row in zip(predictions, expected):
        assert label == int(np.argmax(row))
        assert prob == pytest.approx(float(row.max()), abs=1e-5)

    # --export: serving files from the saved weights, read where bertkit is not importable.
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    exported = str(tmp_path / "exported")
    example.main(["--output-dir", out, "--export", exported])
    manifest = json.load(open(os.path.join(exported, "serving.json"), encoding="utf-8"))
    assert manifest["metadata"]["maxlen"] == 16 and manifest["files"] == ["vocab.txt"]
    assert os.path.isfile(os.path.join(exported, "vocab.txt"))
    served = read_export(tmp_path, exported, {
        "Input-Token": sequence_padding([e[0] for e in encoded]).astype("int32"),
        "Input-Segment": sequence_padding([e[1] for e in encoded]).astype("int32")})
    for fmt in ("saved_model", "onnx", "openvino"):
        np.testing.assert_allclose(served[fmt]["probabilities"], expected, atol=1e-4)
        np.testing.assert_array_equal(served[fmt]["label"], expected.argmax(-1))
    with pytest.raises(ValueError, match="--overwrite"):
        example.main(["--output-dir", out, "--export", exported])


def test_reinit_top_blocks_flag_restarts_only_the_last_blocks(demo_dir, capsys):
    import task_sentiment_classification as sentiment
    import task_triple_extraction as triples
    from demo import ensure_demo_checkpoint

    config, checkpoint, vocab = ensure_demo_checkpoint()
    paths = ["--config", config, "--checkpoint", checkpoint, "--vocab", vocab]
    kept = sentiment.build_classifier(sentiment.parse_args(paths), 2, checkpoint)
    args = sentiment.parse_args(paths + ["--reinit-top-blocks", "1"])
    restarted = sentiment.build_classifier(args, 2, checkpoint)
    assert "re-initialised the last 1 transformer block(s): 4 layers" in capsys.readouterr().out
    last = max(int(layer.name.split("-")[1]) for layer in kept.layers
               if layer.name.endswith("-FeedForward-Norm"))
    for name, same in ((f"Transformer-{last - 1}-FeedForward", True),
                       (f"Transformer-{last}-FeedForward", False), ("Embedding-Token", True)):
        old, new = (m.get_layer(name).get_weights()[0] for m in (kept, restarted))
        assert np.array_equal(old, new) == same, name
    gamma, beta = restarted.get_layer(f"Transformer-{last}-FeedForward-Norm").get_weights()
    assert (gamma == 1).all() and (beta == 0).all()

    with pytest.raises(SystemExit):
        sentiment.parse_args(paths + ["--reinit-top-blocks", "-1"])
    assert "--reinit-top-blocks must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        triples.parse_args(["--random-model", "1,16,2,32", "--vocab", vocab,
                            "--reinit-top-blocks", "1"])
    assert "a --random-model starts afresh already" in capsys.readouterr().err


def _dropout_rates(layer):
    """The set of rates of every Dropout layer inside ``layer``, nested ones included."""
    return {sub.rate for sub in layer._flatten_layers() if type(sub).__name__ == "Dropout"}


def test_dropout_flags_mean_the_same_in_both_fine_tuning_examples(demo_dir, capsys):
    import task_sentiment_classification as sentiment
    import task_triple_extraction as triples
    from demo import ensure_demo_checkpoint

    config, checkpoint, vocab = ensure_demo_checkpoint()
    paths = ["--config", config, "--checkpoint", checkpoint, "--vocab", vocab]
    with open(config) as f:
        config_rate = json.load(f)["hidden_dropout_prob"]

    def encoder_and_head_rates(model, head_name):
        encoder = set()
        for layer in model.layers:
            if layer.name != head_name:
                encoder |= _dropout_rates(layer)
        return encoder, _dropout_rates(model.get_layer(head_name))

    model = sentiment.build_classifier(sentiment.parse_args(paths), 2)
    assert encoder_and_head_rates(model, "Classifier") == ({config_rate}, {0.1})
    args = sentiment.parse_args(paths + ["--dropout", "0.05", "--classifier-dropout", "0.3"])
    model = sentiment.build_classifier(args, 2)
    assert encoder_and_head_rates(model, "Classifier") == ({0.05}, {0.3})

    args = triples.parse_args(paths + ["--dropout", "0.05"])
    assert _dropout_rates(triples.build_extractor(args, ["p"]).model) == {0.05}

    for module, flag in ((sentiment, "--dropout"), (sentiment, "--classifier-dropout"),
                         (triples, "--dropout")):
        with pytest.raises(SystemExit):
            module.parse_args(paths + [flag, "1"])
        assert f"{flag} must be in [0, 1)" in capsys.readouterr().err


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


# -- triple extraction ------------------------------------------------------------------

SPO_TEXTS = [
    ("银杏又名白果，原产于中国。", [("银杏", "别称", "白果"), ("银杏", "地理分布", "中国")]),
    ("月季的花多为红色和黄色。", [("月季", "颜色", "红色"), ("月季", "颜色", "黄色")]),
    ("荷花原产于印度，花多为白色。", [("荷花", "地理分布", "印度"), ("荷花", "颜色", "白色")]),
    ("樟树又名香樟，原产于台湾。", [("樟树", "别称", "香樟"), ("樟树", "地理分布", "台湾")]),
]
SPO_PREDICATES = ["别称", "地理分布", "颜色"]


def write_spo_files(directory, train, valid):
    """Writes LIC2019-format train/valid files and a schema; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = []
    for name, items in (("train", train), ("valid", valid)):
        path = os.path.join(directory, f"{name}.json")
        with open(path, "w", encoding="utf-8") as f:
            for text, triples in items:
                spo_list = [{"subject": s, "predicate": p, "object": o} for s, p, o in triples]
                f.write(json.dumps({"text": text, "spo_list": spo_list},
                                   ensure_ascii=False) + "\n")
        paths.append(path)
    schema = os.path.join(directory, "schema.json")
    with open(schema, "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"predicate": p}, ensure_ascii=False) + "\n"
                     for p in SPO_PREDICATES)
    return paths + [schema]


def test_triple_example_trains_counts_skips_and_predicts(demo_dir, tmp_path, capsys):
    import task_triple_extraction as example

    noisy = [
        ("松树高大。", [("松树", "别称", "青松")]),                      # object not in the text
        ("柳树原产于中国。", [("柳树", "地理分布", "中国"), ("柳树", "寓意", "离别")]),
        ("梅花" + "，" * 40 + "原产于中国。", [("梅花", "地理分布", "中国")]),  # beyond maxlen
        ("今天天气很好。", []),                                           # a negative text
    ]
    train, valid, schema = write_spo_files(tmp_path / "data", SPO_TEXTS * 8 + noisy, SPO_TEXTS)
    out = str(tmp_path / "out")
    result = example.main(["--train", train, "--valid", valid, "--schema", schema,
                           "--epochs", "8", "--batch-size", "8", "--maxlen", "24",
                           "--lr", "3e-3", "--ema", "0.5", "--output-dir", out])
    printed = capsys.readouterr().out
    assert '"truncated texts": 1, "not in text": 1, "cut by maxlen": 1' in printed
    assert '"unknown predicate": 1' in printed and '"dropped texts": 2' in printed
    assert result["gold"] == 8 and 0 <= result["f1"] <= 1
    assert os.path.basename(result["predictions"]).startswith("valid_predictions.")
    with open(result["predictions"], encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    assert [r["text"] for r in records] == [text for text, _ in SPO_TEXTS]
    assert records[0]["gold"] == [list(t) for t in SPO_TEXTS[0][1]]
    assert sum(len(r["predicted"]) for r in records) == result["predicted"] > 0
    # --predict rebuilds the model from run.json and the best weights: same triples.
    texts = [text for text, _ in SPO_TEXTS]
    predicted = example.main(["--output-dir", out, "--predict", *texts])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["spo_list"] for line in lines] == [r["predicted"] for r in records]
    assert [[list(t[:3]) for t in p] for p in predicted] == \
        [[[t["subject"], t["predicate"], t["object"]] for t in r["predicted"]] for r in records]

    # --export: both steps, each read back where bertkit is not importable.
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    exported = str(tmp_path / "exported")
    example.main(["--output-dir", out, "--export", exported,
                  "--export-formats", "saved_model", "onnx"])
    extractor, tokenizer = example.load_extractor(example.parse_args(["--output-dir", out,
                                                                      "--predict", "x"]))
    from bertkit.data import sequence_padding

    tokens = sequence_padding([tokenizer.encode(t, maxlen=24)[0] for t in texts]).astype("int32")
    x = {"Input-Token": tokens, "Input-Segment": np.zeros_like(tokens)}
    subject_probs, hidden = extractor.subject_model.predict(list(x.values()), verbose=0)
    subjects = np.array([[1, 2]] * len(texts), "int32")
    object_probs = extractor.object_model.predict([hidden, subjects], verbose=0)
    first = read_export(tmp_path, os.path.join(exported, "subjects"), x)
    second = read_export(tmp_path, os.path.join(exported, "objects"),
                         {"Input-Hidden": hidden, "Input-Subject": subjects})
    assert sorted(first) == ["onnx", "saved_model"]
    for fmt in ("saved_model", "onnx"):
        np.testing.assert_allclose(first[fmt]["subject_probabilities"], subject_probs, atol=1e-4)
        np.testing.assert_allclose(second[fmt]["object_probabilities"], object_probs, atol=1e-4)


def test_triple_example_random_model_and_valid_split(demo_dir, tmp_path):
    import demo
    import task_triple_extraction as example

    train, _, schema = write_spo_files(tmp_path / "data", SPO_TEXTS * 5, SPO_TEXTS)
    vocab = demo.ensure_demo_checkpoint()[2]
    out = str(tmp_path / "out")
    result = example.main(["--train", train, "--valid-split", "0.2", "--schema", schema,
                           "--vocab", vocab, "--random-model", "1,16,2,32", "--epochs", "1",
                           "--output-dir", out])
    assert result["gold"] == 8  # 4 of the 20 texts held out, 2 triples each
    with open(os.path.join(out, "run.json"), encoding="utf-8") as f:
        run = json.load(f)["settings"]
    config = run["config"]  # a random model's config is kept in the run itself
    assert (config["num_hidden_layers"], config["hidden_size"]) == (1, 16)
    assert run["predicates"] == SPO_PREDICATES
    items = list(range(10))
    train_part, valid_part = example.split_items(items, 0.3, seed=1)
    assert sorted(train_part + valid_part) == items and len(valid_part) == 3
    assert example.split_items(items, 0.3, seed=1) == (train_part, valid_part)


def test_triple_example_writes_the_training_split_for_pretraining(tmp_path):
    import task_triple_extraction as example

    texts = [(f"植物{i}又名别{i}。", [(f"植物{i}", "别称", f"别{i}")]) for i in range(20)]
    train, _, _ = write_spo_files(tmp_path / "data", texts, texts[:1])
    written = []
    for seed in ("1", "2"):  # --seed is the training seed: the split stays the same
        path = str(tmp_path / f"texts{seed}.txt")
        count = example.main(["--train", train, "--valid-split", "0.25", "--seed", seed,
                              "--write-train-texts", path])
        with open(path, encoding="utf-8") as f:
            written.append(f.read().splitlines())
        assert count == len(written[-1]) == 15
    assert written[0] == written[1]
    all_texts = [text for text, _ in texts]
    assert set(written[0]) < set(all_texts) and len(set(written[0])) == 15
    held_out = set(all_texts) - set(written[0])
    items = example.read_spo_lines(train)
    assert {item["text"] for item in example.split_items(items, 0.25, 42)[1]} == held_out
    other = str(tmp_path / "other.txt")
    example.main(["--train", train, "--valid-split", "0.25", "--split-seed", "3",
                  "--write-train-texts", other])
    with open(other, encoding="utf-8") as f:
        assert set(f.read().splitlines()) != set(written[0])


@pytest.mark.parametrize("line, message", [
    ("{not json", "train.json:2: invalid JSON"),
    ('{"text": "", "spo_list": []}', "train.json:2: no non-empty 'text'"),
    ('{"text": "银杏", "spo_list": [{"subject": "银杏"}]}', "train.json:2: an 'spo_list' entry"),
])
def test_triple_example_names_bad_lines(tmp_path, line, message):
    import task_triple_extraction as example

    path = tmp_path / "train.json"
    path.write_text('{"text": "银杏", "spo_list": []}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        example.read_spo_lines(str(path))
    assert len(example.read_spo_lines(str(path), skip_bad_lines=True)) == 1


def test_triple_example_argument_and_file_errors(tmp_path, capsys):
    import task_triple_extraction as example

    with pytest.raises(SystemExit):
        example.main(["--random-model", "4,256", "--vocab", "v.txt"])
    assert "four positive ints" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        example.main(["--random-model", "1,16,2,32"])
    assert "needs --vocab" in capsys.readouterr().err
    with pytest.raises(FileNotFoundError, match="schema file not found"):
        example.read_schema(str(tmp_path / "none.json"))
    with pytest.raises(FileNotFoundError, match="train first"):
        example.main(["--output-dir", str(tmp_path / "none"), "--predict", "银杏"])


# -- masked-LM pretraining --------------------------------------------------------------


def pretrain_args(vocab, config_path, output_dir, *extra):
    corpus = os.path.join(REPO_ROOT, "examples", "data", "sentiment.train.data")
    return ["--corpus", corpus, "--vocab", vocab, "--config", config_path, "--dropout", "0",
            "--maxlen", "32", "--batch-size", "8", "--epochs", "2", "--save-every", "7",
            "--verbose", "0", "--output-dir", output_dir, *extra]


def tiny_pretraining_setup(tmp_path):
    """``(vocab path, config path)``: the demo vocabulary and a 2-layer, hidden-32 BERT."""
    import demo

    from bertkit.tokenizers import Tokenizer

    vocab = demo.ensure_demo_checkpoint()[2]
    config_path = str(tmp_path / "tiny.json")
    with open(config_path, "w") as f:
        json.dump(dict(demo.DEMO_CONFIG, hidden_size=32, intermediate_size=48,
                       max_position_embeddings=64, vocab_size=Tokenizer(vocab).vocab_size), f)
    return vocab, config_path


def test_pretrain_example_resumes_to_the_same_weights_and_feeds_fine_tuning(demo_dir, tmp_path):
    import pretrain_mlm
    import task_sentiment_classification
    import task_triple_extraction
    import tensorflow as tf

    vocab, config_path = tiny_pretraining_setup(tmp_path)
    full, part = str(tmp_path / "full"), str(tmp_path / "part")
    uninterrupted = pretrain_mlm.main(pretrain_args(vocab, config_path, full))
    steps = uninterrupted["step"]
    assert steps > 23 and "val_loss" in uninterrupted
    stopped = pretrain_mlm.main(pretrain_args(vocab, config_path, part, "--max-steps", "23"))
    assert stopped["step"] == 23
    resumed = pretrain_mlm.main(pretrain_args(vocab, config_path, part, "--resume"))
    assert resumed["step"] == steps
    a = tf.train.load_checkpoint(os.path.join(full, "bert_model.ckpt"))
    b = tf.train.load_checkpoint(os.path.join(part, "bert_model.ckpt"))
    names = a.get_variable_to_shape_map()
    assert "cls/predictions/output_bias" in names and set(names) == set(b.get_variable_to_shape_map())
    for name in names:
        np.testing.assert_allclose(b.get_tensor(name), a.get_tensor(name), atol=1e-6, err_msg=name)

    paths = ["--config", os.path.join(part, "bert_config.json"),
             "--checkpoint", os.path.join(part, "bert_model.ckpt"),
             "--vocab", os.path.join(part, "vocab.txt")]
    result = task_sentiment_classification.main(
        [*paths, "--epochs", "1", "--maxlen", "32", "--output-dir", str(tmp_path / "sent")])
    assert 0 <= result["test_accuracy"] <= 1
    result = task_triple_extraction.main([*paths, "--epochs", "1", "--maxlen", "32",
                                          "--output-dir", str(tmp_path / "spo")])
    assert 0 <= result["f1"] <= 1

    # --export: the pretrained encoder as a feature extractor, read without bertkit.
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    from bertkit.models import build_transformer_model

    exported = str(tmp_path / "encoder")
    pretrain_mlm.main(["--output-dir", part, "--export", exported, "--export-formats", "onnx"])
    encoder = build_transformer_model(paths[1], paths[3])
    tokens = np.array([[2, 9, 7, 3, 0], [2, 5, 3, 0, 0]], "int32")
    expected = encoder.predict([tokens, np.zeros_like(tokens)], verbose=0)
    served = read_export(tmp_path, exported, {"Input-Token": tokens,
                                              "Input-Segment": np.zeros_like(tokens)})
    np.testing.assert_allclose(served["onnx"]["sequence_output"], expected, atol=1e-4)
    with pytest.raises(FileNotFoundError, match="pretrain first"):
        pretrain_mlm.main(["--output-dir", str(tmp_path / "none"), "--export", exported])


def test_pretrain_example_reads_corpus_formats(tmp_path):
    import pretrain_mlm

    (tmp_path / "a.tsv").write_text("书籍\t好书\n\n酒店\t不错\t!\n", encoding="utf-8")
    (tmp_path / "b.data").write_text("很好\t1\n", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text('{"text": "银杏"}\n', encoding="utf-8")
    (tmp_path / "d.txt").write_text("一行\t一篇\n", encoding="utf-8")
    assert pretrain_mlm.read_texts(str(tmp_path / "a.tsv")) == ["好书", "!"]
    assert pretrain_mlm.read_texts(str(tmp_path / "a.tsv"), text_column=1) == ["好书", "不错"]
    assert pretrain_mlm.read_texts(str(tmp_path / "b.data")) == ["很好"]
    assert pretrain_mlm.read_texts(str(tmp_path / "c.jsonl")) == ["银杏"]
    assert pretrain_mlm.read_texts(str(tmp_path / "d.txt")) == ["一行\t一篇"]
    with pytest.raises(ValueError, match="a.tsv:1: no column 5"):
        pretrain_mlm.read_texts(str(tmp_path / "a.tsv"), text_column=5)
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        pretrain_mlm.read_texts(str(tmp_path / "none.txt"))


def test_pretrain_example_continues_a_google_checkpoint(tiny_bert, tmp_path):
    import pretrain_mlm
    import tensorflow as tf

    config, weights, prefix = tiny_bert
    chars = "的一是不了人我在有他这中大来上国个到说们为子和地出道也时年得就那要下以生会自着去"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list(chars[:35])
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    rng = np.random.default_rng(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join("".join(rng.choice(list(chars[:35]), 12)) for _ in range(40)),
                      encoding="utf-8")
    out = str(tmp_path / "out")
    # With learning rate 0 one step changes nothing: the written checkpoint is the input.
    result = pretrain_mlm.main(["--corpus", str(corpus), "--vocab", str(vocab),
                                "--config", os.path.join(os.path.dirname(prefix),
                                                         "bert_config.json"),
                                "--init-checkpoint", prefix, "--lr", "0", "--maxlen", "16",
                                "--max-steps", "1", "--verbose", "0", "--output-dir", out])
    assert result["step"] == 1
    # Pretrained without dropout (the default), written with the checkpoint's own.
    assert result["builder"].config.hidden_dropout_prob == 0.0
    with open(os.path.join(out, "bert_config.json"), encoding="utf-8") as f:
        written_config = json.load(f)
    assert written_config["hidden_dropout_prob"] == config["hidden_dropout_prob"] == 0.1
    assert written_config["attention_probs_dropout_prob"] == 0.1
    written = tf.train.load_checkpoint(os.path.join(out, "bert_model.ckpt"))
    for name, value in weights.items():
        if not name.startswith("cls/seq_relationship"):  # NSP is not part of MLM pretraining
            np.testing.assert_allclose(written.get_tensor(name), value, atol=1e-6, err_msg=name)


def test_pretrain_example_dropout_flags():
    import pretrain_mlm

    base = ["--corpus", "c.txt", "--vocab", "v.txt", "--layers", "1"]
    pretrain, written = pretrain_mlm.model_config(pretrain_mlm.parse_args(base), 100)
    assert pretrain.hidden_dropout_prob == pretrain.attention_probs_dropout_prob == 0.0
    assert written.hidden_dropout_prob == written.attention_probs_dropout_prob == 0.1
    pretrain, written = pretrain_mlm.model_config(pretrain_mlm.parse_args(
        base + ["--dropout", "0.05", "--finetune-dropout", "0.2"]), 100)
    assert pretrain.hidden_dropout_prob == pretrain.attention_probs_dropout_prob == 0.05
    assert written.hidden_dropout_prob == written.attention_probs_dropout_prob == 0.2
    assert written.vocab_size == 100 and written.num_hidden_layers == 1


def test_pretrain_example_optimizer_flags(capsys):
    import pretrain_mlm

    base = ["--corpus", "c.txt", "--vocab", "v.txt"]
    optimizer = pretrain_mlm.build_optimizer(pretrain_mlm.parse_args(base), 100)
    assert optimizer.global_clipnorm == 1.0 and optimizer.beta_2 == 0.98
    assert optimizer.lr_schedule == {10: 1.0, 100: 0.0}  # 10% warm-up, then linear decay
    args = pretrain_mlm.parse_args(base + ["--clip-norm", "0", "--beta-2", "0.999",
                                           "--initializer-range", "0.05"])
    optimizer = pretrain_mlm.build_optimizer(args, 100)
    assert optimizer.global_clipnorm is None and optimizer.beta_2 == 0.999
    assert pretrain_mlm.model_config(args, 100)[1].initializer_range == 0.05
    for bad, message in ((["--clip-norm", "-1"], "--clip-norm must be >= 0"),
                         (["--beta-2", "1"], "--beta-2 must be in (0, 1), got 1.0"),
                         (["--initializer-range", "0"], "--initializer-range must be > 0")):
        with pytest.raises(SystemExit):
            pretrain_mlm.parse_args(base + bad)
        assert message in capsys.readouterr().err


def test_pretrain_example_total_steps_ends_the_schedule_and_scores_the_end(demo_dir,
                                                                           tmp_path):
    import pretrain_mlm

    vocab, config_path = tiny_pretraining_setup(tmp_path)
    out = str(tmp_path / "out")
    # 5 steps is inside the first epoch: the run stops there, with the learning rate
    # decayed to 0 at step 5, and the held-out set is scored at the stop.
    result = pretrain_mlm.main(pretrain_args(vocab, config_path, out, "--total-steps", "5",
                                             "--warmup-steps", "2"))
    assert result["step"] == 5
    assert result["model"].optimizer.lr_schedule == {2: 1.0, 5: 0.0}
    assert np.isfinite(result["val_loss"]) and 0 <= result["val_accuracy"] <= 1
    assert os.path.isfile(os.path.join(out, "bert_model.ckpt.index"))


def test_pretrain_example_repeat_upweights_a_file_and_never_trains_on_held_out(tmp_path):
    import pretrain_mlm

    from bertkit.tokenizers import Tokenizer

    chars = "的一是不了人我在有他这中大来上国个到说们为子和地出道也时年得就那要下以生会自着去"
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars]) + "\n",
                     encoding="utf-8")
    tokenizer = Tokenizer(str(vocab))
    big = [chars[i:i + 3] for i in range(20)]
    small = [chars[i:i + 2] + "我" for i in range(25, 35)]
    (tmp_path / "big.txt").write_text("\n".join(big), encoding="utf-8")
    # The small file repeats one text of the big file: it counts once, for the big file.
    (tmp_path / "small.txt").write_text("\n".join(small + big[:1]), encoding="utf-8")
    args = pretrain_mlm.parse_args(["--corpus", str(tmp_path / "big.txt"),
                                    str(tmp_path / "small.txt"), "--repeat", "1", "3",
                                    "--vocab", str(vocab), "--holdout", "0.2"])
    train, held_out = pretrain_mlm.load_corpus(args, tokenizer)

    def text(ids):
        return "".join(tokenizer.id_to_token(i) for i in ids)

    train_texts, held_texts = [text(d) for d in train], [text(d) for d in held_out]
    assert len(held_texts) == 6 and not set(held_texts) & set(train_texts)
    for document in big + small:
        expected = 0 if document in held_texts else (3 if document in small else 1)
        assert train_texts.count(document) == expected, document
    assert len(train) == sum(1 if d in big else 3 for d in big + small if d not in held_texts)


def test_pretrain_example_rejects_bad_repeat_counts(capsys):
    import pretrain_mlm

    base = ["--corpus", "a.txt", "b.txt", "--vocab", "v.txt"]
    assert pretrain_mlm.parse_args(base).repeat == [1, 1]
    with pytest.raises(SystemExit):
        pretrain_mlm.parse_args(base + ["--repeat", "2"])
    assert "one count per --corpus file: 2 file(s), 1 count(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain_mlm.parse_args(base + ["--repeat", "1", "0"])
    assert "--repeat counts must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        pretrain_mlm.parse_args(base + ["--total-steps", "0"])
    assert "--total-steps must be at least 1" in capsys.readouterr().err


def test_triple_example_subject_swap(demo_dir):
    import demo
    import task_triple_extraction as example
    from bertkit.tokenizers import Tokenizer

    text, triples = "银杏是银杏科植物，又名白果。", [("银杏", "属于", "银杏科"), ("银杏", "别称", "白果")]
    assert example.swap_subject(text, triples, "月季") == (
        "月季是月季科植物，又名白果。", [("月季", "属于", "月季科"), ("月季", "别称", "白果")])
    tokenizer = Tokenizer(demo.ensure_demo_checkpoint()[2])
    predicates = ["属于", "别称"]
    examples, _ = example.prepare_examples(
        [{"text": text, "spo_list": triples}, {"text": "荷花又名水芙蓉。",
                                               "spo_list": [("荷花", "别称", "水芙蓉")]}],
        tokenizer, 32, predicates)
    generator = example.TripleGenerator(examples, predicates, tokenizer, 32, swap_subjects=1.0,
                                        batch_size=2, seed=0)
    names = set()
    for _ in range(20):
        token_ids, spans = generator.maybe_swap(examples[0])
        (start, end), = spans
        subject = tokenizer.decode(token_ids[start:end + 1])
        names.add(subject)
        assert tokenizer.decode(token_ids) == text.replace("银杏", subject)
        objects = {(predicates[p], tokenizer.decode(token_ids[s:e + 1]))
                   for p, s, e in spans[(start, end)]}
        assert objects == {("属于", subject + "科"), ("别称", "白果")}
    assert names == {"银杏", "荷花"}   # renamed after the other training subject, or kept
    x, y, weights = next(iter(example.TripleGenerator(examples, predicates, batch_size=2)))
    assert x[0].shape == y[0].shape[:2] == weights[0].shape and y[1].shape[2:] == (2, 2)


def test_bf16_on_a_cpu_without_bfloat16_units_says_it_is_slower(monkeypatch, capsys):
    import argparse

    import common
    from bertkit import _onednn

    def policy(flags, precision="bf16"):
        monkeypatch.setattr(_onednn, "cpu_flags", lambda: set(flags))
        common._note_slow_bfloat16.cache_clear()
        policy = common.dtype_policy(argparse.Namespace(mixed_precision=precision))
        return policy, capsys.readouterr().out

    policy_name, out = policy({"avx2", "fma"})
    assert policy_name == "mixed_bfloat16" and "no bfloat16 matmul units" in out
    assert policy({"avx512f", "avx512_bf16"}) == ("mixed_bfloat16", "")
    assert policy({"amx_bf16"}) == ("mixed_bfloat16", "")
    assert policy({"avx2"}, "fp32") == (None, "")
    assert policy(set()) == ("mixed_bfloat16", "")   # flags unknown (not Linux): no guess
    common._note_slow_bfloat16.cache_clear()


def test_examples_run_under_bf16_and_save_float32_weights(demo_dir, tmp_path):
    import demo
    import pretrain_mlm
    import task_sentiment_classification
    import task_triple_extraction
    import tensorflow as tf

    bf16 = ["--mixed-precision", "bf16"]
    data_dir = write_split_files(tmp_path / "data", GOOD * 3, GOOD, GOOD)
    out = str(tmp_path / "sent")
    result = task_sentiment_classification.main(
        ["--data-dir", data_dir, "--epochs", "1", "--batch-size", "4", "--maxlen", "16",
         "--output-dir", out, *bf16])
    model = result["model"]
    assert model.get_layer("Transformer-0-FeedForward").compute_dtype == "bfloat16"
    assert {v.dtype for v in model.weights} == {"float32"}
    texts = ["很好", "太差了，不推荐"]
    # The saved float32 weights predict the same labels in bf16 and in fp32. Where oneDNN
    # has no bf16 kernels (CPUs without AVX-512), Eigen's round each op's output to bf16,
    # the bias add and every step of GELU apart: 0.026 seen there, under 0.02 elsewhere.
    in_bf16 = task_sentiment_classification.main(["--output-dir", out, "--predict", *texts, *bf16])
    in_fp32 = task_sentiment_classification.main(["--output-dir", out, "--predict", *texts])
    for (_, label_bf16, prob_bf16), (_, label_fp32, prob_fp32) in zip(in_bf16, in_fp32):
        assert label_bf16 == label_fp32 and prob_bf16 == pytest.approx(prob_fp32, abs=0.04)

    train, valid, schema = write_spo_files(tmp_path / "spo", SPO_TEXTS * 4, SPO_TEXTS)
    result = task_triple_extraction.main(
        ["--train", train, "--valid", valid, "--schema", schema, "--epochs", "2",
         "--batch-size", "8", "--maxlen", "24", "--output-dir", str(tmp_path / "tri"), *bf16])
    assert 0 <= result["f1"] <= 1
    task_triple_extraction.main(["--output-dir", str(tmp_path / "tri"), "--predict",
                                 SPO_TEXTS[0][0], *bf16])

    vocab = demo.ensure_demo_checkpoint()[2]
    config_path = os.path.join(demo_dir, "bert_config.json")
    pretrained = str(tmp_path / "pre")
    result = pretrain_mlm.main(pretrain_args(vocab, config_path, pretrained, "--max-steps", "4",
                                             *bf16))
    assert result["step"] == 4 and np.isfinite(result["loss"])
    reader = tf.train.load_checkpoint(os.path.join(pretrained, "bert_model.ckpt"))
    assert reader.get_tensor("bert/embeddings/word_embeddings").dtype == np.float32


def test_random_checkpoint_has_a_row_for_every_vocabulary_line(tmp_path):
    import demo

    # A token that strips to nothing (the Chinese vocabulary's U+2028) is still a line.
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\u2028", "好"]) + "\n",
                     encoding="utf-8")
    config_path, _, _ = demo.make_random_checkpoint(str(tmp_path / "ckpt"), str(vocab),
                                                    hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=8)
    with open(config_path, encoding="utf-8") as f:
        assert json.load(f)["vocab_size"] == 7


def test_write_lines_atomically_replaces_whole_or_keeps_the_old_file(tmp_path):
    import common
    path = str(tmp_path / "out.txt")
    common.write_lines_atomically(path, ["一", "two"])
    assert open(path, encoding="utf-8").read() == "一\ntwo\n"

    def failing_lines():
        yield "half"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        common.write_lines_atomically(path, failing_lines())
    assert open(path, encoding="utf-8").read() == "一\ntwo\n"
    assert os.listdir(tmp_path) == ["out.txt"]
    nested = str(tmp_path / "new" / "folder" / "out.txt")  # as outputs/ in a fresh clone
    common.write_lines_atomically(nested, ["x"])
    assert open(nested, encoding="utf-8").read() == "x\n"


def test_fitted_total_steps_is_what_the_budget_affords():
    import pretrain_mlm

    margin = pretrain_mlm.SCHEDULE_MARGIN
    # 1000 s left at 2 s a step, evaluation adding a quarter: 400 steps, less the margin.
    assert pretrain_mlm.fitted_total_steps(100, 1000.0, 2.0, 0.25) == 100 + int(margin * 400)
    assert pretrain_mlm.fitted_total_steps(100, 1000.0, 2.0) == 100 + int(margin * 500)
    assert pretrain_mlm.fitted_total_steps(100, 1000.0, 2.0, upper_bound=300) == 300
    assert pretrain_mlm.fitted_total_steps(100, -5.0, 2.0) == 101  # out of time already
    with pytest.raises(ValueError, match="seconds_per_step"):
        pretrain_mlm.fitted_total_steps(0, 10.0, 0.0)


def test_refitted_schedule_continues_without_a_jump():
    import pretrain_mlm

    factor, refit = pretrain_mlm.schedule_factor, pretrain_mlm.refitted_schedule
    schedule = {100: 1.0, 1100: 0.0}  # warm-up to 1 at 100, then linear decay to 0 at 1100
    assert [factor(schedule, u) for u in (0, 50, 100, 600, 1100, 2000)] == [
        0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    # At update 600 (factor 0.5) the budget turns out to reach only update 800.
    shorter = refit(schedule, 600, 800)
    assert shorter == {100: 1.0, 600: 0.5, 800: 0.0}
    assert factor(shorter, 700) == 0.25 and factor(shorter, 400) == factor(schedule, 400)
    # Refitted again later, longer this time: the past points stay.
    longer = refit(shorter, 700, 1200)
    assert longer == {100: 1.0, 600: 0.5, 700: 0.25, 1200: 0.0}
    # During the warm-up only the end of the decay moves.
    assert refit(schedule, 40, 5000) == {100: 1.0, 5000: 0.0}
    # Never a schedule that ends before the step it is refitted at.
    assert refit(schedule, 600, 300) == {100: 1.0, 600: 0.5, 601: 0.0}


def test_pretrain_example_fits_the_schedule_to_the_budget(demo_dir, tmp_path, capsys):
    import pretrain_mlm

    vocab, config_path = tiny_pretraining_setup(tmp_path)
    out = str(tmp_path / "out")
    with pytest.raises(SystemExit):
        pretrain_mlm.parse_args(pretrain_args(vocab, config_path, out, "--fit-schedule"))
    assert "give --minutes" in capsys.readouterr().err
    # A schedule of 10**6 steps that 18 seconds cannot reach: the probe shortens it.
    result = pretrain_mlm.main(pretrain_args(
        vocab, config_path, out, "--fit-schedule", "--probe-steps", "15", "--minutes", "0.3",
        "--total-steps", str(10 ** 6), "--warmup-steps", "3", "--save-every", "100000"))
    schedule = result["model"].optimizer.lr_schedule
    total = max(schedule)
    assert 15 < total < 10 ** 6 and schedule[total] == 0.0 and schedule[3] == 1.0
    assert 15 < result["step"] <= total
    assert "the schedule now ends at step" in capsys.readouterr().out
    # The save keeps the fitted schedule, which --resume goes on with.
    from bertkit.storage import RunDirectory

    state = RunDirectory(out).file("state")
    assert os.path.basename(state).startswith("pretraining_state.")
    assert pretrain_mlm.saved_schedule(state) == (total, schedule)
    resumed = pretrain_mlm.main(pretrain_args(
        vocab, config_path, out, "--minutes", "0.1", "--total-steps", str(10 ** 6),
        "--warmup-steps", "3", "--resume"))
    assert resumed["model"].optimizer.lr_schedule == schedule
    assert "the schedule now ends" not in capsys.readouterr().out
