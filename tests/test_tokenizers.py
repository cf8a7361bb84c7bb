"""Tests for bertkit.tokenizers against a reference written here from the rules
of Google's BERT `tokenization.py` (BasicTokenizer + WordpieceTokenizer)."""
import os
import pickle
import re
import subprocess
import sys
import unicodedata

import pytest
from hypothesis import given, settings, strategies as st

from bertkit.tokenizers import Tokenizer, load_vocab, save_vocab

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.environ.get("BERTKIT_SHARED_DATA", os.path.join(REPO, "..", "shared", "data"))
CHINESE_VOCAB = os.path.join(DATA, "vocab", "chinese_vocab.txt")
SENTIMENT_TEST = os.path.join(DATA, "sentiment", "sentiment.test.data")
needs_data = pytest.mark.skipif(
    not (os.path.isfile(CHINESE_VOCAB) and os.path.isfile(SENTIMENT_TEST)),
    reason="shared data not found at %s (set BERTKIT_SHARED_DATA)" % DATA)


# --------------------------------------------------------------- the reference

def _ref_is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def _ref_is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c) in ("Cc", "Cf")


def _ref_is_punctuation(c):
    cp = ord(c)
    return (33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126
            or unicodedata.category(c).startswith("P"))


def _ref_is_chinese(c):
    cp = ord(c)
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F
            or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def _ref_lower_strip(word):
    return "".join(c for c in unicodedata.normalize("NFD", word.lower())
                   if unicodedata.category(c) != "Mn")


def reference_tokenize(text, vocab, do_lower_case):
    """Google's BasicTokenizer then WordpieceTokenizer, step by step."""
    text = "".join(" " if _ref_is_whitespace(c) else c for c in text
                   if not (ord(c) in (0, 0xFFFD) or _ref_is_control(c)))
    text = "".join(" %s " % c if _ref_is_chinese(c) else c for c in text)
    split_tokens = []
    for word in text.split():
        if do_lower_case:
            word = _ref_lower_strip(word)
        pieces, new_word = [], True
        for c in word:
            if _ref_is_punctuation(c):
                pieces.append(c)
                new_word = True
            else:
                if new_word:
                    pieces.append("")
                new_word = False
                pieces[-1] += c
        split_tokens.extend(pieces)
    output = []
    for word in " ".join(split_tokens).split():
        if len(word) > 200:
            output.append("[UNK]")
            continue
        start, sub_tokens = 0, []
        while start < len(word):
            end = len(word)
            while end > start:
                sub = word[start:end] if start == 0 else "##" + word[start:end]
                if sub in vocab:
                    break
                end -= 1
            if end == start:
                sub_tokens = ["[UNK]"]
                break
            sub_tokens.append(sub)
            start = end
        output.extend(sub_tokens)
    return output


def normalise_like_tokenizer(text, do_lower_case):
    """How the tokenizer normalises characters, for checking rematch; the
    Greek final sigma depends on context, so both sigmas compare equal."""
    text = "".join(c for c in text if not (ord(c) in (0, 0xFFFD) or _ref_is_control(c)))
    if do_lower_case:
        text = _ref_lower_strip(text)
    return text.replace("ς", "σ")


# ---------------------------------------------------------------- small vocab

SMALL_TOKENS = (
    ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused1]"]
    + list("abcdefghijklmnopqrstuvwxyz0123456789")
    + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    + ["hello", "world", "un", "##aff", "##able", "ab", "##cd", "istanbul", "cl", "##s",
       "iphone", "naive", "##ς", "##σ", "οδο", "σ", "ς", "h", "##é", "##ll",
       "😀", "##😀", "한국어", "H", "W", "##orld", "##ello", "Ab", "##Cd"]
    + list("你好世界我爱北京手机很用中文")
    + list("，！。？、“”,.!?[]()+$^`-'") + ["##，", "##中"]
)


@pytest.fixture(scope="module")
def small_vocab():
    return {t: i for i, t in enumerate(SMALL_TOKENS)}


@pytest.fixture(scope="module")
def lower(small_vocab):
    return Tokenizer(small_vocab, do_lower_case=True)


@pytest.fixture(scope="module")
def cased(small_vocab):
    return Tokenizer(small_vocab, do_lower_case=False)


def content(tokenizer, text):
    return tokenizer.tokenize(text)[1:-1]


# ------------------------------------------------------------ hand-written rules

@pytest.mark.parametrize("text, expected", [
    ("Héllo Wörld", ["hello", "world"]),                      # accents stripped
    ("NAÏVE", ["naive"]),
    ("ab\x00c\x07d\x1bcd", ["ab", "##cd", "##cd"]),      # controls deleted
    ("ab\ufffdcd", ["ab", "##cd"]),                            # U+FFFD deleted
    ("ab\u200bcd \ufeffhello\u200d", ["ab", "##cd", "hello"]),  # zero-width (Cf)
    ("你\u3000好 ab\u3000cd", ["你", "好", "ab", "c", "##d"]),  # ideographic space
    ("ab\u00a0cd\tab\ncd\u2028ab", ["ab", "c", "##d", "ab", "c", "##d", "ab"]),
    ("你好，世界！", ["你", "好", "，", "世", "界", "！"]),  # full-width punctuation
    ("hello,world!?", ["hello", ",", "world", "!", "?"]),
    ("a+b$c^d`e", ["a", "+", "b", "$", "c", "^", "d", "`", "e"]),  # ASCII symbols
    ("好😀 ab😀", ["好", "😀", "ab", "##😀"]),                # emoji is not punctuation
    ("我爱北京", ["我", "爱", "北", "京"]),
    ("iPhone手机很好用", ["iphone", "手", "机", "很", "好", "用"]),  # mixed scripts
    ("İstanbul", ["istanbul"]),                               # İ lower-cases to 2 chars
    ("ΟΔΟΣ", ["οδο", "##ς"]),                                 # final sigma
    ("한국어 中文", ["[UNK]", "中", "文"]),       # Hangul: not CJK, NFD makes jamo
    ("[CLS] [MASK]", ["[", "cl", "##s", "]", "[", "m", "##a", "##s", "##k", "]"]),
    ("unaffable", ["un", "##aff", "##able"]),
    ("xyzzy€ ab", ["[UNK]", "ab"]),  # € is Sc, not punctuation: one word
    ("a" * 200, ["a"] + ["##a"] * 199),
    ("a" * 201 + " b", ["[UNK]", "b"]),
    ("a" * 250, ["[UNK]"]),
    ("", []),
    ("   \t\n\u3000 ", []),
])
def test_lower_case_rules(lower, small_vocab, text, expected):
    assert content(lower, text) == expected
    assert reference_tokenize(text, small_vocab, True) == expected


@pytest.mark.parametrize("text, expected", [
    ("Héllo World", ["H", "##é", "##ll", "##o", "W", "##orld"]),  # accents kept
    ("AbCd", ["Ab", "##Cd"]),
    ("İ", ["[UNK]"]),
    ("ab\u200bcd你好", ["ab", "##cd", "你", "好"]),
    ("한국어 中文", ["한국어", "中", "文"]),      # Hangul is not split like CJK
])
def test_cased_rules(cased, small_vocab, text, expected):
    assert content(cased, text) == expected
    assert reference_tokenize(text, small_vocab, False) == expected


@pytest.mark.parametrize("text", ["a" * 5000, "ab," * 2000, "你好 " * 3000 + "x" * 300])
def test_long_texts_match_reference(lower, small_vocab, text):
    tokens = lower.tokenize(text)
    assert tokens[1:-1] == reference_tokenize(text, small_vocab, True)
    assert len(lower.rematch(text, tokens)) == len(tokens)


def test_empty_text_encodes_to_cls_sep(lower, small_vocab):
    cls, sep = small_vocab["[CLS]"], small_vocab["[SEP]"]
    assert lower.encode("") == ([cls, sep], [0, 0])
    assert lower.encode("  \u3000") == ([cls, sep], [0, 0])
    assert lower.encode("", "") == ([cls, sep, sep], [0, 0, 1])


# ---------------------------------------------------------------------- rematch

@pytest.mark.parametrize("text, tokens, expected", [
    ("Héllo 你好", ["[CLS]", "hello", "你", "好", "[SEP]"],
     [[], [0, 1, 2, 3, 4], [6], [7], []]),
    ("He\u0301llo", ["[CLS]", "hello", "[SEP]"], [[], [0, 1, 2, 3, 4, 5], []]),
    ("İstanbul", ["[CLS]", "istanbul", "[SEP]"], [[], list(range(8)), []]),
    ("ab\x00\u200bcd", ["[CLS]", "ab", "##cd", "[SEP]"], [[], [0, 1], [4, 5], []]),
    ("a€b 好", ["[CLS]", "[UNK]", "好", "[SEP]"], [[], [0, 1, 2], [4], []]),
    ("unaffable!", ["[CLS]", "un", "##aff", "##able", "!", "[SEP]"],
     [[], [0, 1], [2, 3, 4], [5, 6, 7, 8], [9], []]),
    ("你好世界", ["[CLS]", "你", "好", "[SEP]"], [[], [0], [1], []]),  # truncated
    ("你好", ["[CLS]", "你", "北", "好", "[SEP]"], [[], [0], [], [1], []]),
])
def test_rematch_cases(lower, text, tokens, expected):
    assert lower.rematch(text, tokens) == expected


def test_rematch_of_truncated_tokens(lower):
    text = "hello 你好世界 world"
    tokens = lower.tokenize(text, maxlen=5)
    assert tokens == ["[CLS]", "hello", "你", "好", "[SEP]"]
    assert lower.rematch(text, tokens) == [[], [0, 1, 2, 3, 4], [6], [7], []]


def test_rematch_hangul_shares_a_syllable(small_vocab):
    vocab = dict(small_vocab)
    vocab.update({"\u1112": len(vocab), "##\u1161": len(vocab) + 1,
                  "##\u11ab": len(vocab) + 2})
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    tokens = tokenizer.tokenize("한")  # NFD: three jamo from one syllable
    assert tokens == ["[CLS]", "\u1112", "##\u1161", "##\u11ab", "[SEP]"]
    assert tokenizer.rematch("한", tokens) == [[], [0], [0], [0], []]


def test_rematch_stays_increasing_when_nfd_reorders_marks():
    # NFD puts U+1D165 (class 216) before U+302E (class 224); both are Mc, kept.
    vocab = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "x": 3, "##\U0001D165": 4, "##\u302E": 5}
    tokenizer = Tokenizer(vocab, do_lower_case=True)
    text = "X\u302E\U0001D165"
    tokens = tokenizer.tokenize(text)
    expected = ["x", "##\U0001D165", "##\u302E"]
    assert tokens[1:-1] == reference_tokenize(text, vocab, True) == expected
    flat = [i for indices in tokenizer.rematch(text, tokens) for i in indices]
    assert flat == sorted(flat) and set(flat) == {0, 1, 2}


def check_rematch(tokenizer, text, do_lower_case):
    tokens = tokenizer.tokenize(text)
    mapping = tokenizer.rematch(text, tokens)
    assert len(mapping) == len(tokens)
    assert mapping[0] == [] and mapping[-1] == []
    flat = [i for indices in mapping for i in indices]
    assert flat == sorted(flat)
    for k, (token, indices) in enumerate(zip(tokens, mapping)):
        if token in ("[CLS]", "[SEP]"):
            continue
        assert indices, (text, token)
        assert indices == sorted(set(indices))
        assert 0 <= indices[0] and indices[-1] < len(text)
        if token == "[UNK]":
            continue
        stem = token[2:] if token.startswith("##") else token
        stem = stem.replace("ς", "σ")
        mapped = normalise_like_tokenizer("".join(text[i] for i in indices), do_lower_case)
        neighbours = set(mapping[k - 1]) | set(mapping[k + 1])
        if neighbours & set(indices):
            assert stem in mapped, (text, token, mapped)
        else:
            assert mapped == stem, (text, token, mapped)


SPICE = st.sampled_from(list("aAbΣσςİé\u0301한中好 \t\u3000\u200b\x00\ufffd,，!😀#"))


@settings(max_examples=300, deadline=None)
@given(text=st.text(st.one_of(st.characters(), SPICE), max_size=40),
       do_lower_case=st.booleans())
def test_property_random_unicode(lower, cased, small_vocab, text, do_lower_case):
    tokenizer = lower if do_lower_case else cased
    tokens = tokenizer.tokenize(text)
    assert tokens[1:-1] == reference_tokenize(text, small_vocab, do_lower_case)
    check_rematch(tokenizer, text, do_lower_case)


# ------------------------------------------------------------------- real text

@needs_data
def test_sentiment_test_split_matches_reference():
    vocab = load_vocab(CHINESE_VOCAB)
    tokenizer = Tokenizer(CHINESE_VOCAB, do_lower_case=True)
    with open(SENTIMENT_TEST, encoding="utf-8") as f:
        texts = [line.rstrip("\n").rsplit("\t", 1)[0] for line in f]
    assert len(texts) == 2111
    for text in texts:
        assert tokenizer.tokenize(text)[1:-1] == reference_tokenize(text, vocab, True), text
        check_rematch(tokenizer, text, True)


@needs_data
def test_simplified_chinese_vocab_keeps_every_id():
    full = Tokenizer(CHINESE_VOCAB, do_lower_case=True)
    token_dict, keep_tokens = load_vocab(CHINESE_VOCAB, simplified=True)
    simplified = Tokenizer(token_dict, do_lower_case=True)
    assert len(token_dict) < full.vocab_size
    with open(SENTIMENT_TEST, encoding="utf-8") as f:
        texts = [line.rsplit("\t", 1)[0] for line in f]
    for text in texts:
        assert [keep_tokens[i] for i in simplified.encode(text)[0]] == full.encode(text)[0]


# ------------------------------------------------------------------- truncation

def bert4keras_encode(tokenizer, first, second, maxlen):
    """bert4keras's `encode`: `truncate_sequences` pops index -2 (before
    `[SEP]`) from the longer list, the first on a tie; a pair gets maxlen + 1
    because the second list's `[CLS]` is dropped afterwards."""
    sequences = [tokenizer.tokenize(first)]
    if second is not None:
        sequences.append(tokenizer.tokenize(second))
        maxlen += 1
    while sum(len(s) for s in sequences) > maxlen:
        longest = max(len(s) for s in sequences)
        next(s for s in sequences if len(s) == longest).pop(-2)
    tokens, segments = sequences[0], [0] * len(sequences[0])
    if second is not None:
        tokens = tokens + sequences[1][1:]
        segments += [1] * (len(sequences[1]) - 1)
    return tokenizer.tokens_to_ids(tokens), segments


@pytest.mark.parametrize("n_first", [0, 1, 2, 5, 9])
@pytest.mark.parametrize("n_second", [None, 0, 1, 4, 5, 9])
def test_encode_truncation_matches_bert4keras(lower, n_first, n_second):
    first = "你好世界我爱北京手机"[:n_first]
    second = None if n_second is None else "中文很好用世界北京我爱"[:n_second]
    minimum = 2 if second is None else 3
    for maxlen in range(minimum, 16):
        token_ids, segment_ids = lower.encode(first, second, maxlen=maxlen)
        assert (token_ids, segment_ids) == bert4keras_encode(lower, first, second, maxlen)
        assert len(token_ids) == min(maxlen, n_first + (n_second or 0) + minimum)
    assert lower.encode(first, second) == lower.encode(first, second, maxlen=100)


def test_tokenize_truncation_keeps_cls_and_sep(lower):
    assert lower.tokenize("你好世界", maxlen=4) == ["[CLS]", "你", "好", "[SEP]"]
    assert lower.tokenize("你好世界", maxlen=2) == ["[CLS]", "[SEP]"]
    assert lower.tokenize("你好", maxlen=10) == ["[CLS]", "你", "好", "[SEP]"]
    with pytest.raises(ValueError, match="maxlen"):
        lower.tokenize("你好", maxlen=1)
    with pytest.raises(ValueError, match="maxlen"):
        lower.encode("你好", "世界", maxlen=2)


def test_without_start_and_end_tokens(small_vocab):
    tokenizer = Tokenizer(small_vocab, token_start=None, token_end=None)
    assert tokenizer.tokenize("你好世界", maxlen=3) == ["你", "好", "世"]
    assert tokenizer.encode("你好", "世界") == (
        [small_vocab[c] for c in "你好世界"], [0, 0, 1, 1])
    assert tokenizer.rematch("你好", ["你", "好"]) == [[0], [1]]


# ------------------------------------------------------------------ vocabulary

def test_simplified_vocab_round_trip(tmp_path, small_vocab):
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in SMALL_TOKENS), encoding="utf-8")
    assert load_vocab(path) == small_vocab
    token_dict, keep_tokens = load_vocab(path, simplified=True)
    for dropped in ("[unused1]", "##，", "##中"):
        assert dropped not in token_dict
    for kept in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "，", "中", "한국어",
                 "##😀"):
        assert kept in token_dict
    assert sorted(token_dict.values()) == list(range(len(token_dict)))
    for token, new_id in token_dict.items():
        assert SMALL_TOKENS[keep_tokens[new_id]] == token
    full = Tokenizer(path, do_lower_case=True)
    simplified = Tokenizer(token_dict, do_lower_case=True)
    for text in ["你好，世界！", "Unaffable [CLS] iPhone", "ab\u200bcd 中文 😀"]:
        assert simplified.tokenize(text) == full.tokenize(text)
        assert [keep_tokens[i] for i in simplified.encode(text)[0]] == full.encode(text)[0]
    save_vocab(tmp_path / "simplified.txt", token_dict)
    assert load_vocab(tmp_path / "simplified.txt") == token_dict
    with pytest.raises(ValueError, match="cannot be written as a vocabulary line"):
        save_vocab(tmp_path / "simplified.txt", dict(token_dict, **{" bad": len(token_dict)}))
    assert load_vocab(tmp_path / "simplified.txt") == token_dict  # the old file is intact
    assert not (tmp_path / "simplified.txt.tmp").exists()

    token_dict, keep_tokens = load_vocab(path, simplified=True, startswith=["[CLS]", "[UNK]"])
    assert token_dict["[CLS]"] == 0 and token_dict["[UNK]"] == 1 and "[PAD]" not in token_dict
    assert keep_tokens[:2] == [small_vocab["[CLS]"], small_vocab["[UNK]"]]


def test_repeated_vocab_line_keeps_last_id_like_google(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\n[CLS]\n[SEP]\nab\nab\n", encoding="utf-8")
    assert load_vocab(path) == {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "ab": 4}
    assert Tokenizer(path).vocab_size == 5


def test_id_and_token_conversions(lower, small_vocab):
    assert lower.vocab_size == len(SMALL_TOKENS)
    assert lower.token_to_id("hello") == small_vocab["hello"]
    assert lower.token_to_id("not-a-token") == small_vocab["[UNK]"]
    ids = lower.tokens_to_ids(["你", "##aff", "zzz"])
    assert ids == [small_vocab["你"], small_vocab["##aff"], small_vocab["[UNK]"]]
    assert lower.ids_to_tokens(ids) == ["你", "##aff", "[UNK]"]
    assert lower.id_to_token(small_vocab["世"]) == "世"


# ----------------------------------------------------------------------- errors

def test_errors_name_what_is_wrong(tmp_path, small_vocab, lower):
    with pytest.raises(FileNotFoundError, match="no_such_vocab.txt"):
        Tokenizer(str(tmp_path / "no_such_vocab.txt"))
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[SEP]\na\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab\.txt.*\[CLS\]"):
        Tokenizer(path)
    with pytest.raises(ValueError, match=r"token_dict.*\[UNK\]"):
        Tokenizer({"[CLS]": 0, "[SEP]": 1})
    with pytest.raises(TypeError, match="token_dict_or_path"):
        Tokenizer(["[UNK]"])
    with pytest.raises(TypeError, match="text must be a str, got NoneType"):
        lower.tokenize(None)
    with pytest.raises(TypeError, match="decode bytes"):
        lower.encode(b"hello")
    with pytest.raises(TypeError, match="second_text"):
        lower.encode("hello", 3)
    with pytest.raises(TypeError, match="text"):
        lower.rematch(["hello"], ["hello"])
    with pytest.raises(ValueError, match="token id 99999"):
        lower.id_to_token(99999)
    with pytest.raises(ValueError, match="without gaps"):
        save_vocab(tmp_path / "bad.txt", {"a": 0, "b": 2})
    with pytest.raises(ValueError, match="startswith token"):
        load_vocab(path, simplified=True, startswith=["[CLS]"])


# ------------------------------------------------------------- decode and more

@pytest.mark.parametrize("text, expected", [
    ("hello world", "hello world"),
    ("Unaffable!", "unaffable!"),
    ("你好，世界！", "你好，世界！"),
    ("iPhone手机 很好", "iphone手机很好"),
    ("hello,world", "hello, world"),
    ("3.14", "3.14"),
    ("(ab)", "(ab)"),
])
def test_decode(lower, text, expected):
    assert lower.decode(lower.encode(text)[0]) == expected


def test_decode_skips_padding_and_keeps_other_specials(lower, small_vocab):
    ids = lower.encode("hello")[0][:-1] + [small_vocab["[MASK]"]] + lower.encode("world")[0][1:]
    assert lower.decode(ids + [small_vocab["[PAD]"]] * 3) == "hello [MASK] world"
    assert lower.decode([]) == ""


def test_encode_batch_matches_encode(lower):
    texts = ["你好", ("hello", "世界"), "", ["unaffable", "中文"]]
    token_ids, segment_ids = lower.encode_batch(texts, maxlen=5)
    expected = [lower.encode(*(t if not isinstance(t, str) else (t,)), maxlen=5) for t in texts]
    assert token_ids == [e[0] for e in expected]
    assert segment_ids == [e[1] for e in expected]
    with pytest.raises(TypeError, match="list of texts"):
        lower.encode_batch("你好")


def test_pre_tokenize_and_token_translate(small_vocab):
    vocab = dict(small_vocab, 北京=len(small_vocab))

    def segment(text):  # a toy word segmenter, plus a word not in the text
        return re.findall(r"北京|[A-Za-z]+|\s+|.", text) + ["不在文中"]

    tokenizer = Tokenizer(vocab, do_lower_case=True, pre_tokenize=segment,
                          token_translate={"你": "[unused1]"})
    text = "你爱北京 Hi"
    tokens = tokenizer.tokenize(text)
    assert tokens == ["[CLS]", "[unused1]", "爱", "北京", "h", "##i", "[UNK]", "[UNK]",
                      "文", "中", "[SEP]"]
    assert tokenizer.rematch(text, tokens) == [
        [], [0], [1], [2, 3], [5], [6], [], [], [], [], []]
    assert tokenizer.encode(text)[0] == tokenizer.tokens_to_ids(tokens)
    assert tokenizer.decode(tokenizer.tokens_to_ids(["[CLS]", "[unused1]", "爱"])) == "你爱"


def test_pickle_round_trip(lower):
    clone = pickle.loads(pickle.dumps(lower))
    for text in ["Héllo 你好", "unaffable!", "İstanbul"]:
        assert clone.tokenize(text) == lower.tokenize(text)
        tokens = lower.tokenize(text)
        assert clone.rematch(text, tokens) == lower.rematch(text, tokens)


def test_module_imports_without_tensorflow_or_keras():
    path = os.path.join(REPO, "bertkit", "tokenizers.py")
    code = (
        "import importlib.util, sys\n"
        "spec = importlib.util.spec_from_file_location('tok', %r)\n"
        "module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
        "assert not heavy, heavy\n"
        "t = module.Tokenizer({'[UNK]': 0, '[CLS]': 1, '[SEP]': 2, 'a': 3})\n"
        "assert t.encode('a') == ([1, 3, 2], [0, 0, 0])\n" % path)
    subprocess.run([sys.executable, "-c", code], check=True)
