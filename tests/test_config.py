"""BertConfig: Google's files, defaults, ALBERT's keys and clear errors."""
import json

import pytest

from bertkit.config import BertConfig

GOOGLE_BASE_CHINESE = {  # chinese_L-12_H-768_A-12/bert_config.json, verbatim
    "attention_probs_dropout_prob": 0.1, "directionality": "bidi", "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02,
    "intermediate_size": 3072, "max_position_embeddings": 512, "num_attention_heads": 12,
    "num_hidden_layers": 12, "pooler_fc_size": 768, "pooler_num_attention_heads": 12,
    "pooler_num_fc_layers": 3, "pooler_size_per_head": 128, "pooler_type": "first_token_transform",
    "type_vocab_size": 2, "vocab_size": 21128,
}


def test_reads_google_file_and_round_trips_extra_keys(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps(GOOGLE_BASE_CHINESE))
    config = BertConfig.from_json_file(str(path))
    assert (config.hidden_size, config.num_attention_heads, config.attention_head_size) == (768, 12, 64)
    assert config.embedding_size is None and config.activation == "gelu"
    assert config.to_dict() == GOOGLE_BASE_CHINESE | {"layer_norm_eps": 1e-12,
                                                      "num_hidden_groups": 1, "inner_group_num": 1}
    config.to_json_file(str(tmp_path / "copy.json"))
    assert BertConfig.from_json_file(str(tmp_path / "copy.json")) == config


def test_defaults_fill_omitted_keys_and_albert_embedding_size():
    config = BertConfig.from_dict({"vocab_size": 100, "embedding_size": 128, "hidden_act": "gelu_new"})
    assert config.hidden_size == 768 and config.type_vocab_size == 16
    assert config.embedding_size == 128 and config.activation == "gelu_tanh"
    assert config.replace(num_hidden_layers=4).num_hidden_layers == 4


@pytest.mark.parametrize("values, key", [
    ({"vocab_size": 10, "hidden_act": "mish"}, "hidden_act"),
    ({"vocab_size": 10, "hidden_size": 100, "num_attention_heads": 12}, "hidden_size"),
    ({"hidden_size": 64}, "vocab_size"),
    ({"vocab_size": 10, "num_hidden_layers": 0}, "num_hidden_layers"),
    ({"vocab_size": 10, "hidden_dropout_prob": 1.5}, "hidden_dropout_prob"),
    ({"vocab_size": 10, "embedding_size": -1}, "embedding_size"),
    ({"vocab_size": 10, "num_hidden_groups": 2}, "num_hidden_groups"),
    ({"vocab_size": "10"}, "vocab_size"),
])
def test_bad_values_name_the_key(values, key):
    with pytest.raises(ValueError, match=f"'{key}'"):
        BertConfig.from_dict(values)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        BertConfig.from_json_file(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json is not valid JSON"):
        BertConfig.from_json_file(str(bad))
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"vocab_size": 10, "hidden_act": "mish"}))
    with pytest.raises(ValueError, match="odd.json: .*'hidden_act'"):
        BertConfig.from_json_file(str(odd))
