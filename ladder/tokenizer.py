"""Text <-> token ids for a model file, through the ``tokenizers`` library (extra ``text``).

* A Hugging Face folder: its ``tokenizer.json`` as is (special tokens, BOS, chat template from
  ``tokenizer_config.json``, end-of-sequence ids from ``config.json`` / ``generation_config.json``).
* A GGUF file: the vocabulary in its metadata, as llama.cpp reads it:
  - ``tokenizer.ggml.model = "llama"`` (SentencePiece): a BPE whose merges are every split of a piece into
    two pieces of the vocabulary, ranked by the merged piece's score (llama.cpp merges the best-scoring
    adjacent pair first), byte fallback to ``<0xNN>`` tokens, spaces as "▁" with one in front;
  - ``tokenizer.ggml.model = "gpt2"`` (byte-level BPE, Llama 3 / BitNet b1.58 2B4T): the vocabulary and merges
    of the file, with the pre-tokenizer regex that ``tokenizer.ggml.pre`` names.
  Any other tokenizer model is an error naming it and what is supported.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from .errors import LadderError

SUPPORTED_GGUF = {"llama": "SentencePiece (byte fallback)", "gpt2": "byte-level BPE"}
# Pre-tokenizer regexes of byte-level BPE vocabularies, by tokenizer.ggml.pre (the published patterns).
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
           r"\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
PRE_TOKENIZERS = {"llama-bpe": _LLAMA3, "llama3": _LLAMA3, "default": _GPT2, "gpt2": _GPT2}


class TokenizerError(LadderError):
    kind = "tokenizer error"


def _tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise TokenizerError("text in and out needs the 'tokenizers' package: pip install 'ladder[text]' "
                             "(or give token ids with --prompt-ids)") from None
    return tokenizers


@dataclass
class Tokenizer:
    """Encodes text to ids and decodes ids to text; ``eos`` ends a generation; ``chat_template`` (Jinja)
    turns messages into a prompt when the model carries one."""

    tok: Any                               # a tokenizers.Tokenizer
    bos: int | None = None                 # prepended by ``encode`` when ``add_bos``
    add_bos: bool = False
    eos: set[int] = field(default_factory=set)
    chat_template: str | None = None
    special: dict[str, int] = field(default_factory=dict)

    def encode(self, text: str) -> list[int]:
        ids = self.tok.encode(text, add_special_tokens=True).ids
        if self.add_bos and self.bos is not None and (not ids or ids[0] != self.bos):
            ids = [self.bos] + ids
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        """The prompt text for ``messages`` ([{"role": "user", "content": ...}]) by the model's template."""
        if not self.chat_template:
            raise TokenizerError("this model carries no chat template; give the prompt as plain text")
        try:
            import jinja2
        except ImportError:
            raise TokenizerError("a chat template needs the 'jinja2' package") from None
        env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
        names = {v: k for k, v in self.special.items()}
        try:
            return env.from_string(self.chat_template).render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=names.get(self.bos, "") if self.bos is not None else "",
                eos_token=names.get(min(self.eos), "") if self.eos else "")
        except jinja2.TemplateError as e:
            raise TokenizerError(f"the model's chat template failed: {e}") from None

    def stream(self) -> TextStream:
        return TextStream(self)


class TextStream:
    """Turns tokens arriving one by one into the text they add (a character split over several byte tokens
    comes out once it is whole)."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.ids, self.done = tokenizer, [], ""

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next bytes
            return ""
        new, self.done = text[len(self.done):] if text.startswith(self.done) else text, text
        return new

    def flush(self) -> str:
        """What is held back at the end (bytes that never completed a character, decoded as U+FFFD)."""
        text = self.tokenizer.decode(self.ids)
        new, self.done = text[len(self.done):] if text.startswith(self.done) else "", text
        return new


def load(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer of a GGUF file or a Hugging Face folder."""
    path = os.fspath(path)
    return from_folder(path) if os.path.isdir(path) else from_gguf(path)


def _json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def from_folder(path: str) -> Tokenizer:
    tk = _tokenizers()
    f = os.path.join(path, "tokenizer.json")
    if not os.path.exists(f):
        raise TokenizerError(f"{path}: no tokenizer.json (ladder reads the fast-tokenizer file; give --prompt-ids "
                             f"instead)")
    try:
        tok = tk.Tokenizer.from_file(f)
    except Exception as e:  # the library's own parse errors
        raise TokenizerError(f"{f}: cannot be read by the tokenizers library: {e}") from None
    tc, cfg = _json(os.path.join(path, "tokenizer_config.json")), _json(os.path.join(path, "config.json"))
    gen = _json(os.path.join(path, "generation_config.json"))
    eos = gen.get("eos_token_id", cfg.get("eos_token_id"))
    eos_ids = set(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
    template = tc.get("chat_template")
    special = {t.content: i for i, t in tok.get_added_tokens_decoder().items() if t.special}
    return Tokenizer(tok, cfg.get("bos_token_id"), False, eos_ids, template if isinstance(template, str) else None,
                     special)


def _gguf_fields(path: str) -> dict[str, Any]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path, "r")
    except Exception as e:
        raise TokenizerError(f"{path}: cannot read the GGUF metadata: {e}") from None
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def from_gguf(path: str) -> Tokenizer:
    tk = _tokenizers()
    m = _gguf_fields(path)
    model = m.get("tokenizer.ggml.model")
    if model not in SUPPORTED_GGUF:
        what = f"tokenizer model '{model}'" if model else "no tokenizer (no 'tokenizer.ggml.model')"
        raise TokenizerError(f"{path}: {what} is not supported; ladder reads "
                             + ", ".join(f"'{k}' ({v})" for k, v in SUPPORTED_GGUF.items()))
    tokens: list[str] = list(m.get("tokenizer.ggml.tokens") or [])
    if not tokens:
        raise TokenizerError(f"{path}: 'tokenizer.ggml.tokens' is missing or empty")
    types = list(m.get("tokenizer.ggml.token_type") or [1] * len(tokens))
    if model == "llama":
        tok = _sentencepiece(tk, tokens, list(m.get("tokenizer.ggml.scores") or [0.0] * len(tokens)), types)
        add_bos_default = True
    else:
        pre = m.get("tokenizer.ggml.pre", "default")
        if pre not in PRE_TOKENIZERS:
            raise TokenizerError(f"{path}: pre-tokenizer '{pre}' is not supported; ladder knows "
                                 f"{', '.join(PRE_TOKENIZERS)}")
        tok = _byte_bpe(tk, tokens, list(m.get("tokenizer.ggml.merges") or []), PRE_TOKENIZERS[pre])
        add_bos_default = False
    special = {t: i for i, (t, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)}  # control, user-defined
    tok.add_special_tokens([tk.AddedToken(t, special=True, normalized=False) for t in special])
    eos = {m[k] for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id") if k in m}
    return Tokenizer(tok, m.get("tokenizer.ggml.bos_token_id"), bool(m.get("tokenizer.ggml.add_bos_token",
                                                                            add_bos_default)),
                     eos, m.get("tokenizer.chat_template"), special)


def _sentencepiece(tk, tokens: list[str], scores: list[float], types: list[int]):
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for t, i in vocab.items():
        if types[i] != 1 or len(t) < 2:  # normal pieces only
            continue
        for cut in range(1, len(t)):
            a, b = t[:cut], t[cut:]
            if a in vocab and b in vocab:
                merges.append((-scores[i], i, a, b))
    merges.sort()
    unk = next((t for t, ty in zip(tokens, types) if ty == 2), None)
    bpe = tk.models.BPE(vocab, [(a, b) for *_, a, b in merges], unk_token=unk, byte_fallback=True, fuse_unk=True)
    tok = tk.Tokenizer(bpe)
    n, d = tk.normalizers, tk.decoders
    tok.normalizer = n.Sequence([n.Prepend("▁"), n.Replace(" ", "▁")])
    tok.decoder = d.Sequence([d.Replace("▁", " "), d.ByteFallback(), d.Fuse(), d.Strip(" ", 1, 0)])
    return tok


def _byte_bpe(tk, tokens: list[str], merges: Iterable[str], pattern: str):
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = tk.Tokenizer(tk.models.BPE(vocab, pairs, ignore_merges=False))
    p = tk.pre_tokenizers
    tok.pre_tokenizer = p.Sequence([p.Split(tk.Regex(pattern), behavior="isolated"),
                                    p.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = tk.decoders.ByteLevel()
    return tok
