"""The lmms-eval plugin: installing the project registers model `onevision` (entry-point group
`lmms_eval.models`), and lmms-eval's own `Instance`s for `generate_until` and `loglikelihood`
get the answers and log-likelihoods of the pipeline itself. Needs the 'eval' extra (lmms-eval)."""

import json

import lmms_eval.models as lmms_models
import numpy as np
import pytest
from lmms_eval.api.instance import Instance, unwrap_generation_output
from PIL import Image

from helpers_model import single_thread  # noqa: F401  (autouse fixture)
from media_factory import make_video
from onevision.infer.debug import save_debug_checkpoint
from onevision.infer.inputs import Request
from onevision.infer.pipeline import OneVision


TASK, SPLIT = "toy", "test"


def instance(kind, arguments, doc_id):
    return Instance(request_type=kind, arguments=arguments, idx=0, metadata={"task": TASK, "doc_id": doc_id, "repeats": 1})


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lmms")
    checkpoint = save_debug_checkpoint(folder / "ckpt")
    docs = [
        {"visual": [Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 70, 3), dtype=np.uint8))], "q": "What is shown?"},
        {"visual": [str(make_video(folder / "clip.mp4", width=32, height=24, frames=6))], "q": "What happens?"},
        {"visual": [], "q": "How many shapes are there?"},
    ]
    lmm = lmms_models.get_model("onevision").create_from_arg_string(f"pretrained={checkpoint}", {"batch_size": "2", "device": "cpu", "max_batch_size": None})
    lmm.task_dict = {TASK: {SPLIT: docs}}
    return lmm, OneVision.from_pretrained(checkpoint), docs


def doc_to_visual(doc):
    return doc["visual"]


def as_request(docs, k):
    """The pipeline request for doc k: an image (0), a video file (1), text only (2)."""
    visual = docs[k]["visual"]
    return Request(question=docs[k]["q"], images=visual if k == 0 else (), video=visual[0] if k == 1 else None)


def test_plugin_is_registered_through_the_entry_point():
    from onevision.infer.lmms_eval_model import OneVisionLMMS

    assert "onevision" in lmms_models.list_available_models()
    assert lmms_models.get_model("onevision") is OneVisionLMMS
    assert lmms_models.get_model_manifest("onevision").simple_class_path == "onevision.infer.lmms_eval_model.OneVisionLMMS"


def test_generate_until_answers_as_the_pipeline(setup):
    lmm, pipe, docs = setup
    gen_kwargs = {"max_new_tokens": 6, "temperature": 0, "until": ["\n\n"]}
    requests = [instance("generate_until", (d["q"], dict(gen_kwargs), doc_to_visual, k, TASK, SPLIT), k) for k, d in enumerate(docs)]
    answers = lmm.generate_until(requests)
    expected = [pipe.generate_batch([as_request(docs, k)], max_new_tokens=6)[0] for k in range(len(docs))]
    assert answers == [e.split("\n\n")[0] for e in expected]
    stop = expected[0][1:3]
    cut = lmm.generate_until([instance("generate_until", (docs[0]["q"], {"max_new_tokens": 6, "until": [stop]}, doc_to_visual, 0, TASK, SPLIT), 0)])
    assert cut == [expected[0][: expected[0].index(stop)]]


def test_loglikelihood_sums_continuation_log_probs(setup):
    lmm, pipe, docs = setup
    targets = [(0, "red"), (0, "a blue square"), (2, "three"), (1, "it moves left")]
    requests = [instance("loglikelihood", (docs[k]["q"], target, doc_to_visual, k, TASK, SPLIT), k) for k, target in targets]
    # As lmms-eval's evaluator reads the responses (0.7.3 stringifies bare tuples there).
    results = [unwrap_generation_output(r)[0] for r in lmm.loglikelihood(requests)]
    assert len(results) == 4
    for (k, target), (logprob, greedy) in zip(targets, results):
        prepared = pipe.prepare(as_request(docs, k))
        (score,) = pipe.score([prepared], [[pipe.encoder.encode_text(target) + pipe.answer_end]])[0]
        assert logprob < 0 and logprob == pytest.approx(score.logprob, abs=1e-4) and greedy == score.greedy


def test_generate_until_multi_round_follows_doc_to_text(setup):
    lmm, pipe, docs = setup
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
    assert [len(r) for r in results] == [3, 3, 3]
    for k, answers in enumerate(results):
        request = as_request(docs, k)
        first = pipe.generate_batch([request], max_new_tokens=5)[0]
        second = pipe.generate_batch([Request(question="And the colour?", images=request.images, video=request.video)], max_new_tokens=5)[0]
        turns = [("user", docs[k]["q"]), ("assistant", first), ("user", "Say it again.")]
        third = pipe.generate_batch([Request(turns=turns, images=request.images, video=request.video)], max_new_tokens=5)[0]
        assert answers == [a.split("\n\n")[0] for a in (first, second, third)]
    # doc_to_text saw every earlier answer and its own round info, and was asked once more to stop.
    assert [s[2] for s in seen] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert all(len(prev) == rnd for _, prev, rnd, _ in seen)
    assert [s[3] for s in seen if s[2] == 3] == [{"asked": 2}] * 3
