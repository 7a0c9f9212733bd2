"""The original LLaVA's conversation formats, written as chat templates.

haotian-liu/LLaVA llava/conversation.py at c121f0432da27facab705978f83c4ada465e46fd:

* ``conv_vicuna_v1`` ("v1" / "vicuna_v1", LLaVA-1.5's stage 2 and eval): system "A chat between a
  curious user and an artificial intelligence assistant. The assistant gives helpful, detailed,
  and polite answers to the user's questions.", roles ``USER`` / ``ASSISTANT``,
  SeparatorStyle.TWO with sep " " and sep2 "</s>": ``system + " "``, then ``role + ": " + message``
  closed by " " (user) or "</s>" (assistant), and ``"ASSISTANT:"`` (no space) to ask for a reply.
* ``conv_llava_v1`` ("llava_v1", LLaVA v1's stage 2): the same with "human" for "user" in the
  system text.
* ``conv_llava_plain`` ("plain", stage 1): the image, then the caption, then sep "\\n"; not a
  chat template (`onevision.data.template` encodes it directly).

The templates close a reply with the tokenizer's ``eos_token`` (transformers passes the special
tokens to the template), which is "</s>" for the Llama / Vicuna tokenizers these were trained
with; so the closing is a real control token, found from the rendered spans and supervised with
the reply. A system message replaces the default system text, as a conversation's ``system``
field does in the original. Content is a string (placeholders written in it, as the original
writes "<image>\\n" into the first user turn).
"""

from __future__ import annotations

VICUNA_V1_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
LLAVA_V1_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)


def two_separator_template(system: str) -> str:
    """A Jinja chat template rendering SeparatorStyle.TWO with `system`, roles USER / ASSISTANT."""
    escaped = system.replace("\\", "\\\\").replace("'", "\\'")
    return (
        "{%- if messages and messages[0]['role'] == 'system' -%}"
        "{%- set system = messages[0]['content'] -%}{%- set turns = messages[1:] -%}"
        "{%- else -%}"
        "{%- set system = '" + escaped + "' -%}{%- set turns = messages -%}"
        "{%- endif -%}"
        "{{- system + ' ' -}}"
        "{%- for message in turns -%}"
        "{%- if message['role'] == 'assistant' -%}{{- 'ASSISTANT: ' + message['content'] + eos_token -}}"
        "{%- else -%}{{- 'USER: ' + message['content'] + ' ' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
    )


CONVERSATION_TEMPLATES = {
    "vicuna_v1": two_separator_template(VICUNA_V1_SYSTEM),
    "llava_v1": two_separator_template(LLAVA_V1_SYSTEM),
}
"""Template name -> Jinja chat template, for the names `TemplateConfig.template` and inference accept."""

PLAIN_SEPARATOR = "\n"
"""conv_llava_plain's sep: what the original writes after a stage-1 caption (supervised)."""


def conversation_template(name: str) -> str | None:
    """The chat template of a named LLaVA conversation format, None for names that are not one."""
    return CONVERSATION_TEMPLATES.get(name)
