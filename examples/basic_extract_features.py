"""Encode two sentences with BERT and print the features.

With --config/--checkpoint/--vocab it uses a real checkpoint (e.g. Google's
chinese_L-12_H-768_A-12); without them it builds a small random checkpoint under
checkpoints/demo/ and says so.

    python examples/basic_extract_features.py
    python examples/basic_extract_features.py --config chinese_L-12_H-768_A-12/bert_config.json \
        --checkpoint chinese_L-12_H-768_A-12/bert_model.ckpt \
        --vocab chinese_L-12_H-768_A-12/vocab.txt
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import quiet  # noqa: E402,F401  (bertkit before TensorFlow, without its start-up log)

import numpy as np  # noqa: E402

from bertkit.data import sequence_padding  # noqa: E402
from bertkit.models import build_transformer_model  # noqa: E402
from bertkit.tokenizers import Tokenizer  # noqa: E402
from common import (add_checkpoint_arguments, resolve_huggingface_checkpoint,  # noqa: E402
                    run_cli)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_checkpoint_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("texts", nargs="*", default=["语言模型", "今天天气很好，我们去公园散步吧。"])
    args = parser.parse_args(argv)
    resolve_huggingface_checkpoint(args)
    given = [args.config, args.checkpoint, args.vocab]
    if any(given) and not all(given):
        parser.error("--config, --checkpoint and --vocab go together")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.checkpoint is None:
        from demo import ensure_demo_checkpoint

        args.config, args.checkpoint, args.vocab = ensure_demo_checkpoint()
        print("Using a small RANDOM checkpoint: the features below carry no meaning. "
              "Pass --config/--checkpoint/--vocab to use a pretrained BERT.")
    tokenizer = Tokenizer(args.vocab, do_lower_case=args.do_lower_case)
    model = build_transformer_model(args.config, args.checkpoint, model=args.model)
    token_ids, segment_ids = zip(*(tokenizer.encode(text) for text in args.texts))
    token_ids, segment_ids = sequence_padding(token_ids), sequence_padding(segment_ids)
    features = model.predict([token_ids, segment_ids], verbose=0)
    np.set_printoptions(precision=4, suppress=True)
    for text, ids, vectors in zip(args.texts, token_ids, features):
        length = int((ids > 0).sum())
        print(f"\n{text}\n  tokens: {tokenizer.ids_to_tokens(ids[:length])}")
        print(f"  features: shape {vectors[:length].shape}; [CLS] first values "
              f"{vectors[0, :6]}")
    return features


if __name__ == "__main__":
    sys.exit(run_cli(main))
