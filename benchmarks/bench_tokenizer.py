"""Tokenizer speed on real Chinese reviews, and agreement with Google's rules.

Tokenizes the 21105 lines of `sentiment/` (train, valid and test) with the Chinese
BERT vocabulary, one text at a time, and prints lines/s for:

- bertkit's `Tokenizer.encode` (a fresh tokenizer each run, so caches start empty);
- a port of Google's `tokenization.py` (BasicTokenizer + WordpieceTokenizer,
  written below): the specification and the slow Python reference;
- Hugging Face's slow Python `BertTokenizer` and its Rust-based
  `BertTokenizerFast`, when `transformers` and `tokenizers` are installed
  (they are not bertkit dependencies; use a separate virtualenv).

Runs are interleaved (one run of each contender in turn, `--repeat` times, best
kept) so that changing machine load affects all alike. Ids are compared line by
line with the Google port's, and differing lines are counted and shown.

Usage:
    python benchmarks/bench_tokenizer.py [--data DIR] [--repeat 3]
    /work/benchenv/bin/python benchmarks/bench_tokenizer.py   # with HF peers
"""
import argparse
import gc
import os
import sys
import tempfile
import time
import unicodedata

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # `import bertkit` loads Keras


# ----------------------------------------------------------------------------
# A faithful port of Google's BERT tokenization.py (Apache-2.0), Python 3 only.

def _is_whitespace(char):
    if char == " " or char == "\t" or char == "\n" or char == "\r":
        return True
    return unicodedata.category(char) == "Zs"


def _is_control(char):
    if char == "\t" or char == "\n" or char == "\r":
        return False
    return unicodedata.category(char) in ("Cc", "Cf")


def _is_punctuation(char):
    cp = ord(char)
    if ((cp >= 33 and cp <= 47) or (cp >= 58 and cp <= 64) or
            (cp >= 91 and cp <= 96) or (cp >= 123 and cp <= 126)):
        return True
    return unicodedata.category(char).startswith("P")


def whitespace_tokenize(text):
    text = text.strip()
    if not text:
        return []
    return text.split()


class GoogleBasicTokenizer:
    """Google's BasicTokenizer: cleaning, CJK spacing, lower case, punctuation."""

    def __init__(self, do_lower_case=True):
        self.do_lower_case = do_lower_case

    def tokenize(self, text):
        text = self._clean_text(text)
        text = self._tokenize_chinese_chars(text)
        orig_tokens = whitespace_tokenize(text)
        split_tokens = []
        for token in orig_tokens:
            if self.do_lower_case:
                token = token.lower()
                token = self._run_strip_accents(token)
            split_tokens.extend(self._run_split_on_punc(token))
        return whitespace_tokenize(" ".join(split_tokens))

    def _run_strip_accents(self, text):
        text = unicodedata.normalize("NFD", text)
        output = []
        for char in text:
            if unicodedata.category(char) == "Mn":
                continue
            output.append(char)
        return "".join(output)

    def _run_split_on_punc(self, text):
        chars = list(text)
        i, start_new_word, output = 0, True, []
        while i < len(chars):
            char = chars[i]
            if _is_punctuation(char):
                output.append([char])
                start_new_word = True
            else:
                if start_new_word:
                    output.append([])
                start_new_word = False
                output[-1].append(char)
            i += 1
        return ["".join(x) for x in output]

    def _tokenize_chinese_chars(self, text):
        output = []
        for char in text:
            if self._is_chinese_char(ord(char)):
                output.append(" ")
                output.append(char)
                output.append(" ")
            else:
                output.append(char)
        return "".join(output)

    def _is_chinese_char(self, cp):
        return ((cp >= 0x4E00 and cp <= 0x9FFF) or (cp >= 0x3400 and cp <= 0x4DBF) or
                (cp >= 0x20000 and cp <= 0x2A6DF) or (cp >= 0x2A700 and cp <= 0x2B73F) or
                (cp >= 0x2B740 and cp <= 0x2B81F) or (cp >= 0x2B820 and cp <= 0x2CEAF) or
                (cp >= 0xF900 and cp <= 0xFAFF) or (cp >= 0x2F800 and cp <= 0x2FA1F))

    def _clean_text(self, text):
        output = []
        for char in text:
            cp = ord(char)
            if cp == 0 or cp == 0xfffd or _is_control(char):
                continue
            if _is_whitespace(char):
                output.append(" ")
            else:
                output.append(char)
        return "".join(output)


class GoogleWordpieceTokenizer:
    """Google's WordpieceTokenizer: greedy longest-match-first."""

    def __init__(self, vocab, unk_token="[UNK]", max_input_chars_per_word=200):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_input_chars_per_word = max_input_chars_per_word

    def tokenize(self, text):
        output_tokens = []
        for token in whitespace_tokenize(text):
            chars = list(token)
            if len(chars) > self.max_input_chars_per_word:
                output_tokens.append(self.unk_token)
                continue
            is_bad, start, sub_tokens = False, 0, []
            while start < len(chars):
                end, cur_substr = len(chars), None
                while start < end:
                    substr = "".join(chars[start:end])
                    if start > 0:
                        substr = "##" + substr
                    if substr in self.vocab:
                        cur_substr = substr
                        break
                    end -= 1
                if cur_substr is None:
                    is_bad = True
                    break
                sub_tokens.append(cur_substr)
                start = end
            if is_bad:
                output_tokens.append(self.unk_token)
            else:
                output_tokens.extend(sub_tokens)
        return output_tokens


class GoogleFullTokenizer:
    """Google's FullTokenizer, plus `[CLS] ... [SEP]` ids as `encode` gives."""

    def __init__(self, vocab_file, do_lower_case=True):
        self.vocab = {}
        with open(vocab_file, encoding="utf-8") as reader:
            for index, line in enumerate(reader):
                self.vocab[line.strip()] = index
        self.basic_tokenizer = GoogleBasicTokenizer(do_lower_case=do_lower_case)
        self.wordpiece_tokenizer = GoogleWordpieceTokenizer(vocab=self.vocab)

    def tokenize(self, text):
        split_tokens = []
        for token in self.basic_tokenizer.tokenize(text):
            for sub_token in self.wordpiece_tokenizer.tokenize(token):
                split_tokens.append(sub_token)
        return split_tokens

    def encode(self, text):
        tokens = ["[CLS]"] + self.tokenize(text) + ["[SEP]"]
        return [self.vocab[t] if t in self.vocab else self.vocab["[UNK]"] for t in tokens]


# ----------------------------------------------------------------------------

def load_texts(data_dir):
    texts = []
    for split in ("train", "valid", "test"):
        path = os.path.join(data_dir, "sentiment", "sentiment.%s.data" % split)
        with open(path, encoding="utf-8") as f:
            texts.extend(line.rstrip("\n").rsplit("\t", 1)[0] for line in f)
    return texts


def time_interleaved(contenders, texts, repeat):
    """Times each contender `repeat` times, one run of each in turn so that a
    change in machine load hits them all alike; keeps each one's best time.

    `contenders` is a list of `(name, setup)`; `setup()` runs outside the
    timing and returns a function mapping the list of texts to their ids.
    Returns a list of `(name, best_seconds, ids)`.
    """
    best = {name: (float("inf"), None) for name, _ in contenders}
    for _ in range(repeat):
        for name, setup in contenders:
            run = setup()
            gc.collect()
            start = time.perf_counter()
            ids = run(texts)
            seconds = time.perf_counter() - start
            best[name] = (min(best[name][0], seconds), ids)
    return [(name,) + best[name] for name, _ in contenders]


def per_text(encode):
    """A run function calling `encode` on one text at a time."""
    return lambda texts: [encode(text) for text in texts]


def differing_lines(ids, reference):
    return [i for i, (a, b) in enumerate(zip(ids, reference)) if list(a) != list(b)]


def show_differences(name, lines, ids, reference, texts, tokenizer, limit=4):
    """Prints the first differing tokens of a few lines and the text there
    (located with bertkit's `rematch`, whose tokens are Google's)."""
    for i in lines[:limit]:
        a, b = list(ids[i]), reference[i]
        k = next((j for j, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        text = texts[i]
        where = tokenizer.rematch(text, tokenizer.tokenize(text))[min(k, len(b) - 1)]
        at = where[0] if where else len(text)
        print("    line %d, char %d: %s %s, Google %s; text there %r" % (
            i, at, name, tokenizer.ids_to_tokens(a[k:k + 3]),
            tokenizer.ids_to_tokens(b[k:k + 3]), text[max(at - 6, 0):at + 6]))


def hf_peers(vocab_file):
    """HF's slow and fast BERT tokenizers, or (None, reason) if not installed."""
    try:
        import transformers
    except ImportError:
        return None, "transformers is not installed"
    try:  # transformers >= 5 keeps the Python tokenizer under another name
        from transformers.models.bert.tokenization_bert_legacy import (
            BertTokenizerLegacy as SlowTokenizer)
    except ImportError:
        from transformers import BertTokenizer as SlowTokenizer
    from transformers import BertTokenizerFast
    folder = tempfile.mkdtemp()
    os.symlink(os.path.abspath(vocab_file), os.path.join(folder, "vocab.txt"))
    slow = SlowTokenizer.from_pretrained(folder, do_lower_case=True)
    fast = BertTokenizerFast.from_pretrained(folder, do_lower_case=True)
    return (slow, fast, transformers.__version__), None


def main():
    default_data = os.environ.get("BERTKIT_SHARED_DATA",
                                  os.path.join(REPO, "..", "shared", "data"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=default_data, help="shared data folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is kept")
    args = parser.parse_args()

    from bertkit.tokenizers import Tokenizer

    vocab_file = os.path.join(args.data, "vocab", "chinese_vocab.txt")
    texts = load_texts(args.data)
    print("%d lines, %d characters, vocabulary %s" % (
        len(texts), sum(map(len, texts)), vocab_file))
    google = GoogleFullTokenizer(vocab_file, do_lower_case=True)

    def cold_bertkit():
        return per_text(lambda t, tok=Tokenizer(vocab_file, do_lower_case=True): tok.encode(t)[0])

    warm = Tokenizer(vocab_file, do_lower_case=True)
    warm.encode_batch(texts)
    contenders = [
        ("bertkit Tokenizer.encode", cold_bertkit),
        ("bertkit, caches warm (a later epoch)", lambda: per_text(lambda t: warm.encode(t)[0])),
        ("Google tokenization.py port", lambda: per_text(google.encode)),
    ]
    peers, reason = hf_peers(vocab_file)
    if peers is None:
        print("skipped Hugging Face peers: %s (pip install transformers tokenizers "
              "into a separate virtualenv)" % reason)
    else:
        slow, fast, version = peers
        print("transformers %s, slow %s, fast %s" % (
            version, type(slow).__name__, type(fast).__name__))
        backend = fast.backend_tokenizer
        contenders += [
            ("HF slow (Python) encode", lambda: per_text(slow.encode)),
            ("HF fast (Rust) encode", lambda: per_text(fast.encode)),
            ("HF fast (Rust) backend per text", lambda: per_text(lambda t: backend.encode(t).ids)),
            ("HF fast (Rust) encode_batch, all threads",
             lambda: (lambda texts: [e.ids for e in backend.encode_batch(texts)])),
        ]
    results = time_interleaved(contenders, texts, args.repeat)

    reference = results[2][2]
    ours = results[0][1]
    print("\n%-42s %10s %13s %18s" % ("tokenizer (one text a call)", "lines/s",
                                       "cold bertkit", "lines differing"))
    print("%-42s %10s %13s %18s" % ("", "", "speed-up", "from Google's ids"))
    shown = set()
    for name, seconds, ids in results:
        diff = differing_lines(ids, reference)
        print("%-42s %10.0f %12.2fx %18d" % (
            name, len(texts) / seconds, seconds / ours, len(diff)))
        if diff and tuple(diff) not in shown:
            shown.add(tuple(diff))
            print("  %d lines differ from Google, e.g.:" % len(diff))
            show_differences(name.split(" (")[0], diff, ids, reference, texts, warm)
    ok = not differing_lines(results[0][2], reference)
    print("\nbertkit ids identical to Google's on all %d lines: %s" % (len(texts), ok))
    if len(results) > 3:
        same = sum(1 for i in range(len(texts))
                   if list(results[3][2][i]) == list(results[4][2][i]) == results[0][2][i])
        print("bertkit, HF slow and HF fast give identical ids on %d of %d lines"
              % (same, len(texts)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
