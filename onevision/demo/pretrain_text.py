"""Pretraining the Qwen2-shaped decoder on the synthetic world's text (causal language modelling).

Real LLaVA-OneVision starts from a pretrained, instruction-tuned Qwen2. The demo makes its
own small counterpart the same way, on the world's words:

* plain sentences about scenes and clips (`onevision.world.world_texts`);
* text-only chats in ChatML, rendered by the tokenizer's own chat template, where the user
  describes a scene in words and asks the world's questions about it ("What colour is the
  shape? Answer with one of: red, green, blue, yellow.") and the assistant answers. This plays
  the part of instruction tuning: the decoder learns the chat format and to answer from a
  description, so the later stages only have to make visual tokens read like one.

Token streams are concatenated (each text ends with `<|endoftext|>`) and cut into rows of
`seq_len`, as GPT-style pretraining does. The result is saved with
`Qwen2ForCausalLM.save_pretrained` plus the tokenizer: the Qwen2 folder that
`onevision.checkpoint.from_components` reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import Qwen2ForCausalLM, get_cosine_schedule_with_warmup

from onevision.model.config import TextConfig
from onevision.model.onevision import qwen2_config
from onevision.utils.progress import progress_bar
from onevision.world import (
    COLOURS,
    QUADRANTS,
    SHAPES,
    caption,
    random_scene,
    world_texts,
)

ANSWER_PREFIX = " Answer with one of: "


@dataclass(frozen=True)
class TextPretrainConfig:
    """Decoder language-model pretraining on world text."""

    sentences: int = 4000
    """Plain world sentences (`world_texts`)."""
    chats: int = 4000
    """Text-only ChatML question-answer conversations about described scenes."""
    steps: int = 120
    """Optimizer steps."""
    batch_size: int = 16
    """Rows per step."""
    seq_len: int = 128
    """Tokens per row (texts are concatenated and cut)."""
    lr: float = 3e-3
    """Peak AdamW learning rate."""
    warmup_steps: int = 30
    """Linear warmup steps before the cosine decay (transformers' `get_cosine_schedule_with_warmup`,
    the schedule the curriculum stages take too)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""

    def __post_init__(self) -> None:
        if self.steps < 1 or self.warmup_steps < 0:
            raise ValueError(f"{type(self).__name__}: need steps >= 1 and warmup_steps >= 0, got {self.steps}, {self.warmup_steps}")


def _options(choices) -> str:
    return ANSWER_PREFIX + ", ".join(choices) + "."


def text_chats(n: int, seed: int = 0, image_size: int = 64) -> list[list[dict]]:
    """`n` ChatML conversations: a scene described in words, one of the world's single-image
    questions about it, and its answer (messages as `apply_chat_template` takes them)."""
    rng = np.random.default_rng([seed, 0x7C4A])
    chats = []
    for _ in range(n):
        kind = int(rng.integers(4))
        count = 1 if kind < 2 else int(rng.integers(1, 5))
        scene = random_scene(rng, image_size, count)
        described = caption(scene)
        if kind == 0:
            question, answer = "What colour is the shape?" + _options(COLOURS), scene.objects[0].colour
        elif kind == 1:
            question, answer = "What shape is shown?" + _options(SHAPES), scene.objects[0].shape
        elif kind == 2:
            question, answer = "How many shapes are there?" + _options(("1", "2", "3", "4")), str(count)
        else:
            obj = scene.objects[int(rng.integers(count))]
            question = f"Where is the {obj.colour} {obj.shape}?" + _options(QUADRANTS)
            answer = obj.quadrant(image_size)
        chats.append(
            [
                {"role": "user", "content": described[0].upper() + described[1:] + "\n" + question},
                {"role": "assistant", "content": answer},
            ]
        )
    return chats


def pretraining_texts(config: TextPretrainConfig, tokenizer, seed: int) -> list[str]:
    """The corpus: world sentences and rendered chats, shuffled with `seed`."""
    texts = world_texts(config.sentences, seed)
    chats = text_chats(config.chats, seed)
    texts += [tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats]
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(texts))
    return [texts[i] for i in order]


def token_rows(texts: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Texts joined with `<|endoftext|>` and cut into rows: LongTensor [N, seq_len]."""
    eos = tokenizer.pad_token_id
    stream: list[int] = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        stream.extend(ids)
        stream.append(eos)
    rows = len(stream) // seq_len
    if rows == 0:
        raise ValueError(f"pretraining text holds {len(stream)} tokens, fewer than one row of {seq_len}")
    return torch.tensor(stream[: rows * seq_len], dtype=torch.long).view(rows, seq_len)


def pretrain_text(
    text: TextConfig,
    tokenizer,
    config: TextPretrainConfig,
    out_dir: str | Path,
    *,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Train a Qwen2 decoder of shape `text` on world text and save it to `out_dir`.

    Args:
        text: decoder shape (`vocab_size` must cover the tokenizer).
        tokenizer: a tokenizer from `onevision.tokenizer` (ChatML template).
        config: corpus size and optimisation settings.
        out_dir: where `save_pretrained` writes the model and the tokenizer.
        seed: seeds the corpus, the weights and the batch order.

    Returns:
        The training loss of every step.

    Raises:
        ValueError: the tokenizer has more tokens than the decoder's vocabulary.
    """
    if len(tokenizer) > text.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but the decoder only {text.vocab_size} rows")
    rows = token_rows(pretraining_texts(config, tokenizer, seed), tokenizer, config.seq_len)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(qwen2_config(text))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, config.steps)
    order = torch.Generator().manual_seed(seed)
    losses = []
    for _ in progress_bar(range(config.steps), desc="pretrain decoder", disable=not progress):
        batch = rows[torch.randint(len(rows), (config.batch_size,), generator=order)]
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return losses
