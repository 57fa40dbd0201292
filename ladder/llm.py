"""``ladder.LLM(path)``: text in, text out, on a GGUF file or a Hugging Face folder.

    llm = ladder.LLM("model.gguf", target="cpu")
    for tok in llm.generate("Once upon a time", max_new=32, temperature=0.8, top_p=0.95, seed=0):
        print(tok.text, end="", flush=True)

The model is compiled once (a decode step and a prefill step of ``prefill_chunk`` tokens; longer prompts
go through it in chunks), with a cache of ``context`` positions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Sequence

from .generate import GenerateError, ModuleRunner, Sampler, _imported_config, load_model, stream
from .tokenizer import Tokenizer, load as load_tokenizer


@dataclass(frozen=True)
class Token:
    id: int
    text: str   # the text this token adds (empty while a character's bytes are incomplete)


class LLM:
    def __init__(self, path: str | os.PathLike, target: str = "cpu", threads: int | None = None,
                 context: int = 1024, prefill_chunk: int = 16, tokenizer: Tokenizer | None = None,
                 kv_cache: str = "f16"):
        self.path = os.fspath(path)
        cfg = _imported_config(self.path)
        self.context = min(context, cfg.context)
        self.model = load_model(self.path, prompt_len=min(prefill_chunk, self.context), context=self.context,
                                kv_cache=kv_cache)
        self.runner = ModuleRunner(target, self.model.weights, threads)
        self._tokenizer = tokenizer

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:  # read on first use: token ids alone need no tokenizer
            self._tokenizer = load_tokenizer(self.path)
        return self._tokenizer

    def generate(self, prompt: str | Sequence[int], max_new: int = 64, *, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None, chat: bool = False,
                 stop_at_eos: bool = True) -> Iterator[Token]:
        """Yield the new tokens with their text (each once the next is decoded, so that the last carries any
        bytes held back). ``prompt`` is text (encoded by the
        model's tokenizer, through its chat template when ``chat``) or token ids."""
        if isinstance(prompt, str):
            text = self.tokenizer.chat([{"role": "user", "content": prompt}]) if chat else prompt
            ids = self.tokenizer.encode(text)
        else:
            if chat:
                raise GenerateError("chat=True takes the prompt as text")
            ids = [int(t) for t in prompt]
        need_text = isinstance(prompt, str) or self._tokenizer is not None
        out = self.tokenizer.stream() if need_text else None
        stop = self.tokenizer.eos if (stop_at_eos and need_text) else ()
        pick = Sampler(temperature, top_k, top_p, seed)
        held = None  # one token behind, so that the last one carries any text held back at the end
        for t in stream(self.model.prefill, self.model.decode, ids, max_new, self.runner, pick, stop):
            if held is not None:
                yield held
            held = Token(t, out.push(t) if out is not None else "")
        if held is not None:
            yield Token(held.id, held.text + out.flush()) if out is not None else held

    def __call__(self, prompt: str, max_new: int = 64, **options) -> str:
        """The generated text, whole."""
        return "".join(t.text for t in self.generate(prompt, max_new, **options))
