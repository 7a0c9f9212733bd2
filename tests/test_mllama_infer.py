"""The cross-attention family behind the inference API: `OneVision.from_pretrained` on an mllama folder.

The folder is `save_mllama` + tokenizer (what `onevision train` exports) of `mllama-debug`
with spread weights and open gates, so images move the answers. Checked: the pipeline is an
`MllamaPipeline`; prompts are the tokenizer's chat template's ids; a text-only answer is the
bare decoder's greedy answer; a mixed batch answers each request as alone; scores are the
model's log-probabilities; `video-qa` and `eval` run on the folder from the command line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers_mllama import open_gates, random_image, spread_weights
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from media_factory import make_video

from onevision.checkpoint import CheckpointError, detect_format, load_checkpoint
from onevision.checkpoint.mllama import save_mllama
from onevision.cli.main import main
from onevision.data.llama3_chat import llama3_byte_tokenizer
from onevision.infer.mllama_pipeline import MllamaPipeline
from onevision.infer.pipeline import InferenceConfig, OneVision
from onevision.model.mllama import MllamaVLM, bare_decoder
from onevision.model.mllama_config import PRESETS

CONFIG = PRESETS["mllama-debug"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    model = MllamaVLM(CONFIG, text_rows="reference").eval()
    spread_weights(model)
    open_gates(model)
    path = tmp_path_factory.mktemp("mllama") / "hf"
    save_mllama(model, path)
    llama3_byte_tokenizer(CONFIG.image_token_id).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pipe(folder):
    return OneVision.from_pretrained(folder)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    random_image(20, 40, seed=1).save(root / "wide.png")
    random_image(10, 10, seed=2).save(root / "small.png")
    video = make_video(root / "clip.mp4", frames=6, width=32, height=24)
    return {"wide": root / "wide.png", "small": root / "small.png", "video": video}


def test_folder_gives_the_mllama_pipeline_and_its_template_ids(pipe, media):
    assert isinstance(pipe, MllamaPipeline)
    prepared = pipe.prepare({"question": "What is it?", "images": [media["wide"], media["small"]]})
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\n"}, {"type": "image"},
                                             {"type": "text", "text": "\nWhat is it?"}]}]
    text = pipe.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prepared.input_ids.tolist() == pipe.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert [plan.num_tiles for _, plan in prepared.media.pairs] == [2, 1]
    video = pipe.reconfigured(num_frames=4).prepare({"question": "Where?", "video": media["video"]})
    assert int((video.input_ids == CONFIG.image_token_id).sum()) == 4 == len(video.media.pairs)
    assert all(plan.num_tiles == 1 for _, plan in video.media.pairs)
    with pytest.raises(ValueError, match="time_instruction"):
        pipe.reconfigured(time_instruction=True)


def test_text_only_answer_is_the_bare_decoders(pipe):
    answer = pipe.generate_prepared([pipe.prepare("Say something.")], pipe.generation_settings(max_new_tokens=6))[0]
    prompt = pipe.prepare("Say something.").input_ids[None]
    llama = bare_decoder(pipe.model)
    expected = llama.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                              eos_token_id=list(pipe.eos_token_ids), pad_token_id=pipe.pad_token_id)[0, prompt.shape[1]:]
    assert len(answer) > 0 and answer.tolist() == expected.tolist()[: len(answer)]


def test_mixed_batch_answers_as_alone_and_images_matter(pipe, media):
    requests = [{"question": "Describe.", "images": [media["wide"]]}, {"question": "And this?", "video": media["video"]}, "Hello there"]
    settings = pipe.generation_settings(max_new_tokens=5)
    batched = [t.tolist() for t in pipe.generate_prepared([pipe.prepare(r) for r in requests], settings)]
    assert batched == [pipe.generate_prepared([pipe.prepare(r)], settings)[0].tolist() for r in requests]
    assert all(batched) and len(pipe.generate_batch(requests, batch_size=2, max_new_tokens=5)) == 3
    first = pipe.choose("Which?", ["red", "green", "blue"], image=media["wide"], by="text")
    other = pipe.choose("Which?", ["red", "green", "blue"], image=media["small"], by="text")
    assert first.scores != other.scores


def test_scores_are_the_models_log_probabilities(pipe, media):
    choice = pipe.choose("Which?", ["red", "green"], image=media["small"], by="text")
    prepared = pipe.prepare({"question": "Which?", "images": [media["small"]]})
    for option, score in zip(["red", "green"], choice.scores):
        continuation = pipe.encoder.encode_text(option) + pipe.answer_end
        ids = torch.cat([prepared.input_ids, torch.tensor(continuation)])[None]
        with torch.no_grad():
            logits = pipe.model(ids, **pipe._vision([prepared], ids)).logits[0].log_softmax(-1)
        start = prepared.input_ids.numel()
        expected = sum(float(logits[start - 1 + k, t]) for k, t in enumerate(continuation))
        assert score == pytest.approx(expected, abs=1e-4)
    letter = pipe.choose("Which?", ["red", "green"], image=media["small"])
    assert letter.by == "letter" and len(letter.scores) == 2


def test_video_qa_and_eval_accept_the_folder(folder, media, tmp_path, capsys):
    out = tmp_path / "answers.jsonl"
    code = main(["video-qa", "--model", str(folder), "--videos", str(media["video"].parent), "--question", "What?",
                 "--options", "cat", "dog", "--out", str(out), "--num-frames", "3", "--no-progress"])
    assert code == 0
    line = json.loads(out.read_text().splitlines()[0])
    assert line["answer"] in ("cat", "dog") and len(line["scores"]) == 2 and line.get("error") is None
    from onevision.world import build_world

    world = build_world(tmp_path / "world", n_train=0, n_test=1, tasks=("si_colour", "mi_same_colour", "vid_direction"), progress=False)
    report = tmp_path / "report.json"
    code = main(["eval", "--checkpoints", f"m={folder}", "--data", str(world.root / "test"), "--report", str(report),
                 "--no-progress", "--max-new-tokens", "3"])
    assert code == 0
    results = json.loads(report.read_text())["results"]
    assert {r["scenario"] for r in results} == {"single_image", "multi_image", "video"}
    assert all(r["error"] is None for r in results)
    colour = next(r for r in results if r["task"] == "si_colour")
    assert colour["prediction"] == ["red", "green", "blue", "yellow"][int(np.argmax(colour["scores"]))]


def test_refused_config_is_named(folder):
    with pytest.raises(ValueError, match="vocab_size"):
        OneVision.from_pretrained(folder, config=InferenceConfig(vocab_size=100))
    assert detect_format(folder) == "mllama"
    with pytest.raises(CheckpointError, match="cross-attention"):  # the LLaVA loaders name what the folder is
        load_checkpoint(folder)
