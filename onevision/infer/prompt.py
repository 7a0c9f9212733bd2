"""Inference prompts: a conversation that ends with a question -> token ids with visual runs.

Which template renders the conversation (`PROMPT_FORMATS`; `OneVision.from_pretrained` picks
it from the checkpoint's layout, `InferenceConfig.prompt_format` overrides):

* 'chat_template' (transformers `llava_onevision` folders, ours included): the folder's own chat
  template, looked up as transformers' processor does (`chat_template.json`, else
  `chat_template.jinja`; `onevision.checkpoint.files.read_chat_template`), else the tokenizer's,
  else `onevision.tokenizer.CHATML_TEMPLATE`. A template that renders string content (ours,
  Qwen2's) gets each turn's text as it is; one that does not (the released llava-hf OneVision
  template renders only typed parts, `<|im_start|>user <image>\n...` with no system turn) gets
  typed parts: one `{"type": "image"}` / `{"type": "video"}` per placeholder (with the "\n"
  after it) and `{"type": "text"}` for the text around them, as transformers' processor is fed.
  So the prompt ids equal those of `AutoProcessor.from_pretrained(folder)`.
* 'qwen_1_5' (original LLaVA-NeXT `llava_qwen` folders): LLaVA-NeXT's `conv_qwen` conversation
  (`conv_templates["qwen_1_5"]`, SeparatorStyle.CHATML, the template those checkpoints were
  trained and evaluated with): "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
  then "<|im_start|>role\ntext<|im_end|>\n" per turn and "<|im_start|>assistant\n", whatever
  template the tokenizer carries.
* 'vicuna_v1' (original LLaVA `llava_llama` folders; 'llava_v1' on request): the original
  LLaVA's conversation (`onevision.data.conversations`), as its eval scripts ask LLaVA-1.5
  (scripts/v1_5/eval/*.sh: ``--conv-mode vicuna_v1``): "<system> USER: <image>\nq ASSISTANT:".
  transformers `llava` folders (llava-hf) use their own chat template ('chat_template':
  "USER: <image>\n... ASSISTANT:", no system turn).

The template's generation prompt ends every prompt (`<|im_start|>assistant\n`, "ASSISTANT:"). A
tokenizer that puts ids in front of every text (a Llama BOS) gets them in front of the prompt, as
transformers' processor and the original's `tokenizer_image_token` tokenise it. The rendered text is split at
its `<image>` / `<video>` placeholders; the text pieces are tokenised and each placeholder
becomes a run of `plan.tokens` copies of the model's `image_token_id` / `video_token_id`.
Splitting before tokenising means the placeholder ids come from the model config, so a tokenizer
that never learned `<image>` (the original LLaVA-NeXT ones, which splice at id -200 in
`tokenizer_image_token`) still works; where the tokenizer has them as special tokens the ids are
the same as tokenising the whole text.

Control tokens written in a turn's text (``<|im_end|>``, ``<|im_start|>``, ...) are plain text:
they are escaped before rendering and their characters tokenised, never their special ids, so
a question cannot close its turn or forge another (`onevision.data.control_text`). Only
``<image>`` / ``<video>`` in system and user turns act, as placeholders.

Placeholders follow the LLaVA data convention: a question without any gets one `<image>\n`
per image and `<video>\n` for the video in front of its text; a question that has them must
have one per item (a video's may be written `<image>`, as the official video data does).

Multiple choice (LLaVA-OneVision's lmms-eval prompt): the options are listed one per line as
"A. option", followed by "Answer with the option's letter from the given choices directly."
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from onevision.data.control_text import ControlTokens, Escape
from onevision.data.conversations import CONVERSATION_TEMPLATES
from onevision.data.template import renders_strings, typed_parts  # shared with training, so both render alike
from onevision.tokenizer import CHATML_TEMPLATE, DEFAULT_SYSTEM_PROMPT, IM_END, IM_START, IMAGE_TOKEN, VIDEO_TOKEN

PLACEHOLDER = re.compile(re.escape(IMAGE_TOKEN) + "|" + re.escape(VIDEO_TOKEN))
PROMPT_FORMATS = ("auto", "chat_template", "qwen_1_5", *CONVERSATION_TEMPLATES)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
MC_INSTRUCTION = "Answer with the option's letter from the given choices directly."
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def multiple_choice_prompt(question: str, options: Sequence[str]) -> str:
    """The question, its options as lettered lines, and the letter instruction."""
    if not 2 <= len(options) <= len(LETTERS):
        raise ValueError(f"multiple choice needs 2 to {len(LETTERS)} options, got {len(options)}")
    lines = [f"{LETTERS[k]}. {option}" for k, option in enumerate(options)]
    return "\n".join([question.rstrip(), *lines, MC_INSTRUCTION])


def with_placeholders(turns: Sequence[tuple[str, str]], num_images: int, has_video: bool) -> list[tuple[str, str]]:
    """`turns` with one placeholder per item: put before the first user turn's text when no
    turn has any, checked otherwise. A video's placeholder is written `<video>` (an `<image>`
    standing for the only item, a video, is rewritten).

    Raises:
        ValueError: the turns have placeholders, but not one per item.
    """
    turns = [(role, text) for role, text in turns]
    found = [m for _, text in turns for m in PLACEHOLDER.findall(text)]
    expected = num_images + int(has_video)
    if not found:
        if expected:
            first = next((k for k, (role, _) in enumerate(turns) if ROLES.get(role.lower()) == "user"), None)
            if first is None:
                raise ValueError("the conversation has no user turn to put the media in")
            marks = [IMAGE_TOKEN + "\n"] * num_images + [VIDEO_TOKEN + "\n"] * int(has_video)
            turns[first] = (turns[first][0], "".join(marks) + turns[first][1])
        return turns
    if len(found) != expected or found.count(VIDEO_TOKEN) > int(has_video):
        raise ValueError(
            f"the question has {found.count(IMAGE_TOKEN)} {IMAGE_TOKEN} and {found.count(VIDEO_TOKEN)} "
            f"{VIDEO_TOKEN} placeholders but the request has {num_images} image(s) and "
            f"{int(has_video)} video(s); write one placeholder per item or none"
        )
    if has_video and VIDEO_TOKEN not in found:
        if num_images:
            raise ValueError(f"a request with images and a video must mark the video with {VIDEO_TOKEN}")
        turns = [(role, text.replace(IMAGE_TOKEN, VIDEO_TOKEN)) for role, text in turns]
    return turns


def qwen_1_5_prompt(messages: Sequence[dict]) -> str:
    """LLaVA-NeXT's `conv_qwen` ("qwen_1_5") prompt for string `messages`, generation prompt included.

    LLaVA-NeXT llava/conversation.py at df179663ae8b83207df100a1f7af24caec633ff9: system
    "<|im_start|>system\\nYou are a helpful assistant.", roles "<|im_start|>user" /
    "<|im_start|>assistant", sep "<|im_end|>"; SeparatorStyle.CHATML renders
    system + sep + "\\n", then role + "\\n" + message + sep + "\\n" per message, and role + "\\n"
    for the empty assistant message that asks for the answer. A system message replaces the
    default system text.
    """
    system = DEFAULT_SYSTEM_PROMPT
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    text = f"{IM_START}system\n{system}{IM_END}\n"
    for message in messages:
        text += f"{IM_START}{message['role']}\n{message['content']}{IM_END}\n"
    return text + f"{IM_START}assistant\n"


class PromptEncoder:
    """Renders conversations with a chat template (or LLaVA-NeXT's qwen_1_5) and expands placeholders to planned runs.

    Args:
        tokenizer: a `transformers` tokenizer.
        image_token_id, video_token_id: the model's placeholder ids.
        system_prompt: system turn for conversations without one; None keeps the template's
            default ("You are a helpful assistant." for ChatML and qwen_1_5, none for the released
            llava-hf template).
        chat_template: the template to render with ('chat_template' format); None: the
            tokenizer's, else `CHATML_TEMPLATE`.
        prompt_format: 'chat_template', 'qwen_1_5', 'vicuna_v1' or 'llava_v1' (see the module docstring); 'auto' means
            'chat_template' here (`OneVision.from_pretrained` resolves it from the layout).

    Raises:
        ValueError: an unknown prompt_format.
    """

    def __init__(
        self,
        tokenizer,
        image_token_id: int,
        video_token_id: int,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        prompt_format: str = "chat_template",
    ):
        if prompt_format not in PROMPT_FORMATS:
            raise ValueError(f"prompt_format must be one of {PROMPT_FORMATS}, got {prompt_format!r}")
        self.tokenizer = tokenizer
        self.image_token_id = image_token_id
        self.video_token_id = video_token_id
        self.system_prompt = system_prompt
        self.prompt_format = "chat_template" if prompt_format == "auto" else prompt_format
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
        if self.prompt_format in CONVERSATION_TEMPLATES:
            self.chat_template = CONVERSATION_TEMPLATES[self.prompt_format]
        self.typed = self.prompt_format == "chat_template" and not renders_strings(tokenizer, self.chat_template)
        self.controls = ControlTokens(tokenizer)
        self.prefix = list(tokenizer("", add_special_tokens=True)["input_ids"])
        """Ids the tokenizer puts in front of any text (a Llama BOS; none for Qwen2)."""
        self.reply_anchor, self.reply_lead = self._reply_lead()

    def render(self, turns: Sequence[tuple[str, str]]) -> str:
        """The prompt text: every turn, then the assistant's generation prompt."""
        text, escape = self._render(turns)
        return escape.restore(text)

    def _render(self, turns: Sequence[tuple[str, str]]) -> tuple[str, Escape]:
        """The prompt rendered from escaped turns (control tokens in text defused), and the escape."""
        messages = []
        for role, text in turns:
            if role.lower() not in ROLES:
                raise ValueError(f"unknown role {role!r}; expected one of {sorted(ROLES)}")
            messages.append({"role": ROLES[role.lower()], "content": text})
        if not messages or messages[-1]["role"] != "user":
            raise ValueError("an inference conversation must end with a user turn")
        if self.system_prompt is not None and messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        escape = self.controls.escape_for(m["content"] for m in messages)
        messages = [{**m, "content": escape(m["content"], keep_placeholders=m["role"] != "assistant")} for m in messages]
        if self.prompt_format == "qwen_1_5":
            return qwen_1_5_prompt(messages), escape
        if self.typed:
            messages = [{"role": m["role"], "content": typed_parts(m["content"])} for m in messages]
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
        ), escape

    def encode(self, turns: Sequence[tuple[str, str]], plans: Sequence) -> torch.Tensor:
        """Token ids [T] of the prompt, each placeholder expanded to its item's `plan.tokens`.

        Raises:
            ValueError: placeholders and item plans differ in number or kind.
        """
        text, escape = self._render(turns)
        pieces = PLACEHOLDER.split(text)
        marks = PLACEHOLDER.findall(text)
        kinds = ["video" if m == VIDEO_TOKEN else "image" for m in marks]
        item_kinds = ["video" if p.kind == "video" else "image" for p in plans]
        if kinds != item_kinds:
            raise ValueError(
                f"the prompt's placeholders {kinds} do not match the request's media {item_kinds}"
            )
        ids: list[int] = list(self.prefix)
        for k, (piece_ids, _) in enumerate(self.controls.tokenize(pieces, escape)):
            ids.extend(piece_ids)
            if k < len(plans):
                token = self.video_token_id if plans[k].kind == "video" else self.image_token_id
                ids.extend([token] * plans[k].tokens)
        return torch.tensor(ids, dtype=torch.long)

    def encode_text(self, text: str) -> list[int]:
        """Ids of plain text (no specials added; control tokens in it tokenised as text)."""
        return self.controls.plain(text)

    def encode_reply(self, text: str) -> list[int]:
        """Ids of `text` as a reply right after the prompt, as training tokenises it there.

        A template that writes more between its generation prompt and the reply than the prompt
        holds (vicuna_v1 asks with "ASSISTANT:" and trains on "ASSISTANT: reply") puts that text in
        front of the reply: the ids are those "ASSISTANT: reply" adds to "ASSISTANT:" (a
        byte-level BPE's " reply", a Llama tokenizer's "▁reply"). ChatML adds nothing.
        """
        if not self.reply_lead:
            return self.controls.plain(text)
        anchor = self.controls.plain(self.reply_anchor)
        ids = self.controls.plain(self.reply_anchor + self.reply_lead + text)
        if ids[: len(anchor)] != anchor:
            return self.controls.plain(self.reply_lead + text)
        return ids[len(anchor):]

    def _reply_lead(self) -> tuple[str, str]:
        """(the generation prompt's text, what the template writes after it before a reply)."""
        if self.prompt_format == "qwen_1_5" or self.typed:
            return "", ""
        stand_in = "\uf8ff"
        user = [{"role": "user", "content": "q"}]
        render = self.tokenizer.apply_chat_template
        done = render(user, chat_template=self.chat_template, tokenize=False)
        prompt = render(user, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True)
        probe = render(user + [{"role": "assistant", "content": stand_in}], chat_template=self.chat_template, tokenize=False)
        before = probe.partition(stand_in)[0]
        if not (prompt.startswith(done) and before.startswith(prompt)):
            return "", ""
        return prompt[len(done):], before[len(prompt):]
