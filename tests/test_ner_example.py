"""The NER example: reading CoNLL files, splitting and joining long sentences, character
offsets, and runs end to end with each head on tiny data, --predict reading them back."""
import json
import os
import sys

import numpy as np
import pytest

from bertkit.data import sequence_padding
from conftest import REPO_ROOT, read_export

sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
sys.path.insert(0, os.path.join(REPO_ROOT, "examples", "data"))

import task_ner as ner  # noqa: E402


def write(path, text, mode="w"):
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
        f.write(text)
    return str(path)


CONLL = "张\tB-PER\n三\tI-PER\n去\tO\n北\tB-LOC\n京\tE-LOC\n\n联\tS-ORG\n合\tI-ORG\n国\tI-ORG\n\n"


def test_read_conll_gives_texts_and_character_spans(tmp_path):
    sentences = ner.read_conll(write(tmp_path / "a.txt", "\ufeff" + CONLL))
    assert [s.text for s in sentences] == ["张三去北京", "联合国"]
    assert sentences[0].entities == [(0, 2, "PER"), (3, 5, "LOC")]
    # S- is one token, the I- that follows starts a new entity (CoNLL's lenient rule)
    assert sentences[1].entities == [(0, 1, "ORG"), (1, 3, "ORG")]
    assert sentences[1].source.endswith("a.txt:7")


def test_read_conll_words_space_columns_and_a_space_character(tmp_path):
    words = "John NNP B-PER\nlives VBZ O\nin IN O\nNew NNP B-LOC\nYork NNP I-LOC\n. . O\n"
    [sentence] = ner.read_conll(write(tmp_path / "en.txt", words))
    assert sentence.text == "John lives in New York."
    assert [sentence.text[s:e] for s, e, _ in sentence.entities] == ["John", "New York"]
    [spaced] = ner.read_conll(write(tmp_path / "sp.txt", "A\tB-ORG\n \tI-ORG\nB\tI-ORG\n"))
    assert spaced.text == "A B" and spaced.entities == [(0, 3, "ORG")]


@pytest.mark.parametrize("line, problem", [
    ("张\tX-PER", "tag 'X-PER' is not O, B-X"),
    ("张三", "expected 'token<TAB>tag'"),
    ("张\tB_PER", "tag 'B_PER'"),
])
def test_read_conll_names_the_bad_line_or_skips_its_sentence(tmp_path, line, problem, capsys):
    path = write(tmp_path / "bad.txt", CONLL + "王\tB-PER\n" + line + "\n五\tO\n\n李\tO\n")
    with pytest.raises(ValueError, match=f"bad.txt:12: {problem}"):
        ner.read_conll(path)
    sentences = ner.read_conll(path, skip_bad_lines=True)
    assert [s.text for s in sentences] == ["张三去北京", "联合国", "李"]
    assert "skipped 1 sentence(s)" in capsys.readouterr().out


def test_read_conll_non_utf8_missing_and_empty_files(tmp_path):
    path = write(tmp_path / "enc.txt", CONLL.encode() + b"\xff\tO\n", "wb")
    with pytest.raises(ValueError, match=r"enc.txt:11: not UTF-8 text \(byte 0xff"):
        ner.read_conll(path)
    assert len(ner.read_conll(path, skip_bad_lines=True)) == 2
    with pytest.raises(FileNotFoundError, match="data file not found"):
        ner.read_conll(str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="no sentences"):
        ner.read_conll(write(tmp_path / "empty.txt", "\n\n"))


def test_split_points_cut_after_punctuation_within_the_limit():
    tokens = list("一二，三四五。六七八九十")
    assert ner.split_points(tokens, 4) == [(0, 3), (3, 7), (7, 11), (11, 12)]
    assert ner.split_points(tokens, 20) == [(0, 12)]
    assert ner.split_points([], 4) == [(0, 0)]


@pytest.fixture
def tokenizer():
    from bertkit.tokenizers import Tokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"张三说，来了在工作年。",
             "new", "york", "2019", "un", "##ited"]
    return Tokenizer({t: i for i, t in enumerate(vocab)}, do_lower_case=True)


def test_character_offsets_survive_spaces_latin_words_and_digits(tokenizer):
    text = "张三在 New  York工作 2019年"
    encoded = ner.Encoded(text, tokenizer, limit=126)
    tokens = tokenizer.ids_to_tokens(encoded.ids)
    assert tokens == ["张", "三", "在", "new", "york", "工", "作", "2019", "年"]
    assert text[slice(*encoded.char_span(3, 5))] == "New  York"
    assert text[slice(*encoded.char_span(7, 9))] == "2019年"
    assert encoded.token_spans([(4, 12, "LOC"), (0, 2, "PER")]) == [(3, 5, "LOC"), (0, 2, "PER")]


class TagByToken:
    """A stand-in decoder: tags each token from a table (B-PER on 张, I-PER on 三)."""

    def __init__(self, tokenizer, head):
        self.tag_of = {tokenizer.token_to_id("张"): head.tags.index("B-PER"),
                       tokenizer.token_to_id("三"): head.tags.index("I-PER")}
        self.classes = len(head.tags)

    def predict_on_batch(self, x):
        tags = np.vectorize(lambda i: self.tag_of.get(int(i), 0))(x[0])
        return np.eye(self.classes)[tags]


def test_long_sentences_are_predicted_in_pieces_and_joined_back(tokenizer):
    from bertkit.tasks.tagging import SoftmaxTaggingHead

    head = SoftmaxTaggingHead(["PER"])
    texts = ["张三说，张三来了。张三", "张三"]
    encoded = [ner.Encoded(t, tokenizer, limit=4) for t in texts]
    assert encoded[0].pieces == [(0, 4), (4, 8), (8, 11)]   # cut after '，' and '。'
    found = ner.predict_entities(head, TagByToken(tokenizer, head), tokenizer, encoded,
                                 batch_size=2)
    assert found == [{(0, 2, "PER"), (4, 6, "PER"), (9, 11, "PER")}, {(0, 2, "PER")}]


@pytest.fixture
def tiny_ner(tmp_path):
    from make_sample_data import ner_files

    return ner_files(str(tmp_path), train=48, valid=16)


@pytest.mark.parametrize("head, context", [*((head, 0) for head in ner.HEADS), ("crf", 3)])
def test_each_head_trains_saves_and_predicts_offsets(head, context, tiny_ner, demo_dir, tmp_path,
                                                     capsys):
    train, valid = tiny_ner
    out = str(tmp_path / "run")
    # --maxlen 12: most sample sentences are split into pieces and joined back.
    result = ner.main(["--train", train, "--valid", valid, "--test", valid, "--head", head,
                       "--epochs", "2", "--batch-size", "8", "--maxlen", "12",
                       "--head-context", str(context), "--output-dir", out])
    printed = capsys.readouterr().out
    assert "sentences longer than 10 tokens split" in printed
    assert "     PER " in printed and "     all " in printed
    scores = result["val_scores"]["all"]
    assert 0 <= scores.f1 <= 1 and scores.gold > 0
    assert result["test_scores"]["all"].f1 == pytest.approx(result["val_f1"])
    manifest = json.load(open(os.path.join(out, "run.json"), encoding="utf-8"))
    assert manifest["settings"]["head"] == head
    assert manifest["settings"]["head_context"] == context
    assert manifest["settings"]["tag_types"] == ["LOC", "ORG", "PER"]

    texts = ["王伟昨天在 New York 会见了联合国代表团。", "2019年张敏访问了东京。"]
    predicted = ner.main(["--output-dir", out, "--predict", *texts])
    again = ner.main(["--output-dir", out, "--predict-file",
                      write(tmp_path / "texts.txt", "\n".join(texts) + "\n")])
    assert predicted == again and [r["text"] for r in predicted] == texts
    for record in predicted:
        for entity in record["entities"]:
            assert record["text"][entity["start"]:entity["end"]] == entity["text"]
            assert entity["type"] in ("LOC", "ORG", "PER")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line) for line in lines if line.startswith("{")] == predicted

    # --export: the decoding is in the exported graph; a process without bertkit reads
    # the same entities as the head's own decoding of the saved weights.
    pytest.importorskip("tf2onnx", reason="the export extra is not installed")
    exported = str(tmp_path / "exported")
    ner.main(["--output-dir", out, "--export", exported])
    tagger, model, tokenizer = ner.load_tagger(ner.parse_args(["--output-dir", out,
                                                               "--predict", "x"]))
    assert tagger.context_width == (context or None)
    encoded = [tokenizer.encode(text, maxlen=12) for text in texts]
    tokens = sequence_padding([ids for ids, _ in encoded]).astype("int32")
    segments = np.zeros_like(tokens)
    decoded = tagger.decoder(model).predict([tokens, segments], verbose=0)
    expected = sorted((b, s, e, tagger.tag_types.index(k))
                      for b, spans in enumerate(tagger.spans(decoded, tokens > 0))
                      for s, e, k in spans)
    served = read_export(tmp_path, exported, {"Input-Token": tokens,
                                              "Input-Segment": segments})
    for fmt in ("saved_model", "onnx", "openvino"):
        assert sorted(map(tuple, served[fmt]["spans"].tolist())) == expected, fmt
        if head != "globalpointer":
            np.testing.assert_array_equal(served[fmt]["tags"], decoded if head == "crf"
                                          else np.where(tokens > 0, decoded.argmax(-1), -1))


def test_the_evaluator_scores_the_weights_it_keeps(tiny_ner, demo_dir, tmp_path):
    """The best weights, loaded again, score the best validation F1 (EMA on)."""
    train, valid = tiny_ner
    out = str(tmp_path / "run")
    result = ner.main(["--train", train, "--valid", valid, "--epochs", "3", "--ema", "0.9",
                       "--batch-size", "8", "--output-dir", out])
    model, head, tokenizer = result["model"], result["head"], result["tokenizer"]
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(result["weights"])  # what was kept: the averaged weights that scored
    sentences = ner.read_conll(valid)
    encoded = [ner.Encoded(s.text, tokenizer, 126) for s in sentences]
    found = ner.predict_entities(head, head.decoder(model), tokenizer, encoded)
    scores = ner.entity_scores([s.entities for s in sentences], found)
    assert scores["all"].f1 == pytest.approx(result["val_f1"])


def test_the_sample_run_writes_its_data_and_refuses_bad_flags(demo_dir, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.setattr(ner, "SAMPLE_TRAIN", str(tmp_path / "data" / "ner.train.txt"))
    monkeypatch.setattr(ner, "SAMPLE_VALID", str(tmp_path / "data" / "ner.valid.txt"))
    os.makedirs(tmp_path / "data")
    result = ner.main(["--epochs", "1", "--output-dir", str(tmp_path / "run")])
    assert os.path.isfile(ner.SAMPLE_TRAIN) and result["val_scores"]["all"].gold > 0
    assert "RANDOM" in capsys.readouterr().out
    for flags, message in ((["--maxlen", "2"], "--maxlen must be at least 3"),
                           (["--train", "x.txt"], "--train and --valid go together"),
                           (["--head-size", "7"], "--head-size must be an even number"),
                           (["--head-context", "2"], "--head-context must be 0 (none) or an odd"),
                           (["--head", "hmm"], "invalid choice")):
        with pytest.raises(SystemExit):
            ner.main(flags)
        assert message in capsys.readouterr().err
    assert ner.parse_args([]).epochs == ner.SAMPLE_EPOCHS  # the sample: more passes
    assert ner.parse_args(["--train", "a", "--valid", "b"]).epochs == 8
    assert ner.parse_args(["--epochs", "3"]).epochs == 3
    code = ner.run_cli(ner.main, ["--output-dir", str(tmp_path / "none"), "--predict", "x"])
    assert code == 2 and "train first" in capsys.readouterr().err


def test_write_train_texts_gives_the_training_sentences_only(tiny_ner, tmp_path):
    train, valid = tiny_ner
    out = str(tmp_path / "texts.txt")
    count = ner.main(["--train", train, "--valid", valid, "--write-train-texts", out])
    with open(out, encoding="utf-8") as f:
        lines = f.read().splitlines()
    expected = [s.text for s in ner.read_conll(train)]
    assert count == len(lines) == len(expected) == 48 and lines == expected
    with pytest.raises(ValueError, match="needs --train"):
        ner.main(["--write-train-texts", out])
