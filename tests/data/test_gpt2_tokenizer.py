"""GPT-2 BPE built offline equals tiktoken's published ids; hashes are enforced."""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import pytest

from weyl.data import tokenizer as tk


def test_published_example_ids() -> None:
    # tiktoken's README example for gpt2: "Hello world!" -> [15496, 995, 0]
    assert tk.GPT2Tokenizer().encode("Hello world!") == [15496, 995, 0]
    enc = tk.build_gpt2_encoding(*tk.gpt2_bpe_files())
    assert enc.encode_ordinary("Hello world!") == [15496, 995, 0]
    assert enc.eot_token == 50256 and enc.n_vocab == 50257


def test_round_trip_and_eot_not_special() -> None:
    tok = tk.GPT2Tokenizer()
    text = "In the beginning — naïve café, 3.14 tokens!\n\tend"
    assert tok.decode(tok.encode(text)) == text
    # encode_ordinary treats the special string as text, never as id 50256
    assert 50256 not in tok.encode("<|endoftext|>")


def test_pinned_hashes_match_tiktoken_source() -> None:
    import tiktoken_ext.openai_public as openai_public

    source = Path(openai_public.__file__).read_text()
    assert re.search(rf'vocab_bpe_hash="{tk.VOCAB_BPE_SHA256}"', source)
    assert re.search(rf'encoder_json_hash="{tk.ENCODER_JSON_SHA256}"', source)
    vocab, encoder = tk.gpt2_bpe_files()
    assert hashlib.sha256(vocab.read_bytes()).hexdigest() == tk.VOCAB_BPE_SHA256
    assert hashlib.sha256(encoder.read_bytes()).hexdigest() == tk.ENCODER_JSON_SHA256


def test_tampered_file_is_rejected(tmp_path: Path) -> None:
    vocab, encoder = tk.gpt2_bpe_files()
    bad_vocab = tmp_path / "vocab.bpe"
    shutil.copy(vocab, bad_vocab)
    shutil.copy(encoder, tmp_path / "encoder.json")
    data = bytearray(bad_vocab.read_bytes())
    data[-3] ^= 0x01
    bad_vocab.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        tk.build_gpt2_encoding(bad_vocab, tmp_path / "encoder.json")


def test_warm_tiktoken_cache_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    assert not tk.tiktoken_gpt2_cached()
    vocab, encoder = tk.gpt2_bpe_files()
    # tiktoken caches each URL under sha1(url); seeding those names makes it work offline.
    for url, src in ((tk._VOCAB_BPE_URL, vocab), (tk._ENCODER_JSON_URL, encoder)):
        shutil.copy(src, tmp_path / hashlib.sha1(url.encode()).hexdigest())
    assert tk.tiktoken_gpt2_cached()
    enc = tiktoken.get_encoding("gpt2")
    assert enc.encode_ordinary("Hello world!") == [15496, 995, 0]


def test_char_and_byte_tokenizers() -> None:
    text = "abc ba\nç"
    char = tk.get_tokenizer("char", corpus=text)
    assert char.chars == sorted(set(text)) and char.vocab_size == 6
    assert char.encode("cab") == [sorted(set(text)).index(c) for c in "cab"]
    assert char.decode(char.encode(text)) == text
    with pytest.raises(ValueError, match="not in this char vocabulary"):
        char.encode("z")
    rebuilt = tk.tokenizer_from_meta(char.meta())
    assert rebuilt.encode(text) == char.encode(text)

    byte = tk.get_tokenizer("bytes")
    assert byte.vocab_size == 256
    assert byte.encode("ç") == list("ç".encode())
    assert byte.decode(byte.encode(text)) == text
    with pytest.raises(ValueError, match=r"data\.tokenizer"):
        tk.get_tokenizer("sentencepiece")
