"""Write a randomly initialised BERT as a Google-format checkpoint directory.

For training from scratch when no pretrained checkpoint is at hand: the directory it
writes (bert_config.json, bert_model.ckpt.*, vocab.txt) goes to any example's
--config/--checkpoint/--vocab.

    python examples/make_random_checkpoint.py --vocab ../shared/data/vocab/chinese_vocab.txt \\
        --layers 4 --hidden 256 --heads 4 --intermediate 1024 --output checkpoints/small_random
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401  (bertkit before TensorFlow, without its start-up log)

from demo import DEMO_CONFIG, make_random_checkpoint  # noqa: E402
from common import add_verbose_argument, run_cli  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vocab", required=True, help="vocab.txt (its size sets vocab_size)")
    p.add_argument("--output", required=True, help="directory to write")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--max-position", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    add_verbose_argument(p)
    args = p.parse_args(argv)
    if not os.path.isfile(args.vocab):
        p.error(f"vocab file not found: {args.vocab}")
    config = dict(DEMO_CONFIG, num_hidden_layers=args.layers, hidden_size=args.hidden,
                  num_attention_heads=args.heads, intermediate_size=args.intermediate,
                  max_position_embeddings=args.max_position)
    paths = make_random_checkpoint(args.output, args.vocab, seed=args.seed, **config)
    print("wrote", *paths)
    return paths


if __name__ == "__main__":
    sys.exit(run_cli(main))
