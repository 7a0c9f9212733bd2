"""Conversations -> ids and labels in Llama 3's chat format, for the cross-attention family.

    from onevision.data.llama3_chat import Llama3ChatEncoder
    encoder = Llama3ChatEncoder(tokenizer, image_token_id=config.image_token_id)
    encoded = encoder.encode([("user", "<image>\\nWhat is it?"), ("assistant", "A cat.")], [1])
    prompt = encoder.prompt([("user", "<image>\\nWhat is it?")], [1])   # ids up to the reply

The format is Llama 3.2-Vision's chat template without its optional date / tool lines:
``<|begin_of_text|>`` then, per turn, ``<|start_header_id|>role<|end_header_id|>\\n\\n`` +
content + ``<|eot_id|>``; a prompt ends with the assistant header. Records keep LLaVA's
placeholders: each ``<image>`` in a system or user turn becomes one ``<|image|>`` (the decoder
sees one token per image; its tiles reach the text through cross-attention only) and each
``<video>`` one ``<|image|>`` per frame (frames are images). The reply and its ``<|eot_id|>``
are supervised, everything else is -100. Training and inference build ids with this one class,
so a sample's ids up to its first reply are the inference prompt's.

Record text is data: control tokens written in it are tokenised as plain text
(``split_special_tokens``), so a reply cannot close its turn or open a forged one.

`check_template` compares this format with the tokenizer's own chat template on a probe
conversation, so a folder whose template writes something else is refused, not trained on
silently in another format. `llama3_byte_tokenizer` is a toy tokenizer of Llama 3's layout
fitted to a preset's ids (`model.tokenizer: llama3-bytes`), for random starts such as
`mllama-debug`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

from onevision.data.template import IGNORE_INDEX, SkipSample, normalize_role
from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN

IMAGE = "<|image|>"
BOS, EOT, START_HEADER, END_HEADER = "<|begin_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"
LLAMA3_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|image|>' -}}{%- else -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|eot_id|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}{%- endif -%}"
)
"""Llama 3.2-Vision's chat template reduced to the format above (what `llama3_byte_tokenizer` carries)."""
SPECIALS = [BOS, "<|end_of_text|>", "<|finetune_right_pad_id|>", EOT, START_HEADER, END_HEADER, "<|python_tag|>"]
_PLACEHOLDER = re.compile(re.escape(IMAGE_TOKEN) + "|" + re.escape(VIDEO_TOKEN))


def llama3_byte_tokenizer(image_token_id: int) -> PreTrainedTokenizerFast:
    """Llama 3's layout at toy size: 256 byte symbols (no merges), the specials, reserved ones, `<|image|>` at `image_token_id`.

    Ids: `<|begin_of_text|>` 256, `<|end_of_text|>` 257, `<|finetune_right_pad_id|>` 258 (pad),
    `<|eot_id|>` 259 (eos), headers 260 / 261, `<|python_tag|>` 262 (those of `mllama-debug`).

    Raises:
        ValueError: `image_token_id` leaves no room for the specials.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(alphabet, key=lambda s: bytes(s, "utf-8")))}
    free = image_token_id - len(vocab) - len(SPECIALS)
    if free < 0:
        raise ValueError(f"image_token_id={image_token_id}: the byte tokenizer needs it >= {len(vocab) + len(SPECIALS)}")
    backend = Tokenizer(BPE(vocab=vocab, merges=[], fuse_unk=False))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    reserved = [f"<|reserved_special_token_{i}|>" for i in range(free)]
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS + reserved + [IMAGE]])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=BOS, eos_token=EOT, pad_token=SPECIALS[2], chat_template=LLAMA3_CHAT_TEMPLATE,
    )


@dataclass
class Encoded:
    """One conversation's ids and labels (same length; -100 where not supervised)."""

    input_ids: list[int]
    labels: list[int]


class Llama3ChatEncoder:
    """Encodes conversations in Llama 3's chat format (see the module docstring).

    Raises:
        ValueError: the tokenizer lacks one of the format's control tokens, or its
            `<|image|>` is not `image_token_id`.
    """

    def __init__(self, tokenizer, image_token_id: int, system_prompt: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.system_prompt = system_prompt
        ids = {token: tokenizer.convert_tokens_to_ids(token) for token in (BOS, EOT, START_HEADER, END_HEADER, IMAGE)}
        missing = [token for token, i in ids.items() if i is None or i == tokenizer.unk_token_id]
        if missing:
            raise ValueError(f"the tokenizer has no {missing}: the cross-attention family needs a Llama 3 tokenizer")
        if ids[IMAGE] != image_token_id:
            raise ValueError(f"the tokenizer's {IMAGE} is id {ids[IMAGE]} but the model's image_token_id is {image_token_id}")
        self.bos, self.eot = ids[BOS], ids[EOT]
        self.header_ids = {ids[START_HEADER], ids[END_HEADER]}
        self._start, self._end = ids[START_HEADER], ids[END_HEADER]

    def _text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]) if text else []

    def encode_text(self, text: str) -> list[int]:
        """Ids of plain text (control tokens in it stay text), e.g. an answer option."""
        return self._text(text)

    def encode_reply(self, text: str) -> list[int]:
        """Ids of `text` as a reply right after the prompt: Llama 3's assistant header ends in
        "\n\n", so the reply starts a fresh word and is tokenised as plain text."""
        return self._text(text)

    def _header(self, role: str) -> list[int]:
        return [self._start, *self._text(role), self._end, *self._text("\n\n")]

    def _content(self, text: str, counts: list[int], where: str) -> list[int]:
        """Text with each placeholder replaced by its run of `<|image|>` (counts consumed in order)."""
        ids, at = [], 0
        for match in _PLACEHOLDER.finditer(text):
            if not counts:
                raise SkipSample(f"{where}the text has more <image> / <video> placeholders than the record has media")
            ids += self._text(text[at:match.start()]) + [self.image_token_id] * counts.pop(0)
            at = match.end()
        return ids + self._text(text[at:])

    def _turns(self, turns: Sequence[tuple[str, str]], counts: Sequence[int], where: str) -> list[tuple[str, list[int]]]:
        if not turns:
            raise SkipSample(f"{where}record has no conversation turns")
        messages = [(normalize_role(role, where), text) for role, text in turns]
        if self.system_prompt is not None and messages[0][0] != "system":
            messages.insert(0, ("system", self.system_prompt))
        left = list(counts)
        out = []
        for role, text in messages:
            if not isinstance(text, str):
                raise SkipSample(f"{where}a {role} turn's text is {type(text).__name__}, not a string")
            out.append((role, self._text(text) if role == "assistant" else self._content(text, left, where)))
        if left:
            raise SkipSample(f"{where}the record has {len(counts)} media but its text only {len(counts) - len(left)} placeholders")
        return out

    def encode(self, turns: Sequence[tuple[str, str]], counts: Sequence[int], where: str = "") -> Encoded:
        """Ids and labels of a training conversation; `counts[k]`: `<|image|>` tokens of placeholder k.

        Raises:
            SkipSample: no turns, an unknown role, placeholders that disagree with `counts`, a
                reply first, or no reply to supervise.
        """
        ids, labels = [self.bos], [IGNORE_INDEX]
        encoded = self._turns(turns, counts, where)
        if encoded[0][0] == "assistant":
            raise SkipSample(f"{where}the conversation opens with an assistant reply; nothing asks for it")
        if not any(role == "assistant" for role, _ in encoded):
            raise SkipSample(f"{where}nothing to supervise: the conversation has no assistant reply")
        for role, content in encoded:
            header = self._header(role)
            body = content + [self.eot]
            ids += header + body
            labels += [IGNORE_INDEX] * len(header) + (body if role == "assistant" else [IGNORE_INDEX] * len(body))
        return Encoded(ids, labels)

    def prompt(self, turns: Sequence[tuple[str, str]], counts: Sequence[int], where: str = "") -> list[int]:
        """Ids of a question (turns ending with a user turn) followed by the assistant header."""
        ids = [self.bos]
        for role, content in self._turns(turns, counts, where):
            ids += self._header(role) + content + [self.eot]
        return ids + self._header("assistant")

    def check_template(self, chat_template: str | None, where: str) -> None:
        """Refuse a tokenizer chat template that renders another format than this encoder's.

        Raises:
            ValueError: the template renders a probe conversation (an image, a question, a reply,
                a second question) to other ids; the message names `where`.
        """
        if not chat_template:
            raise ValueError(f"{where}: the tokenizer has no chat template; the cross-attention family renders Llama 3's")
        probe = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "probe question"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "probe reply"}]},
            {"role": "user", "content": [{"type": "text", "text": "again"}]},
        ]
        text = self.tokenizer.apply_chat_template(probe, chat_template=chat_template, tokenize=False, add_generation_prompt=True)
        theirs = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        ours = self.prompt([("user", "<image>probe question"), ("assistant", "probe reply"), ("user", "again")], [1])
        if theirs != ours:
            raise ValueError(f"{where}: the tokenizer's chat template does not render Llama 3's chat format (it writes {text[:80]!r})")
