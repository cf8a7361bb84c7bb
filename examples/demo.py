"""The embedded default of the examples: a small random BERT in Google's format.

No pretrained weights can be assumed on a new machine, so with no ``--checkpoint`` the
examples build a small randomly initialised BERT, save it under ``checkpoints/demo/``
exactly as Google publishes checkpoints (``bert_config.json``, ``bert_model.ckpt.*``,
``vocab.txt``), and load it back through the same code path a real checkpoint takes.
A random checkpoint cannot give real accuracy; the examples say so when they use it.
"""
import os
import shutil
import tempfile

from bertkit.checkpoints import save_checkpoint_dir
from bertkit.models import build_transformer_model
from bertkit.tokenizers import Tokenizer
from common import write_lines_atomically

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_DIR = os.path.join(REPO_ROOT, "checkpoints", "demo")
DATA_DIR = os.path.join(REPO_ROOT, "examples", "data")

#: Small enough to fine-tune in about a minute on 2 CPU cores.
DEMO_CONFIG = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 512,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
}

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def shared_vocab_path():
    """The Chinese BERT vocabulary in the shared data directory, if it is there."""
    root = os.environ.get("BERTKIT_SHARED_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data")
    path = os.path.join(root, "vocab", "chinese_vocab.txt")
    return os.path.normpath(path) if os.path.isfile(path) else None


def builtin_vocab_tokens():
    """A small vocabulary: special tokens, ASCII, and every character of the sample data."""
    chars = {chr(c) for c in range(33, 127)}
    if os.path.isdir(DATA_DIR):
        for name in sorted(os.listdir(DATA_DIR)):
            with open(os.path.join(DATA_DIR, name), encoding="utf-8") as f:
                chars.update(ch for ch in f.read() if not ch.isspace())
    chars.update("今天天气很好我们去公园散步吧这部电影真的非常好看语言模型")
    words = sorted(chars)
    pieces = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    return SPECIAL_TOKENS + words + pieces


DEMO_SEED = 0  # the same demo weights on every machine (and every worker of a cluster)


def ensure_demo_checkpoint(directory=None):
    """Creates the demo checkpoint directory unless it exists; returns its three paths.

    The directory is written beside its place and renamed into it, so that it appears
    whole: workers of a cluster that start together on one machine all read the one
    that was renamed first (the weights are seeded, so each would be the same anyway).

    Returns:
        ``(config_path, checkpoint_prefix, vocab_path)``.
    """
    directory = directory or DEMO_DIR
    paths = (os.path.join(directory, "bert_config.json"),
             os.path.join(directory, "bert_model.ckpt"),
             os.path.join(directory, "vocab.txt"))
    if all(os.path.exists(p) for p in (paths[0], paths[1] + ".index", paths[2])):
        return paths
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".demo-", dir=parent)
    try:
        vocab_path = shared_vocab_path()
        if vocab_path is None:
            vocab_path = os.path.join(staging, "vocab.txt")
            write_lines_atomically(vocab_path, builtin_vocab_tokens())
        make_random_checkpoint(staging, vocab_path, seed=DEMO_SEED, **DEMO_CONFIG)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)  # mkdtemp's 0700 would hide it from other users
        try:
            os.rename(staging, directory)
        except OSError:  # another process renamed its copy first (or a partial one is there)
            if not all(os.path.exists(p) for p in (paths[0], paths[1] + ".index", paths[2])):
                raise
            return paths
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"Created a small RANDOM BERT checkpoint in {directory} (vocab: "
          f"{shared_vocab_path() or paths[2]}).")
    return paths


def make_random_checkpoint(directory, vocab_path, seed=None, **config):
    """Writes a randomly initialised BERT (all heads) as a Google checkpoint directory.

    Args:
        directory: where ``bert_config.json``, ``bert_model.ckpt.*`` and ``vocab.txt`` go.
        vocab_path: the vocabulary; it sets ``vocab_size`` (every line is a token, also
            one that strips to nothing, such as the Chinese vocabulary's U+2028).
        seed: seeds the initialisation.
        **config: ``BertConfig`` keys (``hidden_size``, ``num_hidden_layers``, ...).

    Returns:
        ``(config_path, checkpoint_prefix, vocab_path)`` of the written directory.
    """
    import keras

    if seed is not None:
        keras.utils.set_random_seed(seed)
    vocab_size = Tokenizer(vocab_path).vocab_size
    builder = build_transformer_model(vocab_size=vocab_size, with_nsp=True, with_mlm=True,
                                      return_keras_model=False, **config)
    return save_checkpoint_dir(builder, directory, vocab_path=vocab_path)
