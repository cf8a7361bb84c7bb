"""Hugging Face safetensors directories: loading against a numpy BERT, saving, round trips."""
import json
import os
import sys

import keras
import numpy as np
import pytest
from safetensors.numpy import save_file

import bertkit  # noqa: F401
from bertkit.checkpoints import save_weights_as_checkpoint
from bertkit.huggingface import load_weights_from_safetensors, save_weights_as_safetensors
from bertkit.models import build_transformer_model
from bertkit.tokenizers import Tokenizer
from conftest import REPO_ROOT, TINY_CONFIG, random_google_weights, write_google_checkpoint

sys.path.insert(0, os.path.join(REPO_ROOT, "tests"))
from test_models import numpy_bert  # noqa: E402  (the independent float64 BERT)

TOKENS = np.array([[2, 5, 9, 14, 3, 0, 0], [2, 7, 3, 11, 21, 28, 3]])
SEGMENTS = np.array([[0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 1, 1, 1, 1]])


def hugging_face_key(google_name, prefix="bert.", old_norm_names=False):
    """transformers' BertForPreTraining key of a Google name, spelt out by hand here."""
    special = {"cls/predictions/output_bias": "cls.predictions.bias",
               "cls/seq_relationship/output_weights": "cls.seq_relationship.weight",
               "cls/seq_relationship/output_bias": "cls.seq_relationship.bias"}
    if google_name in special:
        return special[google_name]
    key = google_name.replace("/", ".").replace("layer_", "layer.")
    key = key.replace(".kernel", ".weight")
    key = key.replace(".gamma", ".gamma" if old_norm_names else ".weight")
    key = key.replace(".beta", ".beta" if old_norm_names else ".bias")
    if key.endswith("embeddings"):
        key += ".weight"
    return key.replace("bert.", prefix, 1) if key.startswith("bert.") else key


def write_hugging_face_dir(directory, weights, config, **key_options):
    """config.json, model.safetensors (Linear weights [out, in]) and vocab.txt."""
    os.makedirs(directory, exist_ok=True)
    tensors = {hugging_face_key(name, **key_options):
               np.ascontiguousarray(value.T if name.endswith("kernel") else value)
               for name, value in weights.items()}
    save_file(tensors, os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(dict(config, model_type="bert", architectures=["BertForPreTraining"],
                       pad_token_id=0, position_embedding_type="absolute"), f)
    with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "Ab", "##c"]) + "\n")
    return str(directory)


@pytest.mark.parametrize("key_options", [{}, {"prefix": ""}, {"old_norm_names": True}])
def test_a_hugging_face_directory_loads_as_the_numpy_bert(tmp_path, key_options):
    weights = random_google_weights(TINY_CONFIG, seed=3)
    directory = write_hugging_face_dir(tmp_path / "hf", weights, TINY_CONFIG, **key_options)
    pooled, mlm = build_transformer_model(directory, with_pool=True, with_mlm=True).predict(
        [TOKENS, SEGMENTS], verbose=0)
    expected = numpy_bert(weights, TINY_CONFIG, TOKENS, SEGMENTS)
    np.testing.assert_allclose(pooled, expected["pooled"], atol=1e-5)
    real = TOKENS > 0
    np.testing.assert_allclose(mlm[real], expected["mlm"][real], atol=1e-5)
    sequence = build_transformer_model(os.path.join(directory, "model.safetensors"))
    np.testing.assert_allclose(sequence.predict([TOKENS, SEGMENTS], verbose=0)[real],
                               expected["sequence"][real], atol=1e-5)


def test_google_to_safetensors_and_back_gives_identical_weights(tmp_path):
    weights = random_google_weights(TINY_CONFIG, seed=4)
    prefix = write_google_checkpoint(str(tmp_path / "google"), TINY_CONFIG, weights)
    builder = build_transformer_model(TINY_CONFIG, prefix, with_pool=True, with_nsp=True,
                                      with_mlm=True, return_keras_model=False)
    save_weights_as_safetensors(builder, str(tmp_path / "hf"))
    again = build_transformer_model(str(tmp_path / "hf"), with_pool=True, with_nsp=True,
                                    with_mlm=True)
    for a, b in zip(builder.model.weights, again.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b), err_msg=a.path)
    config = json.load(open(tmp_path / "hf" / "config.json"))
    assert config["model_type"] == "bert" and config["architectures"] == ["BertForPreTraining"]
    assert "num_hidden_groups" not in config  # ALBERT's keys stay out of a BERT config
    # The Keras model alone is enough: it remembers its family and config.
    save_weights_as_safetensors(builder.model, str(tmp_path / "hf2"))
    assert open(tmp_path / "hf2" / "model.safetensors", "rb").read() == \
        open(tmp_path / "hf" / "model.safetensors", "rb").read()
    # ... and back to Google's names: the same values as the file we started from.
    save_weights_as_checkpoint(again, str(tmp_path / "back" / "bert_model.ckpt"))
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(tmp_path / "back" / "bert_model.ckpt"))
    for name, value in weights.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value, err_msg=name)


def test_broken_files_give_a_clear_error_and_leave_the_model_untouched(tmp_path):
    weights = random_google_weights(TINY_CONFIG, seed=5)
    directory = write_hugging_face_dir(tmp_path / "hf", weights, TINY_CONFIG)
    model = build_transformer_model(TINY_CONFIG)
    before = [keras.ops.convert_to_numpy(w) for w in model.weights]
    path = os.path.join(directory, "model.safetensors")
    content = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(content[: len(content) // 2])
    with pytest.raises(ValueError, match=r"cannot read .*model.safetensors: .*truncated"):
        load_weights_from_safetensors(model, directory)
    mismatched = dict(weights)
    mismatched["bert/encoder/layer_1/output/dense/kernel"] = np.zeros((48, 16), "float32")
    write_hugging_face_dir(tmp_path / "hf", mismatched, TINY_CONFIG)
    with pytest.raises(ValueError, match=r"layer_1/output/dense/kernel has shape \(48, 16\)"):
        load_weights_from_safetensors(model, directory)
    del mismatched["bert/encoder/layer_1/output/dense/kernel"]
    write_hugging_face_dir(tmp_path / "hf", mismatched, TINY_CONFIG)
    with pytest.raises(ValueError, match=r"layer_1/output/dense/kernel .* is missing"):
        load_weights_from_safetensors(model, directory)
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(b))
    torch_file = tmp_path / "pt"
    torch_file.mkdir()
    (torch_file / "config.json").write_text(json.dumps(dict(TINY_CONFIG, model_type="bert")))
    (torch_file / "pytorch_model.bin").write_bytes(b"not really")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="is a PyTorch pickle; bertkit reads safetensors"):
            build_transformer_model(str(torch_file))


def test_tokenizer_from_pretrained_reads_tokenizer_config(tmp_path):
    directory = write_hugging_face_dir(tmp_path / "hf", random_google_weights(TINY_CONFIG),
                                       TINY_CONFIG)
    assert Tokenizer.from_pretrained(directory).tokenize("ABC") == ["[CLS]", "[UNK]", "[SEP]"]
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    assert Tokenizer.from_pretrained(directory).tokenize("Abc") == ["[CLS]", "Ab", "##c",
                                                                    "[SEP]"]
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"tokenize_chinese_chars": false}')
    with pytest.raises(ValueError, match="tokenize_chinese_chars false is not supported"):
        Tokenizer.from_pretrained(directory)


def test_examples_take_a_hugging_face_directory_as_checkpoint(tmp_path, capsys):
    sys.path.insert(0, os.path.join(REPO_ROOT, "examples"))
    import basic_extract_features

    weights = random_google_weights(TINY_CONFIG, seed=6)
    directory = write_hugging_face_dir(tmp_path / "hf", weights, TINY_CONFIG)
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"do_lower_case": false}')
    features = basic_extract_features.main(["--checkpoint", directory, "Abc"])
    expected = numpy_bert(weights, TINY_CONFIG, np.array([[2, 5, 6, 3]]), np.zeros((1, 4), int))
    np.testing.assert_allclose(features, expected["sequence"], atol=1e-5)
