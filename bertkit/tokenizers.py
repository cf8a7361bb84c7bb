"""WordPiece tokenization identical to Google's BERT ``tokenization.py``.

The rules are those of Google's ``BasicTokenizer`` followed by its
``WordpieceTokenizer``: control characters are dropped, whitespace splits words,
CJK ideographs become words of their own, ``do_lower_case`` lower-cases and strips
accents (NFD, then drops ``Mn`` marks), punctuation is split off, and each word is
cut greedily, longest match first, into vocabulary pieces (``##`` marks a piece
that continues a word). Results are cached per word, so real text tokenizes at a
few times the speed of the reference code. This module imports neither
TensorFlow nor Keras, so worker processes can use it cheaply.

Example:

>>> from bertkit.tokenizers import Tokenizer, load_vocab
>>> tokenizer = Tokenizer('chinese_vocab.txt', do_lower_case=True)  # doctest: +SKIP
>>> tokens = tokenizer.tokenize('BERT很好')                         # doctest: +SKIP
>>> tokens                                                          # doctest: +SKIP
['[CLS]', 'be', '##rt', '很', '好', '[SEP]']
>>> tokenizer.rematch('BERT很好', tokens)  # characters of each token  # doctest: +SKIP
[[], [0, 1], [2, 3], [4], [5], []]
>>> tokenizer.encode('问题', '回答', maxlen=32)                       # doctest: +SKIP
([101, 7309, 7579, 102, 1726, 5031, 102], [0, 0, 0, 0, 1, 1, 1])
"""
import functools
import itertools
import numbers
import os
import re
import unicodedata

__all__ = ["load_vocab", "save_vocab", "Tokenizer"]

# Google's `_is_chinese_char` ranges: the CJK Unified Ideographs blocks and
# their extensions and compatibility blocks (not Hangul, Hiragana, Katakana).
_CJK_RANGES = (
    (0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F), (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF), (0x2F800, 0x2FA1F),
)
_CJK_CLASS = "".join("%s-%s" % (chr(a), chr(b)) for a, b in _CJK_RANGES)
# A whitespace-separated word after CJK characters were spaced out, as Google's
# `whitespace_tokenize` (`str.split`) sees it: `\s` is `str.isspace`.
_WORD_RE = re.compile("[%s]|[^\\s%s]+" % (_CJK_CLASS, _CJK_CLASS))
_SPECIAL_RE = re.compile(r"^\[[^\[\]]+\]$")
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_CACHE_LIMIT = 1 << 18  # words per cache; cleared when full to bound memory


def _is_cjk(char):
    """Whether `char` is a CJK ideograph by Google's code-point ranges."""
    cp = ord(char)
    return any(a <= cp <= b for a, b in _CJK_RANGES)


def _is_punctuation(char):
    """Google's rule: ASCII non-alphanumeric symbols, and Unicode `P*`."""
    cp = ord(char)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(char).startswith("P")


@functools.lru_cache(maxsize=None)
def _control_re():
    """Characters Google's `_clean_text` deletes: NUL, U+FFFD and Cc/Cf
    controls other than tab, newline and carriage return (which are spaces).

    Built on first use from the running Python's Unicode tables, exactly as
    `unicodedata.category` classifies them (one scan, about 0.2 s)."""
    codes = [cp for cp in range(0x110000)
             if unicodedata.category(chr(cp)) in ("Cc", "Cf")]
    codes = sorted(set(codes + [0, 0xFFFD]) - {9, 10, 13})
    runs = [[cp for _, cp in run] for _, run in
            itertools.groupby(enumerate(codes), lambda pair: pair[1] - pair[0])]
    return re.compile("[%s]" % "".join(
        "%s-%s" % (re.escape(chr(run[0])), re.escape(chr(run[-1]))) for run in runs))


def _words(text):
    """Google's words before lower-casing: cleaned, CJK characters apart."""
    text = _control_re().sub("", text)
    return text.split() if text.isascii() else _WORD_RE.findall(text)


def load_vocab(dict_path, encoding="utf-8", simplified=False, startswith=None):
    """Reads a BERT `vocab.txt`: one token a line, the id is the line number.

    Args:
        dict_path: path of the vocabulary file.
        encoding: the file's text encoding.
        simplified: if True, drop the tokens the tokenizer can never produce
            (multi-character tokens holding a CJK character or punctuation, such
            as `[unused1]`, `##中` or `##，`: CJK characters and punctuation are
            always split off as single characters), as bert4keras does.
        startswith: tokens to put first in the simplified vocabulary. Defaults
            to the special tokens `[PAD] [UNK] [CLS] [SEP] [MASK]` that the file
            has (bert4keras defaults to none, which loses `[CLS]` and `[SEP]`).

    Returns:
        `{token: id}`; with `simplified=True` the pair
        `(new_token_dict, keep_tokens)`, where `keep_tokens[new_id]` is the
        token's id in the file: pass it to `build_transformer_model(keep_tokens=...)`
        to keep only those rows of the embedding and MLM output.

    Example:
        >>> token_dict, keep_tokens = load_vocab('vocab.txt', simplified=True)  # doctest: +SKIP
    """
    path = os.fspath(dict_path)
    if not os.path.isfile(path):
        raise FileNotFoundError("vocabulary file not found: %r" % path)
    token_dict = {}
    with open(path, "rb") as reader:
        # Google's `load_vocab`: strip each line; a repeated token keeps its
        # last line number. Decoded line by line to name a bad line; a byte-order
        # mark (as Windows editors write) would otherwise make `[PAD]` unknown.
        for index, raw in enumerate(reader):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as error:
                raise ValueError("%s:%d: not %s text (byte 0x%02x at column %d)" % (
                    path, index + 1, encoding, raw[error.start], error.start + 1)) from None
            if index == 0:
                line = line.lstrip("\ufeff")
            token_dict[line.strip()] = index
    if not simplified:
        return token_dict

    if startswith is None:
        startswith = [t for t in _SPECIAL_TOKENS if t in token_dict]
    new_token_dict, keep_tokens = {}, []
    for token in startswith:
        if token not in token_dict:
            raise ValueError("startswith token %r is not in the vocabulary %r"
                             % (token, path))
        if token not in new_token_dict:
            new_token_dict[token] = len(new_token_dict)
            keep_tokens.append(token_dict[token])
    for token, index in sorted(token_dict.items(), key=lambda item: item[1]):
        if token in new_token_dict:
            continue
        stem = token[2:] if token.startswith("##") else token
        if len(token) > 1 and any(_is_cjk(c) or _is_punctuation(c) for c in stem):
            continue
        new_token_dict[token] = len(new_token_dict)
        keep_tokens.append(index)
    return new_token_dict, keep_tokens


def save_vocab(dict_path, token_dict, encoding="utf-8"):
    """Writes `{token: id}` as a `vocab.txt` (ids must be 0, 1, ..., n-1), atomically.

    Example:
        >>> token_dict, keep_tokens = load_vocab('vocab.txt', simplified=True)  # doctest: +SKIP
        >>> save_vocab('vocab.simplified.txt', token_dict)                     # doctest: +SKIP
    """
    items = sorted(token_dict.items(), key=lambda item: item[1])
    if [index for _, index in items] != list(range(len(items))):
        raise ValueError("token_dict ids must be 0..%d without gaps to be saved "
                         "as one token a line" % (len(items) - 1))
    for token, _ in items:  # every token checked before the file is touched
        if "\n" in token or token != token.strip():
            raise ValueError("token %r cannot be written as a vocabulary line" % token)
    # Atomic: a reader never sees half a vocabulary, a failed write keeps the old one.
    # Imported here: the tokenizer module stands alone (no TensorFlow) on a serving client.
    from bertkit.storage import atomic_write

    with atomic_write(os.fspath(dict_path), encoding=encoding) as writer:
        writer.writelines(token + "\n" for token, _ in items)


class _WordCache(dict):
    """A dict that computes missing entries with `compute(key)`."""

    def __init__(self, compute):
        super().__init__()
        self._compute = compute

    def __missing__(self, key):
        value = self._compute(key)
        if len(key) <= 256:  # real words repeat; a huge one would only take memory
            if len(self) >= _CACHE_LIMIT:
                self.clear()
            self[key] = value
        return value


def _canonical_order(chars, owners):
    """Applies Unicode canonical ordering (stable sort of each run of combining
    marks by combining class) to `chars`, moving `owners` along, in place."""
    i = 0
    for is_mark, run in itertools.groupby(chars[:], key=lambda c: unicodedata.combining(c) > 0):
        n = len(list(run))
        if is_mark and n > 1:
            pairs = sorted(zip(chars[i:i + n], owners[i:i + n]),
                           key=lambda pair: unicodedata.combining(pair[0]))
            chars[i:i + n], owners[i:i + n] = map(list, zip(*pairs))
        i += n


def _lower_strip_accents(word):
    """Google's `token.lower()` then `_run_strip_accents`, returning the text
    and, for each of its characters, the index in `word` it came from."""
    lowered = word.lower()
    if word.isascii():
        return lowered, range(len(word))
    decomposed = unicodedata.normalize("NFD", lowered)
    text = "".join(c for c in decomposed if unicodedata.category(c) != "Mn")
    if decomposed == lowered and len(lowered) == len(word):  # the common case
        return text, [i for i, c in enumerate(lowered)
                      if unicodedata.category(c) != "Mn"]
    # Lower-casing and NFD can lengthen a character (`İ` -> `i` + U+0307,
    # Hangul syllables -> jamo); map per character, then reorder marks as NFD.
    # `str.lower` is the per-character mapping (its one context rule, the
    # final sigma, keeps the length), so `owners` lines up with `lowered`.
    owners = [i for i, c in enumerate(word) for _ in c.lower()]
    chars, char_owners = [], []
    for c, owner in zip(lowered, owners):
        decomposed = unicodedata.normalize("NFD", c)
        chars.extend(decomposed)
        char_owners.extend([owner] * len(decomposed))
    _canonical_order(chars, char_owners)  # now `chars` is NFD(lowered)
    owners = [o for c, o in zip(chars, char_owners) if unicodedata.category(c) != "Mn"]
    # Reordered non-Mn marks (rare) must not make offsets go backwards.
    return text, list(itertools.accumulate(owners, max))


def _split_pieces(text):
    """Google's `_run_split_on_punc` followed by its final whitespace split:
    the `(start, end)` spans of the pieces of `text`."""
    spans, start = [], None
    for i, char in enumerate(text):
        if char.isspace() or _is_punctuation(char):
            if start is not None:
                spans.append((start, i))
                start = None
            if not char.isspace():
                spans.append((i, i + 1))
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _space_between(left, right):
    """Whether `decode` puts a space between two adjacent decoded words."""
    a, b = left[-1], right[0]
    if _is_cjk(a) or _is_cjk(b):
        return False
    if _is_punctuation(b) and not _SPECIAL_RE.match(right):
        return False
    if _is_punctuation(a) and not _SPECIAL_RE.match(left):
        return a in ",.;:!?" and not b.isdigit()
    return True


class Tokenizer:
    """BERT's WordPiece tokenizer, with bert4keras's interface.

    Args:
        token_dict_or_path: a `{token: id}` dict or the path of a `vocab.txt`.
        do_lower_case: lower-case and strip accents (True for Google's Chinese
            and uncased English models).
        token_start: token put first (`None` for none).
        token_end: token closing each text (`None` for none).
        pre_tokenize: optional function splitting a text into words (for
            example a Chinese word segmenter). A word whose normalised form is a
            vocabulary token becomes that token; any other word is tokenized by
            the rules above. The words are located in the text for `rematch`.
        token_translate: optional `{token: token}` applied to every produced
            token (and undone by `decode`).
        max_input_chars_per_word: longer words become `[UNK]` (Google: 200).

    Example:
        >>> tokenizer = Tokenizer({'[PAD]': 0, '[UNK]': 1, '[CLS]': 2, '[SEP]': 3,
        ...                        'un': 4, '##aff': 5, '##able': 6, '好': 7},
        ...                       do_lower_case=True)
        >>> tokenizer.tokenize('Unaffable好')
        ['[CLS]', 'un', '##aff', '##able', '好', '[SEP]']
        >>> tokenizer.encode('un', '好')
        ([2, 4, 3, 7, 3], [0, 0, 0, 1, 1])
        >>> tokenizer.rematch('Unaffable好', tokenizer.tokenize('Unaffable好'))
        [[], [0, 1], [2, 3, 4], [5, 6, 7, 8], [9], []]
    """

    def __init__(self, token_dict_or_path, do_lower_case=False, token_start="[CLS]",
                 token_end="[SEP]", pre_tokenize=None, token_translate=None,
                 max_input_chars_per_word=200):
        if isinstance(token_dict_or_path, (str, os.PathLike)):
            source = "vocabulary file %r" % os.fspath(token_dict_or_path)
            token_dict = load_vocab(token_dict_or_path)
        elif isinstance(token_dict_or_path, dict):
            source, token_dict = "token_dict", dict(token_dict_or_path)
        else:
            raise TypeError("token_dict_or_path must be a vocabulary path or a "
                            "{token: id} dict, got %s" % type(token_dict_or_path).__name__)
        for name, token in (("unk", "[UNK]"), ("token_start", token_start),
                            ("token_end", token_end)):
            if token is not None and token not in token_dict:
                raise ValueError("%s has no %r token (%s)" % (source, token, name))
        if pre_tokenize is not None and not callable(pre_tokenize):
            raise TypeError("pre_tokenize must be callable or None")
        self._token_dict = token_dict
        self._token_dict_inv = {i: t for t, i in token_dict.items()}
        self._vocab_size = max(token_dict.values()) + 1
        self._do_lower_case = bool(do_lower_case)
        self._pre_tokenize = pre_tokenize
        self._token_translate = dict(token_translate or {})
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}
        self._max_input_chars_per_word = int(max_input_chars_per_word)
        self._max_token_chars = max(len(t) for t in token_dict)
        # The names bert4keras scripts read (`tokenizer._token_end_id`, ...).
        self._token_pad, self._token_unk, self._token_mask = "[PAD]", "[UNK]", "[MASK]"
        self._token_start, self._token_end = token_start, token_end
        for name in ("pad", "unk", "mask", "start", "end"):
            token = getattr(self, "_token_%s" % name)
            setattr(self, "_token_%s_id" % name, token_dict.get(token))
        self._build_caches()

    @classmethod
    def from_pretrained(cls, directory, **kwargs):
        """The tokenizer of a Hugging Face directory: its ``vocab.txt``, set up as its
        ``tokenizer_config.json`` says.

        ``do_lower_case`` defaults to True when the file does not say (as Hugging Face's
        ``BertTokenizer`` does); lower-casing strips accents, as in Google's code. Settings
        Google's tokenizer has no equivalent for (``tokenize_chinese_chars: false``, or
        ``strip_accents`` different from ``do_lower_case``) are refused rather than
        silently tokenized otherwise. ``kwargs`` override or add constructor arguments.

        Raises:
            FileNotFoundError: no ``vocab.txt`` in ``directory``.
            ValueError: an unsupported setting, naming the file.
        """
        import json

        directory = os.fspath(directory)
        vocab = os.path.join(directory, "vocab.txt")
        if not os.path.isfile(vocab):
            raise FileNotFoundError("no vocab.txt in %r" % directory)
        settings, path = {}, os.path.join(directory, "tokenizer_config.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                settings = json.load(f)
        lower = settings.get("do_lower_case", True)
        if settings.get("tokenize_chinese_chars", True) is False:
            raise ValueError("%s: tokenize_chinese_chars false is not supported (Google's "
                             "tokenizer always splits CJK characters)" % path)
        accents = settings.get("strip_accents")
        if accents is not None and bool(accents) != bool(lower):
            raise ValueError("%s: strip_accents %r with do_lower_case %r is not supported "
                             "(Google's tokenizer strips accents exactly when it lower-cases)"
                             % (path, accents, lower))
        return cls(vocab, **dict({"do_lower_case": lower}, **kwargs))

    def _build_caches(self):
        # word -> ((token, first, stop), ...), word -> [tokens], word -> [ids].
        self._spans_cache = _WordCache(self._word_spans)
        self._token_cache = _WordCache(
            lambda word: [span[0] for span in self._spans_cache[word]])
        unk, get = self._token_unk_id, self._token_dict.get
        self._id_cache = _WordCache(
            lambda word: [get(t, unk) for t in self._token_cache[word]])

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_spans_cache", "_token_cache", "_id_cache"):
            del state[key]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_caches()

    # ------------------------------------------------------------------ vocab

    @property
    def vocab_size(self):
        """Number of embedding rows the vocabulary needs (largest id + 1)."""
        return self._vocab_size

    @property
    def token_dict(self):
        """The `{token: id}` vocabulary (do not modify)."""
        return self._token_dict

    def token_to_id(self, token):
        """The id of `token`, or the id of `[UNK]` if it is not in the vocabulary."""
        return self._token_dict.get(token, self._token_unk_id)

    def tokens_to_ids(self, tokens):
        """`token_to_id` for each token of a list."""
        get, unk = self._token_dict.get, self._token_unk_id
        return [get(t, unk) for t in tokens]

    def id_to_token(self, i):
        """The token of id `i` (ValueError if the vocabulary has no such id)."""
        try:
            return self._token_dict_inv[int(i)]
        except KeyError:
            raise ValueError("token id %r is not in the vocabulary (size %d)"
                             % (i, self._vocab_size)) from None

    def ids_to_tokens(self, ids):
        """`id_to_token` for each id of a sequence."""
        return [self.id_to_token(i) for i in ids]

    # --------------------------------------------------------------- encoding

    def tokenize(self, text, maxlen=None):
        """Splits `text` into tokens, with `token_start` and `token_end`.

        Args:
            text: a str.
            maxlen: if given, drop tokens from the end of the text (keeping
                `token_start` and `token_end`) until at most `maxlen` remain.

        Returns:
            A list of str tokens.
        """
        tokens = self._text_tokens(self._check_text(text, "text"))
        content, _ = self._truncate(len(tokens), None, maxlen)
        start = [] if self._token_start is None else [self._token_start]
        end = [] if self._token_end is None else [self._token_end]
        return start + tokens[:content] + end

    def encode(self, first_text, second_text=None, maxlen=None):
        """Token ids and segment ids of a text or a pair of texts.

        Pairs are laid out `[CLS] first [SEP] second [SEP]`, segment ids 0 for
        the first part and 1 for the second. With `maxlen`, as in bert4keras,
        while too long one token is dropped from the end of the longer text
        (the first one on a tie), always keeping `[CLS]` and each `[SEP]`.

        Returns:
            `(token_ids, segment_ids)`, two lists of ints.

        Example:
            >>> ids, segments = tokenizer.encode('问题', '回答', maxlen=32)  # doctest: +SKIP
        """
        first = self._text_ids(self._check_text(first_text, "first_text"))
        second = None
        if second_text is not None:
            second = self._text_ids(self._check_text(second_text, "second_text"))
        n_first, n_second = self._truncate(
            len(first), None if second is None else len(second), maxlen)
        start = [] if self._token_start_id is None else [self._token_start_id]
        end = [] if self._token_end is None else [self._token_end_id]
        token_ids = start + first[:n_first] + end
        segment_ids = [0] * len(token_ids)
        if second is not None:
            token_ids += second[:n_second] + end
            segment_ids += [1] * (n_second + len(end))
        return token_ids, segment_ids

    def encode_batch(self, texts, maxlen=None):
        """`encode` for a list of texts, or of `(first, second)` pairs.

        Returns:
            `(token_ids, segment_ids)`: two lists with one unpadded list of ints
            per text (pad them with `bertkit.data.sequence_padding`).
        """
        if isinstance(texts, str):
            raise TypeError("encode_batch expects a list of texts; use encode "
                            "for a single str")
        batch_ids, batch_segments = [], []
        for item in texts:
            first, second = (item if isinstance(item, (tuple, list)) else (item, None))
            token_ids, segment_ids = self.encode(first, second, maxlen=maxlen)
            batch_ids.append(token_ids)
            batch_segments.append(segment_ids)
        return batch_ids, batch_segments

    def decode(self, ids):
        """Readable text from token ids.

        Skips `token_start`, `token_end` and `[PAD]`, joins `##` pieces to
        their word, puts spaces between words of space-separated scripts and
        none around CJK characters or before punctuation. Lower-casing,
        accents and spacing lost by `tokenize` cannot be restored.
        """
        skip = {self._token_start, self._token_end, self._token_pad}
        words = []
        for token in self.ids_to_tokens(ids):
            token = self._token_translate_inv.get(token, token)
            if token in skip or not token:
                continue
            if token.startswith("##") and len(token) > 2 and words:
                words[-1] += token[2:]
            else:
                words.append(token)
        text = words[0] if words else ""
        for left, right in zip(words, words[1:]):
            text += (" " + right) if _space_between(left, right) else right
        return text

    def rematch(self, text, tokens):
        """Maps each token back to the characters of `text` it came from.

        Args:
            text: the original str.
            tokens: tokens of `text` from `tokenize` (possibly truncated).

        Returns:
            For each token, the increasing list of indices into `text` of the
            characters it covers: `[]` for `token_start`, `token_end` and other
            bracketed special tokens; for `[UNK]` the characters of the word
            it replaced. Indices account for lower-casing and deleted control
            characters; an accent stripped by `do_lower_case` belongs to the
            token of the character before it. A token shares a character with
            its neighbour only when that character normalises to several (a
            Hangul syllable decomposed by `do_lower_case`). Tokens that do not
            come from `text` map to `[]`.
        """
        spans = self._text_spans(self._check_text(text, "text"))
        tokens = list(tokens)
        head = int(bool(tokens) and tokens[0] == self._token_start)
        tail = int(len(tokens) > head and tokens[-1] == self._token_end)
        body = tokens[head:len(tokens) - tail]
        if [span[0] for span in spans[:len(body)]] == body:  # the usual case
            return ([[] for _ in range(head)] + [list(span[1]) for span in spans[:len(body)]]
                    + [[] for _ in range(tail)])
        mapping, j = [], 0
        for token in tokens:
            k = j
            if k < len(spans) and spans[k][0] != token and not _SPECIAL_RE.match(token):
                # Not the next token (a truncated or edited list): look ahead.
                k = next((i for i in range(j, len(spans)) if spans[i][0] == token),
                         len(spans))
            if k < len(spans) and spans[k][0] == token:
                mapping.append(list(spans[k][1]))
                j = k + 1
            else:
                mapping.append([])
        return mapping

    # -------------------------------------------------------------- internals

    @staticmethod
    def _check_text(text, name):
        if not isinstance(text, str):
            hint = " (decode bytes first)" if isinstance(text, bytes) else ""
            raise TypeError("%s must be a str, got %s%s"
                            % (name, type(text).__name__, hint))
        return text

    def _truncate(self, n_first, n_second, maxlen):
        """Content lengths after bert4keras's truncation to `maxlen` tokens."""
        if maxlen is None:
            return n_first, n_second
        n_end = int(self._token_end is not None)
        extra = int(self._token_start is not None) + n_end * (1 if n_second is None else 2)
        if not isinstance(maxlen, numbers.Integral) or maxlen < extra:
            raise ValueError("maxlen must be an int >= %d (the special tokens), got %r"
                             % (extra, maxlen))
        if n_second is None:
            return min(n_first, maxlen - extra), None
        while n_first + n_second + extra > maxlen:
            if n_first >= n_second:
                n_first -= 1
            else:
                n_second -= 1
        return n_first, n_second

    def _text_tokens(self, text):
        """Tokens of `text` without `token_start` / `token_end`."""
        if self._pre_tokenize is not None:
            return [t for t, _ in self._text_spans(text)]
        return list(itertools.chain.from_iterable(
            map(self._token_cache.__getitem__, _words(text))))

    def _text_ids(self, text):
        """Token ids of `text` without `token_start` / `token_end`."""
        if self._pre_tokenize is not None:
            return self.tokens_to_ids(self._text_tokens(text))
        return list(itertools.chain.from_iterable(
            map(self._id_cache.__getitem__, _words(text))))

    def _text_spans(self, text, offset=0, pre_tokenize=True):
        """`(token, indices)` for each token of `text`; indices are into the
        original text, shifted by `offset`."""
        if pre_tokenize and self._pre_tokenize is not None:
            return self._pretokenized_spans(text)
        removed = [m.start() for m in _control_re().finditer(text)]
        if removed:
            removed_set = set(removed)
            kept = [i + offset for i in range(len(text)) if i not in removed_set]
            text = "".join(text[i - offset] for i in kept)
        else:
            kept = range(offset, offset + len(text))
        spans = []
        for match in _WORD_RE.finditer(text):
            start = match.start()
            for token, first, stop in self._spans_cache[match.group()]:
                spans.append((token, kept[start + first:start + stop]))
        return spans

    def _pretokenized_spans(self, text):
        """`_text_spans` for a text first split into words by `pre_tokenize`."""
        spans, cursor = [], 0
        for word in self._pre_tokenize(text):
            if not isinstance(word, str):
                raise TypeError("pre_tokenize must return str words, got %s"
                                % type(word).__name__)
            start = text.find(word, cursor) if word else -1
            if start < 0:
                # A word that is not a substring of the text has no characters.
                spans.extend((t, []) for t, _ in self._text_spans(word, 0, False))
                continue
            cursor = start + len(word)
            normal = _control_re().sub("", word)
            if self._do_lower_case:
                normal = _lower_strip_accents(normal)[0]
            if normal and normal in self._token_dict and not any(c.isspace() for c in normal):
                removed = {m.start() for m in _control_re().finditer(word)}
                indices = [start + i for i in range(len(word)) if i not in removed]
                spans.append((self._token_translate.get(normal, normal), indices))
            else:
                spans.extend(self._text_spans(word, start, False))
        return spans

    def _word_spans(self, word):
        """`(token, first, stop)` for each token of one whitespace-free word of
        cleaned text: the token covers the word's characters first..stop-1."""
        if self._do_lower_case:
            text, owners = _lower_strip_accents(word)
        else:
            text, owners = word, range(len(word))
        spans = []
        for start, end in _split_pieces(text):
            for token, a, b in self._wordpiece(text[start:end]):
                a, b = start + a, start + b
                # A token also covers the accents stripped after its characters.
                first = 0 if a == 0 else min(owners[a:b])
                stop = owners[b] if b < len(text) else len(word)
                stop = max(stop, max(owners[a:b]) + 1)
                spans.append((self._token_translate.get(token, token), first, stop))
        return tuple(spans)

    def _wordpiece(self, piece):
        """Google's greedy longest-match-first WordPiece: `(token, start, end)`
        for each piece of `piece`, or one `[UNK]` for the whole of it."""
        n, vocab = len(piece), self._token_dict
        if n > self._max_input_chars_per_word:
            return [(self._token_unk, 0, n)]
        out, start = [], 0
        while start < n:
            # No vocabulary token is longer than `_max_token_chars`.
            end = min(n, start + self._max_token_chars)
            while end > start:
                token = piece[start:end] if start == 0 else "##" + piece[start:end]
                if token in vocab:
                    break
                end -= 1
            else:
                return [(self._token_unk, 0, n)]
            out.append((token, start, end))
            start = end
        return out
