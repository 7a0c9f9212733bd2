"""The lmms-eval plugin: installing the project registers model `onevision` (entry-point group
`lmms_eval.models`, whichever module is imported first), lmms-eval's own `Instance`s get the
answers and scores of the pipeline itself in the form lmms-eval's metrics read them (losses for
multiple choice, log-probabilities for perplexity), bad documents are misses that never stop a
run, and lmms-eval's llava_onevision model arguments are honoured or refused by name.
Needs the 'eval' extra (lmms-eval); the real `lmms-eval` command runs in test_lmms_cli.py."""

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lmms_eval", reason="lmms-eval is not installed; install the 'eval' extra: pip install -e '.[eval]'")

import lmms_eval.models as lmms_models
from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from lmms_eval.api.instance import Instance, unwrap_generation_output
from media_factory import make_video
from PIL import Image

from onevision.infer.debug_model import save_debug_checkpoint
from onevision.infer.inputs import Request
from onevision.infer.pipeline import OneVision

TASK, SPLIT = "toy", "test"
GOOD = (0, 1, 2)  # docs 3 and 4 are bad


class ToyTask:
    """The parts of an lmms-eval `ConfigurableTask` the plugin reads: requests carry its bound
    `doc_to_visual`, whose task gives the output type and, for a bad document, the gold."""

    multiple_input = 0
    _metric_fn_list = {"acc": None}  # noqa: RUF012  (as lmms-eval declares it)

    def __init__(self, output_type):
        self.OUTPUT_TYPE = output_type

    def doc_to_visual(self, doc):
        return doc["visual"]

    def doc_to_choice(self, doc):
        return ["red", "blue", "green"]

    def doc_to_target(self, doc):
        return doc["gold"] if self.OUTPUT_TYPE == "multiple_choice" else doc["answer"]


def instance(kind, arguments, doc_id):
    return Instance(request_type=kind, arguments=arguments, idx=0, metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmms")
    checkpoint = save_debug_checkpoint(folder / "ckpt")
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8))
    docs = [
        {"visual": [image], "q": "What is shown?", "gold": 1, "answer": "red"},
        {"visual": [str(make_video(folder / "clip.mp4", width=32, height=24, frames=6))], "q": "What happens?", "gold": 0, "answer": "it moves"},
        {"visual": [], "q": "How many shapes are there?", "gold": 2, "answer": "three"},
        # Bad: two placeholders for one image; a video that does not exist.
        {"visual": [image], "q": "<image> and <image>: which is larger?", "gold": 0, "answer": "left"},
        {"visual": [str(folder / "missing.mp4")], "q": "What happens?", "gold": 0, "answer": "nothing"},
    ]
    lmm = lmms_models.get_model("onevision").create_from_arg_string(f"pretrained={checkpoint}", {"batch_size": "2", "device": "cpu", "max_batch_size": None})
    lmm.task_dict = {TASK: {SPLIT: docs}}
    return lmm, OneVision.from_pretrained(checkpoint), docs, checkpoint


def doc_to_visual(doc):
    return doc["visual"]


def as_request(docs, k):
    """The pipeline request for doc k: an image (0), a video file (1), text only (2)."""
    visual = docs[k]["visual"]
    return Request(question=docs[k]["q"], images=visual if k == 0 else (), video=visual[0] if k == 1 else None)


def pipe_logprob(pipe, docs, k, target):
    (score,) = pipe.score([pipe.prepare(as_request(docs, k))], [[pipe.encoder.encode_text(target) + pipe.answer_end]])[0]
    return score


def test_plugin_is_registered_through_the_entry_point():
    from onevision.infer.lmms_eval_model import OneVisionLMMS

    assert "onevision" in lmms_models.list_available_models()
    assert lmms_models.get_model("onevision") is OneVisionLMMS
    assert lmms_models.get_model_manifest("onevision").simple_class_path == "onevision.infer.lmms_eval_model.OneVisionLMMS"


def test_plugin_registers_when_imported_before_lmms_eval_models():
    code = (
        "import onevision.infer.lmms_eval_model as plugin, lmms_eval.models as m; "
        "assert m.get_model('onevision') is plugin.OneVisionLMMS, m.list_available_models()"
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=root, capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "circular import" not in done.stderr and "Failed to load model entry-point" not in done.stderr


def test_generate_until_answers_as_the_pipeline_and_bad_documents_answer_empty(setup):
    lmm, pipe, docs, _ = setup
    gen_kwargs = {"max_new_tokens": 6, "temperature": 0, "until": ["\n\n"]}
    requests = [instance("generate_until", (d["q"], dict(gen_kwargs), doc_to_visual, k, TASK, SPLIT), k) for k, d in enumerate(docs)]
    lmm.bad_documents.clear()
    answers = lmm.generate_until(requests)
    expected = [pipe.generate_batch([as_request(docs, k)], max_new_tokens=6)[0] for k in GOOD]
    assert answers == [e.split("\n\n")[0] for e in expected] + ["", ""]
    assert [(task, doc) for task, doc, _ in lmm.bad_documents] == [(TASK, 3), (TASK, 4)]
    assert "placeholders" in lmm.bad_documents[0][2] and "missing.mp4" in lmm.bad_documents[1][2]
    stop = expected[0][1:3]
    cut = lmm.generate_until([instance("generate_until", (docs[0]["q"], {"max_new_tokens": 6, "until": [stop]}, doc_to_visual, 0, TASK, SPLIT), 0)])
    assert cut == [expected[0][: expected[0].index(stop)]]


def test_loglikelihood_task_scores_are_log_probabilities_for_perplexity(setup):
    from lmms_eval.api.metrics import perplexity

    lmm, pipe, docs, _ = setup
    task = ToyTask("loglikelihood")
    # As lmms-eval builds them: the continuation is the task's doc_to_target (a function).
    requests = [instance("loglikelihood", (d["q"], task.doc_to_target, task.doc_to_visual, k, TASK, SPLIT), k) for k, d in enumerate(docs)]
    results = [unwrap_generation_output(r)[0] for r in lmm.loglikelihood(requests)]
    for k in GOOD:
        score = pipe_logprob(pipe, docs, k, docs[k]["answer"])
        assert results[k][0] < 0 and results[k][0] == pytest.approx(score.logprob, abs=1e-4) and results[k][1] == score.greedy
    good = [results[k][0] for k in GOOD]
    assert perplexity(good) == pytest.approx(math.exp(-sum(good) / len(good))) and perplexity(good) > 1
    assert results[3] == (-math.inf, False) and results[4] == (-math.inf, False)


def test_multiple_choice_scores_are_losses_so_argmin_picks_the_likeliest(setup):
    lmm, pipe, docs, _ = setup
    options = ToyTask("multiple_choice").doc_to_choice(None)
    # With the task (its bound doc_to_visual), and without one (told apart by the string option).
    for visual in (ToyTask("multiple_choice").doc_to_visual, doc_to_visual):
        requests = [instance("loglikelihood", (docs[k]["q"], f" {option}", visual, k, TASK, SPLIT), k) for k in (*GOOD, 3) for option in options]
        results = [unwrap_generation_output(r)[0] for r in lmm.loglikelihood(requests)]
        for position, k in enumerate(GOOD):
            losses = [loss for loss, _ in results[3 * position : 3 * position + 3]]
            logprobs = [pipe_logprob(pipe, docs, k, f" {option}").logprob for option in options]
            assert losses == pytest.approx([-lp for lp in logprobs], abs=1e-4)
            assert int(np.argmin(losses)) == int(np.argmax(logprobs))  # lmms-eval's pred is the likeliest option
        bad = [loss for loss, greedy in results[9:]]
        assert bad[docs[3]["gold"]] == math.inf and not any(greedy for _, greedy in results[9:])
    # With the task, the bad document's gold is ranked last: lmms-eval's argmin never picks it.
    assert int(np.argmin(_scores_with_task(lmm, docs, options))) != 1


def _scores_with_task(lmm, docs, options):
    """The bad document's losses when its gold is option 1 (not the first: argmin's default)."""
    task = ToyTask("multiple_choice")
    docs[3]["gold"] = 1
    try:
        requests = [instance("loglikelihood", (docs[3]["q"], f" {option}", task.doc_to_visual, 3, TASK, SPLIT), 3) for option in options]
        losses = [unwrap_generation_output(r)[0][0] for r in lmm.loglikelihood(requests)]
    finally:
        docs[3]["gold"] = 0
    assert losses[1] == math.inf
    return losses


def test_mutual_information_requests_are_refused_by_name(setup):
    lmm = setup[0]
    # lmms-eval 0.7.3's acc_mutual_info requests: (context, continuation) only, no document.
    with pytest.raises(ValueError, match="acc_mutual_info"):
        lmm.loglikelihood([instance("loglikelihood", ("", " red"), 0)])


def test_generate_until_multi_round_follows_doc_to_text(setup):
    lmm, pipe, docs, _ = setup
    seen = []

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        """Two follow-up rounds: round 1 asks a new question about the same media, round 2 is
        a JSON conversation carrying round 0's answer; then stop."""
        seen.append((doc["q"], list(previous_output), round_idx, previous_round_info))
        if round_idx == 1:
            return doc["visual"], "And the colour?", False, previous_output, {"asked": 1}
        if round_idx == 2:
            turns = [{"value": doc["q"]}, {"value": previous_output[0]}, {"value": "Say it again."}]
            return doc["visual"], json.dumps(turns), False, previous_output, {"asked": 2}
        return None, None, True, previous_output, previous_round_info

    gen_kwargs = {"max_new_tokens": 5, "until": ["\n\n"]}
    requests = [
        instance("generate_until_multi_round", (d["q"], dict(gen_kwargs), doc_to_visual, doc_to_text, k, TASK, SPLIT), k)
        for k, d in enumerate(docs)
    ]
    results = lmm.generate_until_multi_round(requests)
    assert [len(r) for r in results] == [3] * len(docs)
    for k in GOOD:
        request = as_request(docs, k)
        first = pipe.generate_batch([request], max_new_tokens=5)[0]
        second = pipe.generate_batch([Request(question="And the colour?", images=request.images, video=request.video)], max_new_tokens=5)[0]
        turns = [("user", docs[k]["q"]), ("assistant", first), ("user", "Say it again.")]
        third = pipe.generate_batch([Request(turns=turns, images=request.images, video=request.video)], max_new_tokens=5)[0]
        assert results[k] == [a.split("\n\n")[0] for a in (first, second, third)]
    assert results[3] == ["", "", ""] and results[4] == ["", "", ""]  # bad documents miss every round
    # doc_to_text saw every earlier answer and its own round info, and was asked once more to stop.
    assert [s[2] for s in seen] == [1] * 5 + [2] * 5 + [3] * 5
    assert all(len(prev) == rnd for _, prev, rnd, _ in seen)
    assert [s[3] for s in seen if s[2] == 3] == [{"asked": 2}] * 5


def test_llava_onevision_model_args_are_honoured(setup):
    _, _, docs, checkpoint = setup
    args = (
        f"pretrained={checkpoint},max_frames_num=3,video_pool_stride=1,mm_spatial_pool_mode=average,mm_spatial_pool_stride=2,"
        "video_decode_backend=pyav,dtype=bfloat16,conv_template=qwen_1_5,model_name=llava_qwen,attn_implementation=eager,"
        "use_cache=False,truncate_context=False"
    )
    lmm = lmms_models.get_model("onevision").create_from_arg_string(args, {"device": "cpu", "batch_size": 1})
    pipe = lmm.pipe
    assert pipe.loader.num_frames == 3 and pipe.loader.settings.video_pool_stride == 1 and pipe.loader.video_backend == "pyav"
    assert next(pipe.model.parameters()).dtype.is_floating_point and str(next(pipe.model.parameters()).dtype) == "torch.bfloat16"
    assert pipe.model.language_model.config._attn_implementation == "eager" and lmm.settings.use_cache is False
    video = pipe.prepare(as_request(docs, 1)).visual.plans[0]
    assert video.frames == 3 and video.pool_stride == 1 and video.pool_mode == "average"
    # conv_template=qwen_1_5 renders LLaVA-NeXT's qwen_1_5 conversation, on this transformers-layout folder too.
    assert pipe.config.prompt_format == "qwen_1_5" and pipe.encoder.prompt_format == "qwen_1_5"


def test_conv_template_selects_the_prompt_format():
    from onevision.infer.lmms_eval_args import PROMPT_FORMATS, ModelArgumentError, parse_model_args
    from onevision.infer.prompt import PROMPT_FORMATS as PIPELINE_FORMATS

    assert PROMPT_FORMATS == PIPELINE_FORMATS
    assert parse_model_args({"pretrained": "ckpt"}).prompt_format == "auto"
    assert parse_model_args({"pretrained": "ckpt", "conv_template": "qwen_1_5"}).prompt_format == "qwen_1_5"
    assert parse_model_args({"pretrained": "ckpt", "prompt_format": "chat_template"}).prompt_format == "chat_template"
    both = {"pretrained": "ckpt", "conv_template": "qwen_1_5", "prompt_format": "qwen_1_5"}
    assert parse_model_args(both).prompt_format == "qwen_1_5"
    for wrong, message in (({"conv_template": "chatml_direct"}, "conv_template='chatml_direct'.*'qwen_1_5'"),
                           ({"prompt_format": "chatml"}, "prompt_format='chatml'"),
                           ({"prompt_format": "chat_template", "conv_template": "qwen_1_5"}, "contradicts prompt_format")):
        with pytest.raises(ModelArgumentError, match=message):
            parse_model_args({"pretrained": "ckpt", **wrong})


@pytest.mark.parametrize(
    "argument, message",
    [
        ("conv_template=llava_v1", "qwen_1_5"),
        ("mm_spatial_pool_mode=median", "bilinear"),
        ("mm_spatial_pool_stride=4", "video_pool_stride="),
        ("attn_implementation=flash", "sdpa"),
        ("device_map=auto", "one device"),
        ("customized_config=cfg.json", "config.json"),
        ("max_pixels=1000", "anyres_max"),
        ("fps=2", "max_frames_num"),
        ("token_strategy=multiple", "token_strategy=single"),
        ("video_decode_backend=torchvision", "decord"),
        ("dtype=int8", "bfloat16"),
        ("model_name=llava_llama", "Qwen2"),
        ("frames=4", "unknown model argument"),
    ],
)
def test_refused_model_args_say_what_onevision_does(argument, message):
    from onevision.infer.lmms_eval_args import ModelArgumentError, parse_model_args

    name, value = argument.split("=")
    with pytest.raises(ModelArgumentError, match=message) as caught:
        parse_model_args({"pretrained": "ckpt", name: value})
    assert name in str(caught.value)


def test_every_llava_onevision_argument_is_known():
    """Each constructor argument of lmms-eval's llava_onevision* models, at its default value
    there, is accepted or refused by name (never 'unknown')."""
    from onevision.infer.lmms_eval_args import ModelArgumentError, parse_model_args

    files = sorted(Path(lmms_models.__file__).parent.glob("*/llava_onevision*.py"))
    assert len(files) >= 3
    checked = 0
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name == "__init__":
                arguments = node.args.args[1:]
                defaults = [None] * (len(arguments) - len(node.args.defaults)) + list(node.args.defaults)
                for argument, default in zip(arguments, defaults):
                    value = ast.literal_eval(default) if isinstance(default, ast.Constant) else "x"
                    try:
                        parse_model_args({"pretrained": "ckpt", argument.arg: value})
                    except ModelArgumentError as error:
                        assert "unknown" not in str(error) and argument.arg in str(error), (path.name, argument.arg, error)
                    checked += 1
    assert checked > 40
