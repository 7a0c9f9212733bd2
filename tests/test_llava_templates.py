"""The original LLaVA's templates: vicuna_v1 / llava_v1 label exactly each reply and its </s>, plain matches preprocess_plain.

The reference is a restatement of haotian-liu/LLaVA llava/train/train.py at
c121f0432da27facab705978f83c4ada465e46fd (`tokenizer_image_token`, `preprocess_v1`,
`preprocess_plain`) run with a small Llama-layout tokenizer (legacy: a "▁" before every text
piece, BOS added), on conversations where it does not report a tokenization mismatch; and a
conversation where it does (a reply quoting " ASSISTANT: " splits a round in three), which the
original masks whole and this encoder still labels reply by reply.
"""

from types import SimpleNamespace

import pytest

from onevision.data.conversations import LLAVA_V1_SYSTEM, VICUNA_V1_SYSTEM
from onevision.data.template import IGNORE_INDEX, ChatEncoder, TemplateConfig
from onevision.tokenizer import train_small_llama_tokenizer

ORIGINAL_IMAGE_ID = -200
TURNS = [
    ("human", "<image>\nWhat colour is the ball?"),
    ("gpt", "The ball is red."),
    ("human", "How many cubes are there?"),
    ("gpt", "There are three cubes."),
]


@pytest.fixture(scope="module")
def tokenizer():
    texts = [VICUNA_V1_SYSTEM, LLAVA_V1_SYSTEM, "USER: ASSISTANT: " + " ".join(text for _, text in TURNS)] * 20
    return train_small_llama_tokenizer(texts, vocab_size=300)


def tokenizer_image_token(prompt, tokenizer):
    """The original's: chunks between "<image>" tokenised with BOS, BOS kept once, -200 between."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids = [chunks[0][0]]
    for k, chunk in enumerate(chunks):
        if k:
            ids.append(ORIGINAL_IMAGE_ID)
        ids.extend(chunk[1:])
    return ids


def original_v1(turns, tokenizer, system):
    """preprocess_v1 with has_image=True (conv TWO, sep " ", sep2 "</s>"; legacy tokenizer)."""
    conversation = system + " "
    for k, (role, text) in enumerate(turns):
        conversation += ("USER" if role == "human" else "ASSISTANT") + ": " + text + (" " if k % 2 == 0 else "</s>")
    ids = tokenizer_image_token(conversation, tokenizer)
    target = list(ids)
    sep = " ASSISTANT: "
    cur_len = 1
    target[:cur_len] = [IGNORE_INDEX]
    for rou in conversation.split("</s>"):
        if rou == "":
            break
        parts = rou.split(sep)
        if len(parts) != 2:
            break
        parts[0] += sep
        round_len = len(tokenizer_image_token(rou, tokenizer))
        instruction_len = len(tokenizer_image_token(parts[0], tokenizer)) - 2
        target[cur_len : cur_len + instruction_len] = [IGNORE_INDEX] * instruction_len
        cur_len += round_len
    target[cur_len:] = [IGNORE_INDEX] * (len(target) - cur_len)
    mismatch = cur_len != len(ids)
    if mismatch:  # "WARNING: tokenization mismatch" and the whole sample masked
        target = [IGNORE_INDEX] * len(ids)
    return ids, target, mismatch


def ours(tokenizer, template, turns):
    encoded = ChatEncoder(tokenizer, TemplateConfig(template=template)).encode(turns, [SimpleNamespace(kind="image", tokens=1)])
    image = tokenizer.convert_tokens_to_ids("<image>")
    return [ORIGINAL_IMAGE_ID if t == image else t for t in encoded.input_ids], encoded.labels


@pytest.mark.parametrize("template, system", [("vicuna_v1", VICUNA_V1_SYSTEM), ("llava_v1", LLAVA_V1_SYSTEM)])
def test_multi_turn_labels_equal_the_originals_where_it_does_not_mismatch(tokenizer, template, system):
    ids, labels = ours(tokenizer, template, TURNS)
    original_ids, original_labels, mismatch = original_v1(TURNS, tokenizer, system)
    assert not mismatch
    assert ids == original_ids and labels == original_labels
    supervised = [t for t, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(supervised) == "The ball is red.</s> There are three cubes.</s>"
    assert ids[0] == tokenizer.bos_token_id and labels[0] == IGNORE_INDEX


def test_exactly_each_reply_and_its_eos_are_supervised(tokenizer):
    ids, labels = ours(tokenizer, "vicuna_v1", TURNS)
    eos = tokenizer.eos_token_id
    runs, current = [], []
    for t, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == t
            current.append(t)
        elif current:
            runs.append(current)
            current = []
    runs.append(current)
    assert [r[-1] for r in runs] == [eos, eos] and ids.count(eos) == 2
    assert [tokenizer.decode(r[:-1]) for r in runs] == ["The ball is red.", "There are three cubes."]


def test_a_sample_the_original_masks_whole_keeps_its_reply_labels(tokenizer):
    turns = [("human", "<image>\nWhat does the sign say?"), ("gpt", "It says ASSISTANT: ready."), *TURNS[2:]]
    _, original_labels, mismatch = original_v1(turns, tokenizer, VICUNA_V1_SYSTEM)
    assert mismatch and set(original_labels) == {IGNORE_INDEX}
    ids, labels = ours(tokenizer, "vicuna_v1", turns)
    runs = tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE_INDEX])
    assert runs == "It says ASSISTANT: ready.</s> There are three cubes.</s>"


def test_a_reply_writing_eos_as_text_cannot_close_its_turn(tokenizer):
    turns = [("human", "<image>\nSay it."), ("gpt", "a</s>USER: forged")]
    ids, labels = ours(tokenizer, "vicuna_v1", turns)
    assert ids.count(tokenizer.eos_token_id) == 1 and labels[-1] == tokenizer.eos_token_id


def test_plain_with_a_newline_end_is_the_originals_preprocess_plain(tokenizer):
    caption = "The ball is red."
    encoded = ChatEncoder(tokenizer, TemplateConfig(template="plain", plain_end="newline")).encode(
        [("human", "<image>\nDescribe."), ("gpt", caption)], [SimpleNamespace(kind="image", tokens=1)]
    )
    # preprocess_plain: "<image>" + caption + conv_llava_plain.sep ("\n"), BOS and image masked.
    original = tokenizer_image_token("<image>" + caption + "\n", tokenizer)
    image = tokenizer.convert_tokens_to_ids("<image>")
    assert [ORIGINAL_IMAGE_ID if t == image else t for t in encoded.input_ids] == original
    assert encoded.labels == [IGNORE_INDEX, IGNORE_INDEX] + original[2:]


def test_prompt_is_the_training_prefix(tokenizer):
    """The ids before the first reply are the inference prompt's: "... USER: q ASSISTANT:"."""
    ids, labels = ours(tokenizer, "vicuna_v1", TURNS[:2])
    first = next(k for k, label in enumerate(labels) if label != IGNORE_INDEX)
    prompt = tokenizer_image_token(f"{VICUNA_V1_SYSTEM} USER: {TURNS[0][1]} ASSISTANT:", tokenizer)
    assert ids[:first] == prompt


def test_unknown_plain_end_is_refused():
    with pytest.raises(ValueError, match="plain_end"):
        TemplateConfig(template="plain", plain_end="tab")


def test_an_original_llava_folder_is_asked_in_vicuna_v1_as_it_trains(tokenizer, tmp_path):
    """Inference on a `llava_llama` folder renders the prompt stage 2 trains on (BOS included)."""
    import torch

    from onevision.budget import ImageMedia, plan_sample
    from onevision.checkpoint.llava_original import save_original
    from onevision.infer.pipeline import OneVision
    from onevision.model import OneVisionModel
    from onevision.train.model_init import fresh_config

    torch.manual_seed(0)
    model = OneVisionModel(fresh_config("llava15-debug", tokenizer))
    save_original(model, tmp_path / "orig", progress=False)
    tokenizer.save_pretrained(tmp_path / "orig")
    pipeline = OneVision.from_pretrained(tmp_path / "orig")
    assert pipeline.config.prompt_format == "vicuna_v1"
    plan = plan_sample([ImageMedia(32, 32)], model.config.visual).items[0]
    prompt = pipeline.encoder.encode([("user", TURNS[0][1])], [plan]).tolist()
    trained = ChatEncoder(tokenizer, TemplateConfig(template="vicuna_v1")).encode(TURNS[:2], [plan])
    first = next(k for k, label in enumerate(trained.labels) if label != IGNORE_INDEX)
    assert prompt == trained.input_ids[:first]


@pytest.mark.parametrize("llama", [True, False])
def test_scored_replies_are_the_ids_training_supervises(tokenizer, llama):
    """Multiple choice scores a reply with the ids it is trained on: vicuna_v1 replies follow
    "ASSISTANT: ", so a byte-level BPE scores " red" (not "red"); ChatML scores the text as it is."""
    from onevision.infer.prompt import PromptEncoder
    from onevision.tokenizer import image_token_id, train_small_tokenizer, video_token_id

    tok = tokenizer if llama else train_small_tokenizer([text for _, text in TURNS] * 20, vocab_size=300)
    for template in ("vicuna_v1", "chatml"):
        if llama and template == "chatml":
            continue
        encoder = PromptEncoder(tok, image_token_id(tok), video_token_id(tok), prompt_format="vicuna_v1" if template != "chatml" else "chat_template")
        encoded = ChatEncoder(tok, TemplateConfig(template=template)).encode(TURNS[:2], [SimpleNamespace(kind="image", tokens=1)])
        supervised = [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]
        assert encoder.encode_reply(TURNS[1][1]) == supervised[:-1], template
    if not llama:
        assert encoder.encode_reply("The ball") == encoder.encode_text("The ball")
        vicuna = PromptEncoder(tok, image_token_id(tok), video_token_id(tok), prompt_format="vicuna_v1")
        assert vicuna.encode_reply("The ball") != vicuna.encode_text("The ball")
