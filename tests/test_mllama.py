"""The cross-attention family (transformers `mllama`) against transformers, on the `mllama-debug` size.

Tiles, aspect-ratio ids/masks, placeholders and pixels against `MllamaProcessor` with
`MllamaImageProcessorPil`; the cross-attention mask for padded and packed batches; logits both
ways through the files (ours -> `from_pretrained`, `save_pretrained` -> ours); greedy
generation with a Llama-3-style chat template; and the frozen-decoder guarantee.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers_mllama import IMAGE, llama3_tokenizer, open_gates, our_inputs, random_image, spread_weights
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from transformers import AutoImageProcessor, MllamaForConditionalGeneration, MllamaProcessor
from transformers.models.mllama.image_processing_pil_mllama import (
    MllamaImageProcessorPil,
    get_image_size_fit_to_canvas,
    get_optimal_tiled_canvas,
)

from onevision.budget.mllama_tiles import (
    MllamaBudget,
    MllamaTileSettings,
    optimal_tiled_canvas,
    plan_mllama_image,
    plan_mllama_sample,
    size_fit_to_canvas,
)
from onevision.budget.planner import BudgetError
from onevision.checkpoint.files import CheckpointError
from onevision.checkpoint.mllama import load_mllama, read_mllama_normalization, save_mllama
from onevision.data.cross_attention import (
    packed_cross_attention_mask,
    padded_cross_attention_mask,
    segments_from_position_ids,
)
from onevision.model.mllama import MllamaVLM, bare_decoder, frozen_decoder_trainable, select_trainable
from onevision.model.mllama_config import PRESETS
from onevision.processing.mllama import MLLAMA_NORMALIZATION, mllama_tiles, stack_mllama_images
from onevision.processing.normalize import ImageNormalization

CONFIG = PRESETS["mllama-debug"]
TOL = 1e-4
SIZES = [(40, 70), (100, 20), (15, 15), (28, 56), (90, 90), (3, 200)]


@pytest.fixture(scope="module")
def tokenizer():
    return llama3_tokenizer(CONFIG)


@pytest.fixture(scope="module")
def processor(tokenizer):
    tiles = CONFIG.tiles()
    image_processor = MllamaImageProcessorPil(size={"height": tiles.tile_size, "width": tiles.tile_size}, max_image_tiles=tiles.max_num_tiles)
    return MllamaProcessor(image_processor, tokenizer)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = MllamaVLM(CONFIG).eval()
    spread_weights(model)
    open_gates(model)
    return model


def _prompt(tokenizer, images: int, text: str = "What is it?") -> str:
    parts = [{"type": "image"}] * images + [{"type": "text", "text": text}]
    return tokenizer.apply_chat_template([{"role": "user", "content": parts}], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("max_tiles", [1, 2, 4, 6])
def test_canvas_and_resize_match_transformers(max_tiles):
    for height in range(1, 200, 9):
        for width in range(1, 200, 11):
            canvas = optimal_tiled_canvas(height, width, max_tiles, 28)
            assert canvas == tuple(int(v) for v in get_optimal_tiled_canvas(height, width, max_tiles, 28)), (height, width)
            fitted = get_image_size_fit_to_canvas(height, width, *canvas, 28)
            assert size_fit_to_canvas(height, width, *canvas, 28) == tuple(int(v) for v in fitted), (height, width)


def test_tiles_placeholders_and_pixels_match_the_processor(tokenizer, processor):
    images = [[random_image(h, w, seed=i) for i, (h, w) in enumerate(SIZES[:2])], [random_image(*SIZES[2], seed=5)]]
    prompts = [_prompt(tokenizer, 2), _prompt(tokenizer, 1, "Describe the picture please.")]
    theirs = processor(images=images, text=prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    ids = theirs["input_ids"]
    assert [(row == CONFIG.image_token_id).sum().item() for row in ids] == [2, 1]  # one <|image|> per image
    mine = our_inputs(CONFIG, ids, images)
    for name in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"):
        assert mine[name].dtype == theirs[name].dtype and torch.equal(mine[name], theirs[name]), name
    plan = plan_mllama_sample([(im.height, im.width) for im in images[0]], text_tokens=int((ids[0] != CONFIG.text.pad_token_id).sum()) - 2, settings=CONFIG.tiles())
    assert plan.num_tiles == [4, 4] == [int(m.sum()) for m in theirs["aspect_ratio_mask"][0]]
    assert plan.cross_attention_tokens == 8 * 5  # (28 / 14)^2 patches + 1 class token per tile
    assert plan.decoder_tokens == int((ids[0] != CONFIG.text.pad_token_id).sum())


@pytest.mark.parametrize("size", SIZES)
def test_pixels_bit_identical_per_size(processor, size):
    image = random_image(*size, seed=sum(size))
    theirs = processor.image_processor([[image]], return_tensors="pt")
    mine = our_inputs(CONFIG, torch.tensor([[CONFIG.image_token_id]]), [[image]])
    assert torch.equal(mine["pixel_values"], theirs["pixel_values"])
    assert torch.equal(mine["aspect_ratio_ids"], theirs["aspect_ratio_ids"])


def test_budget_error_names_both_counts():
    settings = MllamaTileSettings(tile_size=28, patch_size=14, max_num_tiles=4)
    plan = plan_mllama_sample([(28, 112), (28, 28)], text_tokens=10, settings=settings, budget=MllamaBudget(12, 25))
    assert (plan.decoder_tokens, plan.cross_attention_tokens) == (12, 25)
    with pytest.raises(BudgetError, match=r"sample 7: 12 decoder tokens \(budget 12\) and 25 cross-attention tokens in 5 tiles \(budget 24\)"):
        plan_mllama_sample([(28, 112), (28, 28)], 10, settings, MllamaBudget(12, 24), where="sample 7")
    with pytest.raises(BudgetError, match=r"13 decoder tokens \(budget 12\) and 25 cross-attention"):
        plan_mllama_sample([(28, 112), (28, 28)], 11, settings, MllamaBudget(12, None))


def test_padded_mask_matches_transformers_with_groups_and_padding(processor, tokenizer):
    texts = [f"{IMAGE}{IMAGE}a b{IMAGE}c", f"x y {IMAGE}z", f"{IMAGE} only"]
    images = [[random_image(20, 20), random_image(28, 56), random_image(84, 28)], [random_image(28, 84)], [random_image(90, 20)]]
    theirs = processor(images=images, text=texts, padding=True, return_tensors="pt")
    num_tiles = [[plan_mllama_image(im.height, im.width, CONFIG.tiles()).num_tiles for im in row] for row in images]
    assert num_tiles == [[1, 2, 3], [3], [4]]  # partly masked tiles are covered
    mine = padded_cross_attention_mask(theirs["input_ids"], num_tiles, 4, CONFIG.image_token_id)
    assert torch.equal(mine, theirs["cross_attention_mask"])
    with pytest.raises(ValueError, match="row 1: 1 image tokens .* but 2 images"):
        padded_cross_attention_mask(theirs["input_ids"], [num_tiles[0], num_tiles[1] * 2, num_tiles[2]], 4, CONFIG.image_token_id)


def test_packed_mask_keeps_samples_apart():
    image = CONFIG.image_token_id
    a, b, c = [1, image, 5, 6], [image, image, 7, 8, 9], [2, 3]  # c has no image
    row = torch.tensor([a + b + c])
    position_ids = torch.tensor([list(range(len(a))) + list(range(len(b))) + list(range(len(c)))])
    segments = segments_from_position_ids(position_ids)
    assert segments == [[(0, 4), (4, 9), (9, 11)]]
    mask = packed_cross_attention_mask(row, segments, [[2, 3, 1]], 4, image)
    alone_a = padded_cross_attention_mask(torch.tensor([a]), [[2]], 4, image)[0]
    alone_b = padded_cross_attention_mask(torch.tensor([b]), [[3, 1]], 4, image)[0]
    assert torch.equal(mask[0, 0:4, 0:1], alone_a) and not mask[0, 0:4, 1:].any()
    assert torch.equal(mask[0, 4:9, 1:3], alone_b) and not mask[0, 4:9, 0].any()
    assert not mask[0, 9:].any()  # the imageless sample sees nothing, not a's or b's images
    # Unpacked on one row, a's image would run on into b and c: packing must cut it.
    assert padded_cross_attention_mask(row, [[2, 3, 1]], 4, image)[0, 9, 2].any()


def _packed_vs_alone(model, tokenizer):
    """Logits of three samples (image, image, no image) packed in one row, and each alone."""
    settings = CONFIG.tiles()
    samples = [
        (tokenizer([_prompt(tokenizer, 1, "Colour?")], add_special_tokens=False, return_tensors="pt")["input_ids"], [random_image(40, 70)]),
        (tokenizer([_prompt(tokenizer, 1, "What shape?")], add_special_tokens=False, return_tensors="pt")["input_ids"], [random_image(90, 20, seed=2)]),
        (tokenizer(["<|begin_of_text|>plain text here"], add_special_tokens=False, return_tensors="pt")["input_ids"], []),
    ]
    alone = [_logits(model, ids, our_inputs(CONFIG, ids, [images]) if images else None) for ids, images in samples]
    row = torch.cat([ids for ids, _ in samples], 1)
    position_ids = torch.cat([torch.arange(ids.shape[1]) for ids, _ in samples])[None]
    images = [image for _, sample_images in samples for image in sample_images]
    plans = [plan_mllama_image(image.height, image.width, settings) for image in images]
    tiles = [mllama_tiles(image, plan, settings.tile_size) for image, plan in zip(images, plans)]
    pixels = stack_mllama_images([list(zip(tiles, plans))], settings.max_num_tiles)
    mask = packed_cross_attention_mask(row, segments_from_position_ids(position_ids), pixels.num_tiles, settings.max_num_tiles, CONFIG.image_token_id)
    packed = _logits(model, row, {
        "pixel_values": pixels.pixel_values, "aspect_ratio_ids": pixels.aspect_ratio_ids,
        "aspect_ratio_mask": pixels.aspect_ratio_mask, "cross_attention_mask": mask, "position_ids": position_ids,
    })
    starts = position_ids[0].eq(0).nonzero().flatten().tolist() + [row.shape[1]]
    return [packed[:, a:b] for a, b in zip(starts, starts[1:])], alone


def test_packed_row_gives_each_sample_its_own_logits(model, tokenizer):
    reference = MllamaVLM(CONFIG, text_rows="reference").eval()
    reference.load_state_dict(model.state_dict())
    packed, alone = _packed_vs_alone(reference, tokenizer)
    for i, (p, a) in enumerate(zip(packed, alone)):
        assert (p - a).abs().max().item() <= TOL, f"sample {i}"
    # transformers 5.24 lets rows that see no image attend to every tile of the row (issue
    # #39379): the imageless sample reads its neighbours' images. If this starts failing,
    # transformers has changed and "reference" may become the default.
    packed, alone = _packed_vs_alone(model, tokenizer)
    assert (packed[2] - alone[2]).abs().max().item() > 1e-3


def _logits(model, ids, inputs=None):
    with torch.no_grad():
        return model(input_ids=ids, **(inputs or {})).logits


def test_ours_saved_loads_in_transformers(tmp_path, model, tokenizer):
    save_mllama(model, tmp_path)
    theirs, info = MllamaForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    ids = tokenizer([_prompt(tokenizer, 2)], add_special_tokens=False, return_tensors="pt")["input_ids"]
    inputs = our_inputs(CONFIG, ids, [[random_image(40, 70), random_image(90, 20, seed=1)]])
    expected = _logits(theirs.eval(), ids, inputs)
    assert (expected - _logits(model, ids, inputs)).abs().max().item() <= TOL
    assert (expected - _logits(model, ids)).abs().max().item() > 1e-3  # the images matter here


def test_transformers_saved_loads_in_ours(tmp_path, tokenizer):
    torch.manual_seed(1)
    theirs = MllamaForConditionalGeneration(CONFIG.to_hf()).eval()
    spread_weights(theirs, seed=1)
    open_gates(theirs, -0.4)
    theirs.save_pretrained(tmp_path)
    ours = load_mllama(tmp_path)
    assert ours.config == CONFIG
    ids = tokenizer([_prompt(tokenizer, 1)], add_special_tokens=False, return_tensors="pt")["input_ids"]
    inputs = our_inputs(CONFIG, ids, [[random_image(100, 20)]])
    assert (_logits(theirs, ids, inputs) - _logits(ours, ids, inputs)).abs().max().item() <= TOL


def test_pixel_settings_round_trip_through_transformers(tmp_path, model):
    clip = ImageNormalization(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711), resample="bicubic")
    save_mllama(model, tmp_path, normalization=clip)
    assert read_mllama_normalization(tmp_path, CONFIG) == clip
    theirs = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(theirs).__name__ == "MllamaImageProcessorPil"
    image = random_image(40, 70)
    plan = plan_mllama_image(40, 70, CONFIG.tiles())
    expected = theirs([[image]], return_tensors="pt")["pixel_values"][0, 0, : plan.num_tiles]
    assert torch.equal(mllama_tiles(image, plan, CONFIG.vision.image_size, clip), expected)
    assert read_mllama_normalization(tmp_path / "absent", CONFIG) == MLLAMA_NORMALIZATION


@pytest.mark.parametrize("field, value", [("do_pad", False), ("rescale_factor", 0.5), ("size", {"height": 56, "width": 56}), ("max_image_tiles", 2)])
def test_pixel_settings_that_disagree_are_named(tmp_path, model, field, value):
    import json

    save_mllama(model, tmp_path)
    data = json.loads((tmp_path / "preprocessor_config.json").read_text())
    data[field] = value
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=rf"preprocessor_config.json: {field}=.* is not supported"):
        read_mllama_normalization(tmp_path, CONFIG)


def test_missing_and_unexpected_keys_are_named(tmp_path, model):
    from safetensors.torch import load_file, save_file

    save_mllama(model, tmp_path)
    state = load_file(tmp_path / "model.safetensors")
    state["language_model.model.extra.weight"] = state.pop("multi_modal_projector.bias")
    save_file(state, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): \['model.multi_modal_projector.bias'\].*language_model.model.extra.weight"):
        load_mllama(tmp_path)


def test_greedy_generation_matches_transformers(tmp_path, model, tokenizer, processor):
    save_mllama(model, tmp_path)
    theirs = MllamaForConditionalGeneration.from_pretrained(tmp_path).eval()
    images = [[random_image(40, 70)], [random_image(15, 15, seed=3)]]
    prompts = [_prompt(tokenizer, 1, "Name the shape."), _prompt(tokenizer, 1, "Colour?")]
    tokenizer.padding_side = "left"
    batch = processor(images=images, text=prompts, padding=True, add_special_tokens=False, return_tensors="pt")
    tokenizer.padding_side = "right"
    settings = dict(max_new_tokens=6, do_sample=False, pad_token_id=CONFIG.text.pad_token_id, eos_token_id=None)
    expected = theirs.generate(**batch, **settings)
    inputs = our_inputs(CONFIG, batch["input_ids"], images)
    mine = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **inputs, **settings)
    assert torch.equal(mine, expected) and mine.shape[1] == batch["input_ids"].shape[1] + 6
    blind = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"], **settings)
    assert not torch.equal(blind, mine)  # the images steer the answer


def test_closed_gates_give_the_bare_decoder():
    torch.manual_seed(2)
    model = MllamaVLM(CONFIG).eval()  # gates start at 0 (transformers' init)
    llama = bare_decoder(model).eval()
    assert len(llama.model.layers) == CONFIG.text.num_hidden_layers - len(CONFIG.text.cross_attention_layers)
    ids = torch.tensor([[256, 260, 84, CONFIG.image_token_id, 54, 71, 64, 83]])
    bare = _logits(llama, ids)[..., : CONFIG.text.vocab_size]
    assert torch.equal(_logits(model, ids), bare)
    # Gates at 0: even with an image the cross-attention layers add exactly 0.
    assert torch.equal(_logits(model, ids, our_inputs(CONFIG, ids, [[random_image(40, 70)]])), bare)
    open_gates(model)
    assert not torch.equal(_logits(model, ids, our_inputs(CONFIG, ids, [[random_image(40, 70)]])), bare)


def test_frozen_decoder_training_keeps_text_logits_bit_identical(tokenizer):
    torch.manual_seed(3)
    model = MllamaVLM(CONFIG)
    trainable = select_trainable(model, frozen_decoder_trainable(CONFIG))
    decoder_names = {n for n, _ in model.named_parameters() if n not in trainable}
    assert decoder_names and all(
        n.startswith(("model.language_model.", "lm_head.")) and ".layers.1." not in n for n in decoder_names
    )
    text = tokenizer(["<|begin_of_text|>a plain sentence, no picture"], add_special_tokens=False, return_tensors="pt")["input_ids"]
    model.eval()
    before_text = _logits(model, text)
    before_state = copy.deepcopy(model.state_dict())
    ids = tokenizer([_prompt(tokenizer, 1, "red square")], add_special_tokens=False, return_tensors="pt")["input_ids"]
    inputs = our_inputs(CONFIG, ids, [[random_image(40, 70)]])
    labels = ids.masked_fill(ids == CONFIG.image_token_id, -100)  # <|image|> is past the LM head's rows
    with pytest.raises(ValueError, match="labels hold id 384, past the LM head's 384 rows"):
        model(ids, labels=ids, **inputs)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(4):
        loss = model(ids, labels=labels, **inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    state = model.state_dict()
    assert all(torch.equal(state[n], before_state[n]) for n in decoder_names)
    assert not torch.equal(state["model.language_model.layers.1.cross_attn_attn_gate"], before_state["model.language_model.layers.1.cross_attn_attn_gate"])
    assert not torch.equal(state["model.multi_modal_projector.weight"], before_state["model.multi_modal_projector.weight"])
    assert losses[-1] < losses[0]
    assert torch.equal(_logits(model, text), before_text)
    assert torch.equal(_logits(bare_decoder(model).eval(), text)[..., : CONFIG.text.vocab_size], before_text)


def test_vision_inputs_are_checked(model):
    ids = torch.tensor([[256, CONFIG.image_token_id, 5]])
    inputs = our_inputs(CONFIG, ids, [[random_image(40, 70)]])
    with pytest.raises(ValueError, match="pixel_values given without cross_attention_mask"):
        model(ids, **{**inputs, "cross_attention_mask": None})
    with pytest.raises(ValueError, match=r"cross_attention_mask has shape \(1, 2, 1, 4\), expected \(1, 3, 1, 4\)"):
        model(ids, **{**inputs, "cross_attention_mask": inputs["cross_attention_mask"][:, :2]})


def test_reference_rows_before_the_image_are_the_bare_decoders(model, tokenizer):
    reference = MllamaVLM(CONFIG, text_rows="reference").eval()
    reference.load_state_dict(model.state_dict())
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "Look: "}, {"type": "image"}, {"type": "text", "text": "Colour?"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    ids = tokenizer([prompt], add_special_tokens=False, return_tensors="pt")["input_ids"]
    inputs = our_inputs(CONFIG, ids, [[random_image(40, 70)]])
    before = int((ids[0] == CONFIG.image_token_id).nonzero()[0])
    bare = _logits(bare_decoder(reference).eval(), ids)[:, :before, : CONFIG.text.vocab_size]
    assert (_logits(reference, ids, inputs)[:, :before] - bare).abs().max().item() <= TOL
    assert (_logits(model, ids, inputs)[:, :before] - bare).abs().max().item() > 1e-3  # transformers' rows see the image
    # Generation with the KV cache keeps the hooks: same tokens as a greedy loop over forward.
    settings = dict(max_new_tokens=4, do_sample=False, pad_token_id=CONFIG.text.pad_token_id, eos_token_id=None)
    generated = reference.generate(ids, **inputs, **settings)
    current, mask = ids, inputs["cross_attention_mask"]
    for _ in range(4):
        step = _logits(reference, current, {**inputs, "cross_attention_mask": mask})[:, -1].argmax(-1, keepdim=True)
        current, mask = torch.cat([current, step], 1), torch.cat([mask, mask[:, -1:]], 1)
    assert torch.equal(generated, current)
