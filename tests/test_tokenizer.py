"""Tokenizers from GGUF metadata and Hugging Face folders (through the ``tokenizers`` library)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")
gguf = pytest.importorskip("gguf")

import parity_models as pm  # noqa: E402
from ladder.errors import LadderError  # noqa: E402
from ladder.tokenizer import load  # noqa: E402

FIX = Path(__file__).parent / "fixtures" / "parity"


def test_sentencepiece_from_gguf_as_llamacpp_tokenizes():
    tok = load(FIX / "llama-Q8_0.gguf")
    recorded = json.loads((FIX / "llamacpp.json").read_text())["tokenize"]  # llama_tokenize's ids, with BOS
    assert len(recorded) >= 4
    for text, ids in recorded.items():
        assert tok.encode(text) == ids, text
        assert tok.decode(ids) == text
    vocab, _, _ = pm.vocabulary()
    ids = tok.encode("Zoë 42")  # 'Z', 'ë' and digits are not pieces: byte fallback
    assert [vocab[i] for i in ids[2:5]] == ["<0x5A>", "o", "<0xC3>"]
    stream = tok.stream()
    assert "".join(stream.push(i) for i in ids) == "Zoë 42"
    assert tok.eos == {2} and tok.bos == 1


def _write_vocab(path, model: str, tokens, merges=(), pre="llama-bpe", template=None):
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tokenizer_model(model)
    w.add_tokenizer_pre(pre)
    w.add_token_list(list(tokens))
    w.add_token_types([1] * (len(tokens) - 1) + [3])
    if merges:
        w.add_token_merges(list(merges))
    w.add_eos_token_id(len(tokens) - 1)
    if template:
        w.add_chat_template(template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_byte_level_bpe_from_gguf(tmp_path):
    # GPT-2's stand-ins: 'Ġ' is the space byte; merges build "Ġthe" and "hello"
    tokens = ["h", "e", "l", "o", "t", "Ġ", "he", "ll", "hell", "hello", "th", "Ġt", "Ġthe", "<|eot|>"]
    merges = ["h e", "l l", "he ll", "hell o", "t h", "Ġ t", "Ġt he"]
    path = tmp_path / "bpe.gguf"
    _write_vocab(path, "gpt2", tokens, merges,
                 template="{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
                          "{% if add_generation_prompt %}<assistant>{% endif %}")
    tok = load(path)
    ids = tok.encode("hello the")
    assert [tokens[i] for i in ids] == ["hello", "Ġthe"]
    assert tok.decode(ids) == "hello the"
    assert tok.encode("hello<|eot|>")[-1] == 13 and tok.eos == {13}
    assert tok.chat([{"role": "user", "content": "hi"}]) == "<user>hi<assistant>"


def test_unsupported_tokenizers_are_named(tmp_path):
    path = tmp_path / "t5.gguf"
    _write_vocab(path, "t5", ["a", "b"])
    with pytest.raises(LadderError, match="tokenizer model 't5' is not supported; ladder reads 'llama' "
                                          "\\(SentencePiece"):
        load(path)
    path = tmp_path / "pre.gguf"
    _write_vocab(path, "gpt2", ["a", "b", "ab"], ["a b"], pre="qwen2")
    with pytest.raises(LadderError, match="pre-tokenizer 'qwen2' is not supported"):
        load(path)
    with pytest.raises(LadderError, match="no chat template"):
        load(FIX / "llama-Q4_0.gguf").chat([{"role": "user", "content": "hi"}])
    folder = tmp_path / "hf"
    shutil.copytree(FIX / "hf-llama", folder)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(LadderError, match="no tokenizer.json"):
        load(folder)


def test_hf_folder_tokenizer():
    tok = load(FIX / "hf-llama")
    ids = tok.encode("héllo")
    assert ids == list("héllo".encode()) and tok.decode(ids) == "héllo"
    assert tok.eos == {2}
