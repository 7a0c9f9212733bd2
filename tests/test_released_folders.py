"""Folders shaped like the released OneVision checkpoints answer through every entry point, and
their prompts are the ids their own references make.

Replicas (`released_folders.py`): llava-hf 0.5b-ov-hf (chat template in `chat_template.json`,
Qwen2-Instruct's template left in the tokenizer), llava-hf 7b-ov-hf (`chat_template.jinja`) and
lmms-lab 0.5b-ov (original LLaVA-NeXT layout), tiny random weights over the real Qwen2 vocabulary.

Entry points, one test per replica each: `ask`, `generate_batch`, `choose`, `onevision video-qa`,
`onevision eval` and the lmms-eval plugin's Python API.

Prompt ids:
- transformers layout: equal to what transformers' `LlavaOnevisionProcessor` makes, loaded from
  the folder with `AutoProcessor` (its PIL image processor) and fed the folder's own chat
  template through `apply_chat_template`, for one image, several images, a video, text only and
  a multi-turn conversation. transformers' video processor needs torchvision, which is absent
  here: `hf_processor` stands in a video processor that only hands transformers the frames, so
  transformers' own placeholder count (frames x 14 x 14 + 1) is what is compared.
- original layout: equal to what LLaVA-NeXT makes with its `qwen_1_5` conversation and
  `tokenizer_image_token` (restated in `llava_next_ids`, LLaVA-NeXT commit
  df179663ae8b83207df100a1f7af24caec633ff9, llava/conversation.py `conv_qwen` /
  SeparatorStyle.CHATML and llava/mm_utils.py `tokenizer_image_token`), each -200 then expanded
  to the item's planned run.
"""

import json

import numpy as np
import pytest
from PIL import Image

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from media_factory import make_video
from onevision.checkpoint import CheckpointError, detect_format
from onevision.checkpoint.files import read_chat_template
from onevision.cli.main import main
from onevision.infer.inputs import Request
from onevision.infer.pipeline import InferenceConfig, OneVision
from onevision.infer.prompt import renders_strings
from onevision.tokenizer import CHATML_TEMPLATE
from released_folders import QWEN2_INSTRUCT_TEMPLATE, RELEASED_CHAT_TEMPLATE, REPLICAS, build_replica

HF = [name for name, r in REPLICAS.items() if r.layout == "hf"]
ORIGINAL = [name for name, r in REPLICAS.items() if r.layout == "llava-next"]
ALL = list(REPLICAS)
QUESTION = "What is shown?"
FRAMES = 4
IMAGE_ID, VIDEO_ID = 151646, 151647


def picture(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def frames(seed: int = 5) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (FRAMES, 24, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("released")
    return {name: build_replica(name, root / name.split("/")[1]) for name in ALL}


@pytest.fixture(scope="module")
def pipes(folders):
    loaded = {}

    def get(name: str) -> OneVision:
        if name not in loaded:
            loaded[name] = OneVision.from_pretrained(folders[name])
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    picture(64, 48, 1).save(root / "a.png")
    picture(40, 70, 2).save(root / "b.png")
    (root / "videos").mkdir()
    make_video(root / "videos" / "clip.mp4", width=32, height=24, frames=6)
    return root


# ---------------------------------------------------------------- the entry points


@pytest.mark.parametrize("name", ALL)
def test_ask_answers(name, pipes):
    pipe = pipes(name)
    image = picture(64, 48, 1)
    answer = pipe.ask(QUESTION, image=image, max_new_tokens=3)
    prepared = pipe.prepare({"question": QUESTION, "images": [image]})
    tokens = pipe.generate_prepared([prepared], pipe.generation_settings(max_new_tokens=3))[0]
    assert isinstance(answer, str) and answer == pipe.decode(tokens) and len(tokens) >= 1
    # The image's planned run is in the prompt, once.
    assert int((prepared.input_ids == pipe.model.config.image_token_id).sum()) == prepared.media.plan.items[0].tokens
    assert isinstance(pipe.ask("Say hello.", max_new_tokens=2), str)


@pytest.mark.parametrize("name", ALL)
def test_generate_batch_mixes_scenarios(name, pipes):
    pipe = pipes(name)
    requests = [
        {"question": QUESTION, "images": [picture(64, 48, 1)]},
        {"question": "Compare them.", "images": [picture(64, 48, 1), picture(40, 70, 2)]},
        {"question": "What happens?", "video": frames()},
        {"question": "Say hello."},
    ]
    batched = pipe.generate_batch(requests, batch_size=4, max_new_tokens=3)
    alone = [pipe.generate_batch([r], batch_size=1, max_new_tokens=3)[0] for r in requests]
    assert batched == alone and all(isinstance(a, str) for a in batched)


@pytest.mark.parametrize("name", ALL)
def test_choose_scores_every_option(name, pipes):
    pipe = pipes(name)
    for by in ("letter", "text"):
        choice = pipe.choose("Which colour?", ["red", "green", "blue"], video=frames(), by=by)
        assert len(choice.scores) == 3 and all(np.isfinite(choice.scores)) and max(choice.scores) < 0
        assert choice.scores[choice.index] == max(choice.scores) and choice.option in ("red", "green", "blue")


@pytest.mark.parametrize("name", ALL)
def test_video_qa_cli(name, folders, media, tmp_path):
    out = tmp_path / "answers.jsonl"
    args = ["video-qa", "--model", folders[name], "--videos", media / "videos", "--question", "What happens?"]
    assert main([*map(str, args), "--out", str(out), "--num-frames", str(FRAMES), "--max-new-tokens", "3", "--no-progress"]) == 0
    (line,) = [json.loads(text) for text in out.read_text().splitlines()]
    assert line["id"] == "clip.mp4" and isinstance(line["answer"], str) and "error" not in line


@pytest.mark.parametrize("name", ALL)
def test_eval_cli(name, folders, media, tmp_path):
    records = [
        {"id": "si", "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat colour?"}], "answer": "red", "choices": ["red", "blue"]},
        {"id": "mi", "image": ["a.png", "b.png"], "conversations": [{"from": "human", "value": "<image>\n<image>\nSame?"}], "answer": "yes", "choices": ["yes", "no"]},
        {"id": "vid", "video": "videos/clip.mp4", "conversations": [{"from": "human", "value": "<image>\nWhat happens?"}], "answer": "it moves"},
    ]
    data = tmp_path / "bench.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = tmp_path / "report.json"
    args = ["eval", "--checkpoints", f"r={folders[name]}", "--data", data, "--media-root", media, "--max-new-tokens", "3"]
    assert main([*map(str, args), "--report", str(report), "--no-progress"]) == 0
    results = {r["id"]: r for r in json.loads(report.read_text())["results"]}
    assert sorted(results) == ["mi", "si", "vid"] and not any(r.get("error") for r in results.values())
    assert results["si"]["prediction"] in ("red", "blue") and results["mi"]["prediction"] in ("yes", "no")
    assert isinstance(results["vid"]["prediction"], str)


@pytest.mark.parametrize("name", ALL)
def test_lmms_eval_plugin(name, folders, pipes, media):
    pytest.importorskip("lmms_eval", reason="lmms-eval is the `eval` extra (CI installs it and runs this test then)")
    import lmms_eval.models as lmms_models
    from lmms_eval.api.instance import Instance, unwrap_generation_output

    lmm = lmms_models.get_model("onevision").create_from_arg_string(f"pretrained={folders[name]}", {"batch_size": "2", "device": "cpu"})
    docs = [{"visual": [picture(64, 48, 1)], "q": QUESTION}, {"visual": [str(media / "videos" / "clip.mp4")], "q": "What happens?"}]
    lmm.task_dict = {"toy": {"test": docs}}

    def visuals(doc):
        return doc["visual"]

    def instance(kind, arguments, k):
        return Instance(request_type=kind, arguments=arguments, idx=0, metadata={"task": "toy", "doc_id": k, "repeats": 1})

    gen = [instance("generate_until", (d["q"], {"max_new_tokens": 3, "temperature": 0}, visuals, k, "toy", "test"), k) for k, d in enumerate(docs)]
    answers = lmm.generate_until(gen)
    pipe = pipes(name)
    assert answers[0] == pipe.generate_batch([{"question": QUESTION, "images": docs[0]["visual"]}], max_new_tokens=3)[0]
    assert isinstance(answers[1], str)
    # A loglikelihood task's continuation is its doc_to_target (a function); the score is then the log-probability.
    (result,) = lmm.loglikelihood([instance("loglikelihood", (QUESTION, lambda doc: "red", visuals, 0, "toy", "test"), 0)])
    logprob, greedy = unwrap_generation_output(result)[0]
    prepared = pipe.prepare({"question": QUESTION, "images": docs[0]["visual"]})
    (score,) = pipe.score([prepared], [[pipe.encoder.encode_text("red") + pipe.answer_end]])[0]
    assert logprob == pytest.approx(score.logprob, abs=1e-4) and greedy == score.greedy


# ---------------------------------------------------------------- prompt ids


@pytest.fixture(scope="module")
def hf_processor(folders):
    """name -> transformers' processor, `AutoProcessor.from_pretrained(folder)` with a stand-in video processor.

    transformers' `LlavaOnevisionVideoProcessor` needs torchvision, absent here, and
    `AutoProcessor` loads it unconditionally: the stand-in (a subclass of the PIL image
    processor, so the processor can describe itself) hands transformers the frames unchanged,
    and transformers' `replace_video_token` counts them.
    """
    from transformers import AutoProcessor
    from transformers.models.auto.video_processing_auto import AutoVideoProcessor
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
    from transformers.processing_utils import ProcessorMixin

    class FramesOnly(LlavaOnevisionImageProcessorPil):
        def __call__(self, videos, **kwargs):
            return {"pixel_values_videos": [np.asarray(v) for v in videos]}

    check = ProcessorMixin.check_argument_for_proper_class
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AutoVideoProcessor, "from_pretrained", classmethod(lambda cls, *a, **k: FramesOnly()))
        patch.setattr(ProcessorMixin, "check_argument_for_proper_class", lambda self, n, a: None if n == "video_processor" else check(self, n, a))
        return {name: AutoProcessor.from_pretrained(folders[name]) for name in HF}


IMAGE_A, IMAGE_B = picture(64, 48, 1), picture(500, 180, 2)

# (our request, transformers' messages, images, videos) per case.
CASES = {
    "image": (
        Request(question=QUESTION, images=[IMAGE_B]),
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]}],
        [IMAGE_B],
        None,
    ),
    "images": (
        Request(question="Compare them.", images=[IMAGE_A, IMAGE_B]),
        [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "Compare them."}]}],
        [[IMAGE_A, IMAGE_B]],
        None,
    ),
    "video": (
        Request(question="What happens?", video=frames()),
        [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}],
        None,
        [frames()],
    ),
    "text": (
        Request(question="Say hello."),
        [{"role": "user", "content": [{"type": "text", "text": "Say hello."}]}],
        None,
        None,
    ),
    "multi_turn": (
        Request(turns=[("user", f"<image>\n{QUESTION}"), ("assistant", "A red circle."), ("user", "And its size?")], images=[IMAGE_A]),
        [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A red circle."}]},
            {"role": "user", "content": [{"type": "text", "text": "And its size?"}]},
        ],
        [IMAGE_A],
        None,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("name", HF)
def test_prompt_ids_equal_transformers_processor(name, case, pipes, hf_processor):
    request, messages, images, videos = CASES[case]
    processor = hf_processor[name]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert text.startswith("<|im_start|>user ") and "system" not in text  # the folder's own template
    theirs = processor(text=[text], images=images, videos=videos, return_tensors="pt")["input_ids"][0]
    ours = pipes(name).prepare(request).input_ids
    assert ours.tolist() == theirs.tolist()
    assert int((ours == IMAGE_ID).sum()) + int((ours == VIDEO_ID).sum()) > 0 or case == "text"


def llava_next_ids(tokenizer, turns: list[tuple[str, str]]) -> list[int]:
    """LLaVA-NeXT's prompt ids for a conversation: `conv_templates["qwen_1_5"]` then `tokenizer_image_token`.

    Restated from LLaVA-NeXT df179663ae8b83207df100a1f7af24caec633ff9: `conv_qwen` has system
    "<|im_start|>system\\nYou are a helpful assistant.", roles ("<|im_start|>user",
    "<|im_start|>assistant"), sep "<|im_end|>"; its CHATML `get_prompt` writes system + sep + "\\n",
    role + "\\n" + message + sep + "\\n" per message and role + "\\n" for the `None` message that
    asks for the answer. `tokenizer_image_token` tokenises the pieces between "<image>"s with
    `tokenizer(chunk).input_ids` and puts IMAGE_TOKEN_INDEX -200 between them (no BOS: Qwen2 has none).
    """
    roles = {"user": "<|im_start|>user", "assistant": "<|im_start|>assistant"}
    prompt = "<|im_start|>system\nYou are a helpful assistant." + "<|im_end|>" + "\n"
    for role, message in [*turns, ("assistant", None)]:
        prompt += roles[role] + "\n" + message + "<|im_end|>" + "\n" if message else roles[role] + "\n"
    ids: list[int] = []
    for k, chunk in enumerate(prompt.split("<image>")):
        ids.extend(([-200] if k else []) + tokenizer(chunk).input_ids)
    return ids


# LLaVA-NeXT's data and lmms-eval prompts: "<image>\n" per image (a video is one <image>) before the question.
ORIGINAL_CASES = {
    "image": (Request(question=QUESTION, images=[IMAGE_B]), [("user", f"<image>\n{QUESTION}")]),
    "images": (Request(question="Compare them.", images=[IMAGE_A, IMAGE_B]), [("user", "<image>\n<image>\nCompare them.")]),
    "video": (Request(question="What happens?", video=frames()), [("user", "<image>\nWhat happens?")]),
    "text": (Request(question="Say hello."), [("user", "Say hello.")]),
    "multi_turn": (
        Request(turns=[("user", f"<image>\n{QUESTION}"), ("assistant", "A red circle."), ("user", "And its size?")], images=[IMAGE_A]),
        [("user", f"<image>\n{QUESTION}"), ("assistant", "A red circle."), ("user", "And its size?")],
    ),
}


@pytest.mark.parametrize("case", list(ORIGINAL_CASES))
@pytest.mark.parametrize("name", ORIGINAL)
def test_prompt_ids_equal_llava_next_qwen_1_5(name, case, pipes):
    request, turns = ORIGINAL_CASES[case]
    pipe = pipes(name)
    prepared = pipe.prepare(request)
    reference = llava_next_ids(pipe.tokenizer, turns)
    # Each -200 becomes the item's planned run, images first, then the video.
    items = prepared.media.plan.items
    assert reference.count(-200) == len(items)
    expanded, k = [], 0
    for token in reference:
        if token == -200:
            expanded.extend([VIDEO_ID if items[k].kind == "video" else IMAGE_ID] * items[k].tokens)
            k += 1
        else:
            expanded.append(token)
    assert prepared.input_ids.tolist() == expanded


def test_chat_template_files_read_as_transformers_processor_does(folders, tmp_path):
    """chat_template.json (legacy) wins over chat_template.jinja; a tokenizer's own template is not one."""
    assert read_chat_template(folders[HF[0]]) == RELEASED_CHAT_TEMPLATE
    assert read_chat_template(folders[HF[1]]) == RELEASED_CHAT_TEMPLATE
    assert read_chat_template(folders[ORIGINAL[0]]) is None
    (tmp_path / "chat_template.jinja").write_text("{{ 'jinja' }}")
    assert read_chat_template(tmp_path) == "{{ 'jinja' }}"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": "{{ 'json' }}"}))
    assert read_chat_template(tmp_path) == "{{ 'json' }}"
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": 3}))
    with pytest.raises(ValueError, match="chat_template.json"):
        read_chat_template(tmp_path)


def test_released_original_config_is_detected_by_its_architecture(folders, tmp_path):
    """The lmms-lab configs say model_type 'llava'; only LlavaQwenForCausalLM makes that the original
    LLaVA-NeXT layout; LlavaForConditionalGeneration is transformers' own `llava` layout."""
    folder = folders[ORIGINAL[0]]
    data = json.loads((folder / "config.json").read_text())
    assert data["model_type"] == "llava" and detect_format(folder) == "llava-next"
    (tmp_path / "config.json").write_text(json.dumps({**data, "architectures": ["LlavaForConditionalGeneration"]}))
    assert detect_format(tmp_path) == "llava-hf"


def test_prompt_format_is_chosen_by_layout_and_overridable(pipes):
    """Released template -> typed parts; ChatML and Qwen2-Instruct's render strings; prompt_format honoured or refused."""
    hf = pipes(HF[0])
    assert hf.encoder.prompt_format == "chat_template" and hf.encoder.typed
    assert not renders_strings(hf.tokenizer, RELEASED_CHAT_TEMPLATE)
    assert renders_strings(hf.tokenizer, CHATML_TEMPLATE) and renders_strings(hf.tokenizer, QWEN2_INSTRUCT_TEMPLATE)
    assert pipes(ORIGINAL[0]).encoder.prompt_format == "qwen_1_5"
    forced = OneVision(hf.model, hf.tokenizer, InferenceConfig(prompt_format="qwen_1_5"), chat_template=RELEASED_CHAT_TEMPLATE)
    assert forced.encoder.render([("user", "Hi")]) == "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    system = OneVision(hf.model, hf.tokenizer, InferenceConfig(system_prompt="Be brief."), chat_template=RELEASED_CHAT_TEMPLATE)
    assert system.encoder.render([("user", "Hi")]) == "<|im_start|>system \nBe brief.<|im_end|><|im_start|>user \nHi<|im_end|><|im_start|>assistant\n"
    with pytest.raises(ValueError, match="prompt_format"):
        OneVision(hf.model, hf.tokenizer, InferenceConfig(prompt_format="chatml"))
