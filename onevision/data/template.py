"""Conversation -> token ids and labels, with every visual placeholder expanded to its planned run.

Three kinds of template:

* ``chatml`` (stages 1.5 and 2): the tokenizer's chat template, as inference renders it for the
  same checkpoint (`onevision.infer.prompt`; `onevision.train.model_init.load_tokenizer` sets
  the template a start folder's inference uses: the folder's own, or Qwen2 ChatML for an
  original LLaVA-NeXT start, which renders LLaVA-NeXT's ``qwen_1_5`` conversation). Our
  `onevision.tokenizer.CHATML_TEMPLATE` adds a default system turn "You are a helpful
  assistant." when the conversation has none. A template that renders string content gets each
  turn's text; one that does not (the released llava-hf OneVision template renders only typed
  parts) gets `typed_parts`, exactly as inference feeds it.

  Train as the model is asked: every assistant turn is written as the template's generation
  prompt (what inference appends to the question), then the reply, then what the template
  closes a reply with. So the ids of a sample up to its first reply are the inference prompt's
  ids for its first question. For ChatML the generation prompt and the template's own assistant
  header are the same text; the released llava-hf template writes ``<|im_start|>assistant \\n``
  inside a conversation but prompts with ``<|im_start|>assistant\\n``: training follows the
  prompt (LLaVA-NeXT trained these models on ``qwen_1_5``, which writes the latter too).
  Labels: the reply and the control token that closes it (``<|im_end|>``) are supervised; the
  generation prompt, the "\\n" after ``<|im_end|>`` and everything in system and user turns
  are -100 (the official code un-masks role tokens everywhere; docs/architecture.md, "Label
  masking"). The spans come from the rendered text: each message is rendered prefix by prefix
  and the reply's place found by rendering a stand-in reply, so no ``{% generation %}`` block
  is needed. The whole rendering is tokenised at once and each token labelled by whether it
  overlaps a supervised span, so a template whose turns do not start with a control token
  (Vicuna's "USER: q ASSISTANT:", where a Llama tokenizer's "▁A" carries the space of the turn
  before) is labelled as it tokenises.
* ``vicuna_v1`` / ``llava_v1`` (the original LLaVA's stage 2 and eval,
  `onevision.data.conversations`): the same, with the original's conversation as the template
  and the tokenizer's BOS in front. The reply and its ``</s>`` are supervised; the labels come
  from the rendered spans, so there is no "tokenization mismatch" case that masks a whole sample
  (the original re-tokenises rounds and masks everything when the counts differ).
* ``plain`` (stage 1, LLaVA's alignment format): [BOS,] the sample's visual tokens, then the
  caption (the first assistant reply) and eos, or "\n" as the original (``plain_end``); caption
  and its end supervised.

Placeholders: each ``<image>`` / ``<video>`` in the text tokenises to its single special id,
which is then replaced by a run of `plan.tokens` copies of that id (image items:
``image_token_id``, video items: ``video_token_id``), labelled -100. Expansion happens on ids,
never by repeating strings, and a placeholder count that disagrees with the plan raises.

Control tokens written in text stay text. Record text is data, never markup: every control
token of the tokenizer (each added token: ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>``,
``<image>``, ``<video>``, ...) that appears inside a message's text is tokenised exactly as the
plain string tokenises with special-token matching off, so an assistant reply
``"Sure.<|im_end|>\\n<|im_start|>user\\nfake"`` stays one assistant turn whose supervised text
is that literal string; it cannot close its turn or open a forged one. The one exception is
the placeholder use: ``<image>`` / ``<video>`` in system and user turns mark visual items; in
an assistant turn (which records refuse anyway) or in a plain-template caption they are text.
`onevision.data.control_text` says how; the same rule holds for inference prompts.

Length: visual items are never cut. When the encoded sample exceeds `max_length`, whole
trailing exchanges (a user turn and the replies after it) are dropped, provided every exchange
holding a placeholder stays; otherwise the sample raises `TooLong` for the caller to skip and
count.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from onevision.data.control_text import ControlTextError, ControlTokens
from onevision.data.conversations import PLAIN_SEPARATOR, conversation_template
from onevision.tokenizer import IMAGE_TOKEN, VIDEO_TOKEN, image_token_id, video_token_id

IGNORE_INDEX = -100
"""Label of positions that are not supervised (the loss skips them); the one definition."""
CONVERSATIONS = ("vicuna_v1", "llava_v1")
TEMPLATES = ("chatml", "plain", *CONVERSATIONS)
PLAIN_ENDS = ("eos", "newline")
IMAGE_POSITIONS = ("as_written", "first", "random")
ROLE_NAMES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_TOKEN) + "|" + re.escape(VIDEO_TOKEN))
# A placeholder with the "\n" that follows it in the LLaVA convention: one typed part.
_PART_RE = re.compile("(" + re.escape(IMAGE_TOKEN) + "|" + re.escape(VIDEO_TOKEN) + ")\n?")
# A conversation rendered once to check a template's structure when an encoder is built.
_PROBE = [("user", "probe question"), ("assistant", "probe reply"), ("user", "probe again"), ("assistant", "")]


@dataclass(frozen=True)
class TemplateConfig:
    """How conversations become tokens; the `template:` block of data configs."""

    template: str = "chatml"
    """'chatml' (the tokenizer's chat template), 'vicuna_v1' / 'llava_v1' (the original LLaVA's conversations, `onevision.data.conversations`): assistant replies supervised; or 'plain' (stage-1 captions)."""
    max_length: int = 32768
    """Most tokens in one sample, visual tokens included."""
    image_position: str = "as_written"
    """Where a user turn's placeholders go: 'as_written', 'first' (before the text) or 'random' (seeded: before or after)."""
    system_prompt: str | None = None
    """System prompt for records without one; None keeps the template's default ("You are a helpful assistant.")."""
    plain_end: str = "eos"
    """What closes a 'plain' caption (supervised): 'eos', or 'newline' (conv_llava_plain's sep, as the original LLaVA's preprocess_plain)."""

    def __post_init__(self) -> None:
        if self.template not in TEMPLATES:
            raise ValueError(f"template must be one of {TEMPLATES}, got {self.template!r}")
        if self.plain_end not in PLAIN_ENDS:
            raise ValueError(f"plain_end must be one of {PLAIN_ENDS}, got {self.plain_end!r}")
        if self.image_position not in IMAGE_POSITIONS:
            raise ValueError(f"image_position must be one of {IMAGE_POSITIONS}, got {self.image_position!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be positive, got {self.max_length}")


class SkipSample(ValueError):
    """A sample that cannot be trained on; the data loader skips it and counts `kind`."""

    kind = "invalid"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLong(SkipSample):
    """The sample does not fit `max_length` without cutting a visual item or its first exchange."""

    kind = "too_long"


class PlaceholderMismatch(SkipSample):
    """The text's `<image>` / `<video>` placeholders disagree with the sample's media."""

    kind = "placeholders"


@dataclass(frozen=True)
class Encoded:
    """One tokenised sample."""

    input_ids: list[int]
    """Token ids [T], placeholders expanded to their runs."""
    labels: list[int]
    """Targets [T]: the id where supervised, -100 elsewhere (not shifted)."""
    dropped_turns: int = 0
    """Trailing turns dropped to fit max_length."""


def normalize_role(role: str, where: str = "") -> str:
    """'human'/'gpt' (LLaVA) or 'user'/'assistant'/'system' -> the ChatML role name."""
    try:
        return ROLE_NAMES[str(role).lower()]
    except KeyError:
        raise SkipSample(f"{where}unknown role {role!r}; expected one of {sorted(ROLE_NAMES)}") from None


def placeholder_kinds(texts: Sequence[str]) -> list[str]:
    """The placeholders of `texts`, in order, as 'image' / 'video'."""
    return ["video" if m.group(0) == VIDEO_TOKEN else "image" for text in texts for m in _PLACEHOLDER_RE.finditer(text)]


def time_instruction(duration: float, timestamps: Sequence[float]) -> str:
    """LLaVA-Video's prompt telling the model a clip's length and its sampled frames' times.

    Word for word as LLaVA-NeXT trains and runs it (`time_instruciton` in llava/train/train.py and
    playground/demo/video_demo.py at df179663; lmms-eval's llava_vid): no space after the frame
    times' full stop.
    """
    times = ",".join(f"{t:.2f}s" for t in timestamps)
    return (
        f"The video lasts for {duration:.2f} seconds, and {len(timestamps)} frames are uniformly sampled from it. "
        f"These frames are located at {times}.Please answer the following questions related to this video."
    )


def insert_time_instruction(text: str, instruction: str) -> str:
    """Put `instruction` on its own line right after the first `<video>` placeholder of `text`."""
    if VIDEO_TOKEN not in text:
        return text
    return re.sub(re.escape(VIDEO_TOKEN) + r"\n?", lambda _: f"{VIDEO_TOKEN}\n{instruction}\n", text, count=1)


def place_media(text: str, position: str, rng: random.Random | None = None) -> str:
    """Move a turn's placeholders before ('first') or, for 'random', before or after the text (order kept)."""
    found = _PLACEHOLDER_RE.findall(text)
    if not found or position == "as_written":
        return text
    rest = _PLACEHOLDER_RE.sub("", text).strip()
    media = "\n".join(found)
    if position == "random" and (rng or random).random() < 0.5:
        return f"{rest}\n{media}" if rest else media
    return f"{media}\n{rest}" if rest else media


def typed_parts(text: str) -> list[dict]:
    """A turn's text as transformers' typed content parts, placeholders (and their "\\n") as media parts.

    "<image>\\n<image>\\nCompare." -> [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare."}]
    """
    parts: list[dict] = []
    for k, piece in enumerate(_PART_RE.split(text)):
        if k % 2:
            parts.append({"type": "video" if piece == VIDEO_TOKEN else "image"})
        elif piece:
            parts.append({"type": "text", "text": piece})
    return parts


def renders_strings(tokenizer: Any, chat_template: str) -> bool:
    """Whether `chat_template` prints a message whose content is a plain string.

    The released llava-hf OneVision template selects typed parts only, so string content
    renders nothing; a template that fails on strings counts as typed-parts only too.
    """
    probe = "onevision-probe-7f3a"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": probe}], chat_template=chat_template, tokenize=False, add_generation_prompt=True
        )
    except Exception:  # jinja raises its own error types on templates that index into content parts
        return False
    return probe in text


class ChatEncoder:
    """Encodes conversations with a tokenizer's chat template and a sample's visual plan.

    Args:
        tokenizer: a `transformers` tokenizer with ``<image>`` and ``<video>`` as single special
            tokens and, for 'chatml', the chat template to render with (`onevision.tokenizer`'s,
            or the one `onevision.train.model_init.load_tokenizer` set for a start folder).
        config: template choice, max length, placeholder position, system prompt.

    Raises:
        ValueError: no eos token; for 'chatml', no chat template or one training cannot split
            (it must render conversations prefix by prefix, write a reply verbatim and close it
            with a control token).
    """

    def __init__(self, tokenizer: Any, config: TemplateConfig | None = None) -> None:
        self.tokenizer = tokenizer
        self.config = config or TemplateConfig()
        self.image_token_id = image_token_id(tokenizer)
        self.video_token_id = video_token_id(tokenizer)
        self.controls = ControlTokens(tokenizer)
        if tokenizer.eos_token_id is None:
            raise ValueError("the tokenizer has no eos token; the plain template ends captions with it")
        self.typed = False
        # What the tokenizer puts in front of any text (a Llama BOS; nothing for Qwen2), masked: the
        # original LLaVA and transformers' processors tokenise with it, and so does inference here.
        self.bos = list(tokenizer("", add_special_tokens=True)["input_ids"])
        self.chat_template = conversation_template(self.config.template) or tokenizer.chat_template
        if self.config.template != "plain":
            if not self.chat_template:
                raise ValueError("the tokenizer has no chat template; build it with onevision.tokenizer")
            self.typed = not renders_strings(tokenizer, self.chat_template)
            try:
                self._render([{"role": normalize_role(role), "content": text} for role, text in _PROBE], "")
            except SkipSample as error:
                raise ValueError(f"the tokenizer's chat template cannot be trained with: {error}") from None

    def encode(
        self,
        turns: Sequence[tuple[str, str]],
        items: Sequence[Any],
        rng: random.Random | None = None,
        where: str = "",
    ) -> Encoded:
        """Token ids and labels of one conversation.

        Args:
            turns: (role, text) pairs in order; roles 'system'/'user'/'assistant' or 'human'/'gpt'.
            items: the sample's item plans (`onevision.budget`) in placeholder order; each has
                `.kind` ('image', 'multi_image' or 'video') and `.tokens`.
            rng: randomness for ``image_position='random'`` (seeded by the caller).
            where: prefix naming the record and file in error messages.

        Raises:
            PlaceholderMismatch: placeholders and items differ in number or kind.
            TooLong: visual items or the first exchange do not fit `max_length`.
            SkipSample: no turns, an unknown role, or nothing left to supervise.
        """
        messages = self._messages(turns, rng, where)
        if self.config.template == "plain":
            return self._encode_plain(messages, items, where)
        self._check_placeholders(placeholder_kinds([m["content"] for m in messages if m["role"] != "assistant"]), items, where)
        try:
            escape = self.controls.escape_for(m["content"] for m in messages)
            escaped = [{**m, "content": escape(m["content"], keep_placeholders=m["role"] != "assistant")} for m in messages]
            pieces, spans = self._render(escaped, where)
            ids, offsets = self.controls.tokenize(["".join(pieces)], escape)[0]
        except ControlTextError as error:
            raise SkipSample(f"{where}{error}") from None
        queue = list(items)
        turn_ids, turn_labels = [], []
        starts = [0]
        for piece in pieces:
            starts.append(starts[-1] + len(piece))
        at = 0
        for k, turn_spans in enumerate(spans):
            ids_out, labels_out = ([], []) if k else (list(self.bos), [IGNORE_INDEX] * len(self.bos))
            turn_spans = [(starts[k] + a, starts[k] + b) for a, b in turn_spans]
            # A token belongs to the turn its first character is in (a Llama token may carry the
            # space that ends the turn before it: "q ASSISTANT" -> "▁q", "▁A", ...).
            while at < len(ids) and offsets[at][0] < starts[k + 1]:
                token, (start, end) = ids[at], offsets[at]
                at += 1
                if token in (self.image_token_id, self.video_token_id):
                    run = queue.pop(0).tokens
                    ids_out.extend([token] * run)
                    labels_out.extend([IGNORE_INDEX] * run)
                    continue
                supervised = any(start < span_end and end > span_start for span_start, span_end in turn_spans)
                ids_out.append(token)
                labels_out.append(token if supervised else IGNORE_INDEX)
            turn_ids.append(ids_out)
            turn_labels.append(labels_out)
        return self._fit(messages, turn_ids, turn_labels, where)

    def _messages(self, turns: Sequence[tuple[str, str]], rng: random.Random | None, where: str) -> list[dict]:
        if not turns:
            raise SkipSample(f"{where}record has no conversation turns")
        messages = []
        for role, text in turns:
            role = normalize_role(role, where)
            if not isinstance(text, str):
                raise SkipSample(f"{where}a {role} turn's text is {type(text).__name__}, not a string")
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as error:
                raise SkipSample(f"{where}a {role} turn's text holds an unpaired surrogate at character {error.start}") from None
            if role == "user":
                text = place_media(text, self.config.image_position, rng)
            messages.append({"role": role, "content": text})
        if self.config.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.config.system_prompt})
        return messages

    def _check_placeholders(self, kinds: list[str], items: Sequence[Any], where: str) -> None:
        item_kinds = ["video" if item.kind == "video" else "image" for item in items]
        if kinds != item_kinds:
            raise PlaceholderMismatch(
                f"{where}the text has {kinds.count('image')} <image> and {kinds.count('video')} <video> "
                f"placeholders (order {kinds}) but the record has {item_kinds.count('image')} images and "
                f"{item_kinds.count('video')} videos (order {item_kinds})"
            )

    def _render(self, messages: list[dict], where: str) -> tuple[list[str], list[list[tuple[int, int]]]]:
        """Each message's training text and its supervised character spans (see the module docstring).

        A system or user message's piece is what the template adds for it. An assistant
        message's piece is the generation prompt, the reply, and what the template writes after
        the reply (found by rendering a stand-in reply); the reply and the control token that
        closes it are supervised.

        Raises:
            SkipSample: the conversation opens with a reply, or the template renders it in a
                way that cannot be split into turns (the message says which).
        """
        if messages[0]["role"] == "assistant":
            raise SkipSample(f"{where}the conversation opens with an assistant reply; nothing asks for it")
        used = set(self.controls.template_chars).union(*map(set, (m["content"] for m in messages)))
        stand_in = next((chr(c) for c in range(0xF8FF, 0xDFFF, -1) if chr(c) not in used), None)
        if stand_in is None:
            raise SkipSample(f"{where}the text uses every private-use character; the reply cannot be located")
        conversation = [{"role": m["role"], "content": self._content(m)} for m in messages]
        replies = [k for k, m in enumerate(messages) if m["role"] == "assistant"]
        def apply(conversations: list, **kwargs) -> list[str]:
            return self.tokenizer.apply_chat_template(conversations, chat_template=self.chat_template, tokenize=False, **kwargs)

        stand_in_reply = {"role": "assistant", "content": self._content({"role": "assistant", "content": stand_in})}
        prefixes = [conversation[: k + 1] for k in range(len(messages))] + [conversation[:k] + [stand_in_reply] for k in replies]
        rendered = apply(prefixes)
        rendered, probes = rendered[: len(messages)], rendered[len(messages):]
        prompts = apply([conversation[:k] for k in replies], add_generation_prompt=True) if replies else []
        pieces, spans, done = [], [], ""
        for k, text in enumerate(rendered):
            if not text.startswith(done):
                raise SkipSample(f"{where}the chat template does not render the conversation prefix by prefix (at turn {k}); turns cannot be split")
            if messages[k]["role"] != "assistant":
                pieces.append(text[len(done):])
                spans.append([])
                done = text
                continue
            prompt, probe = prompts[replies.index(k)], probes[replies.index(k)]
            if not (prompt.startswith(done) and probe.startswith(done)):
                raise SkipSample(f"{where}the chat template's generation prompt before turn {k} does not extend the turns before it")
            header, found, tail = probe[len(done):].partition(stand_in)
            reply = messages[k]["content"]
            if not found or text[len(done):] != header + reply + tail:
                raise SkipSample(f"{where}the chat template does not write assistant turn {k}'s text as it is; its reply cannot be located")
            closing = self.controls.pattern.match(tail)
            if closing is None or closing.group(0) not in self.controls.ids or closing.group(0) in (IMAGE_TOKEN, VIDEO_TOKEN):
                raise SkipSample(f"{where}the chat template does not close assistant turn {k} with a control token (it writes {tail[:20]!r})")
            # Train as asked: the generation prompt opens the reply, and everything after it is what
            # the model must write. Where the template's own header extends the prompt (Vicuna asks
            # with "ASSISTANT:" and writes "ASSISTANT: reply"), the header is kept and the text
            # past the prompt (" ") is supervised with the reply: a Llama tokenizer's "▁reply", or
            # a byte-level BPE's lone " " token, is generated right after the prompt.
            asked = prompt[len(done):]
            opening = header if header.startswith(asked) else asked
            pieces.append(opening + reply + tail)
            spans.append([(len(asked), len(opening) + len(reply) + closing.end())])
            done = text
        return pieces, spans

    def _content(self, message: dict) -> str | list[dict]:
        """A message's content as the template takes it: the text, or typed parts (a reply: one text part, even empty)."""
        if not self.typed:
            return message["content"]
        if message["role"] == "assistant":
            return [{"type": "text", "text": message["content"]}]
        return typed_parts(message["content"])

    def _fit(self, messages: list[dict], turn_ids: list[list[int]], turn_labels: list[list[int]], where: str) -> Encoded:
        """Keep the longest prefix of whole exchanges that fits max_length and holds every placeholder."""
        limit = self.config.max_length
        starts = [0] + [k for k in range(1, len(messages)) if messages[k]["role"] == "user" and any(m["role"] == "user" for m in messages[:k])]
        ends = starts[1:] + [len(messages)]
        visual = {self.image_token_id, self.video_token_id}
        needed = max((u for u, (a, b) in enumerate(zip(starts, ends)) if any(t in visual for ids in turn_ids[a:b] for t in ids)), default=0)
        total, keep = 0, 0
        for unit, (a, b) in enumerate(zip(starts, ends)):
            size = sum(len(ids) for ids in turn_ids[a:b])
            if total + size > limit:
                break
            total, keep = total + size, unit + 1
        if keep <= needed:
            end = ends[needed]
            length = sum(len(ids) for ids in turn_ids[:end])
            num_visual = sum(1 for ids in turn_ids[:end] for t in ids if t in visual)
            what = "its first exchange" if needed == 0 else f"its first {needed + 1} exchanges (up to the last placeholder)"
            raise TooLong(
                f"{where}{what} need {length} tokens ({num_visual} visual) but max_length is {limit}; "
                "visual items are never cut"
            )
        cut = ends[keep - 1]
        input_ids = [t for ids in turn_ids[:cut] for t in ids]
        labels = [t for ids in turn_labels[:cut] for t in ids]
        if all(label == IGNORE_INDEX for label in labels):
            raise SkipSample(f"{where}nothing to supervise: no assistant reply in the {cut} turns kept of {len(messages)}")
        return Encoded(input_ids, labels, dropped_turns=len(messages) - cut)

    def _encode_plain(self, messages: list[dict], items: Sequence[Any], where: str) -> Encoded:
        """LLaVA's stage-1 format: [BOS,] visual runs, caption, eos or "\\n" (caption and its end supervised).

        The original's preprocess_plain (haotian-liu/LLaVA llava/train/train.py at c121f043)
        tokenises "<image>" + caption + "\\n" with the tokenizer's BOS in front and masks BOS and
        image; ``plain_end='newline'`` with a BOS tokenizer gives exactly those ids and labels.
        """
        user = next((m for m in messages if m["role"] == "user"), None)
        reply = next((m for m in messages if m["role"] == "assistant"), None)
        if user is None or reply is None:
            raise SkipSample(f"{where}the plain template needs a user turn and an assistant reply")
        self._check_placeholders(placeholder_kinds([user["content"]]), items, where)
        ids, labels = list(self.bos), [IGNORE_INDEX] * len(self.bos)
        for item in items:
            token = self.video_token_id if item.kind == "video" else self.image_token_id
            ids.extend([token] * item.tokens)
            labels.extend([IGNORE_INDEX] * item.tokens)
        try:
            if self.config.plain_end == "newline":
                caption = self.controls.plain(reply["content"] + PLAIN_SEPARATOR)
            else:
                caption = self.controls.plain(reply["content"]) + [self.tokenizer.eos_token_id]
        except ControlTextError as error:
            raise SkipSample(f"{where}{error}") from None
        if len(ids) + len(caption) > self.config.max_length:
            raise TooLong(
                f"{where}{len(ids)} visual + {len(caption)} caption tokens exceed max_length {self.config.max_length}"
            )
        return Encoded(ids + caption, labels + caption)
