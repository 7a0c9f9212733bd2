"""lmms-eval model `onevision`: run lmms-eval's benchmarks on any checkpoint this project reads.

    pip install 'onevision[eval]'
    lmms-eval --model onevision --model_args pretrained=runs/ov/final,dtype=bf16 \\
        --tasks mme,videomme --device cuda --batch_size 8

Registration: lmms-eval (0.7) builds its model registry from the Python entry-point group
`lmms_eval.models`; each entry point yields a `ModelManifest`. This project's setup.cfg
declares `onevision = onevision.infer.lmms_eval_model:MANIFEST`, so installing the project
makes `--model onevision` resolve to `OneVisionLMMS` (a "simple" model: lmms-eval hands it
`Instance`s whose `args` carry the raw context and a `doc_to_visual` function).

Model arguments (`--model_args k=v,...`): `pretrained` (checkpoint folder, required), `dtype`
(bf16 / fp16 / fp32), `num_frames` (frames per video), `system_prompt`, `max_new_tokens`
(default for requests that set none); `device` and `batch_size` come from lmms-eval's own flags.

Requests:
- `generate_until`: the context becomes the user turn (placeholders put in front when it has
  none, as lmms-eval's llava_onevision model does); `max_new_tokens`, `temperature` (0 or
  `do_sample=False`: greedy), `top_p` are honoured, requests with the same settings are
  batched, and the text is cut at the first `until` string. Generation also stops at `<|im_end|>`.
- `loglikelihood`: the continuation is the assistant's reply; its score is the sum of the
  log-probabilities of the continuation's tokens and the closing `<|im_end|>` (what lmms-eval's
  llava_onevision scores too, which however returns the mean loss instead of the summed
  log-probability), with whether greedy decoding would have produced it. Requests of the same
  document share one prompt pass.
- `generate_until_multi_round`: round 0 as `generate_until`; later rounds take their media and
  context from the task's `doc_to_text` until it signals the end (a context may be a JSON list
  of turns); the answers of every round per request.
Visuals from `doc_to_visual`: PIL images (one: AnyRes, several: multi-image) or a path to a
video file or frame folder (image paths are read as images). One process only (no
accelerate sharding).
"""

from __future__ import annotations

import json
import os
from typing import Any

from lmms_eval.api.instance import GenerationResult, Instance, unwrap_generation_output
from lmms_eval.api.model import lmms
from lmms_eval.models.registry_v2 import ModelManifest
from loguru import logger
from PIL import Image
from tqdm.auto import tqdm

MANIFEST = ModelManifest(model_id="onevision", simple_class_path="onevision.infer.lmms_eval_model.OneVisionLMMS")
"""What the `lmms_eval.models` entry point yields."""

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# lmms-eval 0.7.3's evaluator passes every response through `unwrap_generation_output`, which
# turns a (logprob, is_greedy) tuple into its string and breaks multiple-choice scoring; a
# `GenerationResult` carries the tuple through untouched. Wrap only where that is needed.
_WRAP_SCORES = unwrap_generation_output((0.0, True))[0] != (0.0, True)


class OneVisionLMMS(lmms):
    """lmms-eval's view of a `onevision.infer.OneVision` pipeline."""

    is_simple = True

    def __init__(
        self,
        pretrained: str,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int | str = 1,
        num_frames: int | None = None,
        system_prompt: str | None = None,
        max_new_tokens: int = 256,
        **unused: Any,
    ) -> None:
        super().__init__()
        import torch

        from onevision.infer.pipeline import InferenceConfig, OneVision

        unused = {k: v for k, v in unused.items() if v is not None and k != "max_batch_size"}
        if unused:
            logger.warning(f"onevision: ignoring model arguments {sorted(unused)}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = InferenceConfig(system_prompt=system_prompt, num_frames=None if num_frames is None else int(num_frames))
        self.pipe = OneVision.from_pretrained(pretrained, device=device, dtype=dtype, config=config)
        self.batch_size = 1 if str(batch_size).startswith("auto") else max(1, int(batch_size))
        self.max_new_tokens = int(max_new_tokens)

    # ------------------------------------------------------------------ helpers

    def _doc(self, task: str, split: str, doc_id):
        return self.task_dict[task][split][doc_id]

    def _request(self, context: str, visuals) -> Any:
        """A `Request` from lmms-eval's context and visuals."""
        from onevision.infer.inputs import Request

        images, video = [], None
        for visual in [] if visuals is None else (visuals if isinstance(visuals, (list, tuple)) else [visuals]):
            if isinstance(visual, Image.Image):
                images.append(visual)
            elif isinstance(visual, (str, os.PathLike)) and (os.path.isdir(visual) or not str(visual).lower().endswith(IMAGE_EXTENSIONS)):
                if video is not None:
                    raise ValueError("onevision reads one video per request; the document gives several")
                video = os.fspath(visual)
            elif isinstance(visual, (str, os.PathLike)):
                images.append(os.fspath(visual))
            else:
                raise ValueError(f"onevision cannot read a visual of type {type(visual).__name__} (PIL images or paths only)")
        turns = _conversation(context)
        if turns:
            return Request(turns=turns, images=images, video=video)
        return Request(question=context, images=images, video=video)

    @staticmethod
    def _generation(gen_kwargs: dict, default_max: int) -> tuple[dict, list[str]]:
        """Our generation settings and the stop strings from lmms-eval's gen_kwargs."""
        until = gen_kwargs.get("until") or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        if not gen_kwargs.get("do_sample", temperature > 0):
            temperature = 0.0
        settings = {
            "max_new_tokens": int(gen_kwargs.get("max_new_tokens") or default_max),
            "temperature": temperature,
            "top_p": float(gen_kwargs.get("top_p") or 1.0),
        }
        return settings, until

    # ------------------------------------------------------------------ lmms-eval API

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Generated text per request, in order (see the module docstring)."""
        items = []
        for instance in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
            items.append((context, doc_to_visual(self._doc(task, split, doc_id)), dict(gen_kwargs or {})))
        bar = tqdm(total=len(requests), desc="onevision generate_until", disable=self.rank != 0)
        answers = self._answer(items, bar)
        bar.close()
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Each request's answers over several rounds, as lmms-eval's llava_onevision runs them.

        Round 0 answers the request's context about `doc_to_visual(doc)`. Before every later
        round the task's `doc_to_text(doc, previous_output=..., round_idx=..., previous_round_info=...)`
        returns (visuals, context, done, answers so far, info): the next round's media and
        question (a string, or a JSON list of `{"value": ...}` turns alternating user and
        assistant), whether to stop, and the answers it keeps. Requests still running are
        batched together in every round.
        """
        states = []
        for instance in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = instance.args
            doc = self._doc(task, split, doc_id)
            states.append({"doc": doc, "doc_to_text": doc_to_text, "gen_kwargs": dict(gen_kwargs or {}),
                           "visuals": doc_to_visual(doc), "context": context, "answers": [], "info": None})
        active = list(range(len(states)))
        bar = tqdm(total=len(requests), desc="onevision generate_until_multi_round", disable=self.rank != 0)
        round_index = 0
        while active:
            if round_index:
                still = []
                for index in active:
                    state = states[index]
                    visuals, context, done, answers, info = state["doc_to_text"](
                        state["doc"], previous_output=state["answers"], round_idx=round_index, previous_round_info=state["info"]
                    )
                    state.update(visuals=visuals, context=context, answers=list(answers), info=info)
                    if done:
                        bar.update(1)
                    else:
                        still.append(index)
                active = still
            items = [(states[i]["context"], states[i]["visuals"], states[i]["gen_kwargs"]) for i in active]
            for index, answer in zip(active, self._answer(items)):
                states[index]["answers"].append(answer)
            round_index += 1
        bar.close()
        return [state["answers"] for state in states]

    def _answer(self, items: list[tuple[str, Any, dict]], bar=None) -> list[str]:
        """Answers to (context, visuals, gen_kwargs) items, in order; items with the same
        settings are generated together in batches. A medium that cannot be read gets ""."""
        from onevision.data.media import MediaError

        answers = [""] * len(items)
        groups: dict[str, list[int]] = {}
        for index, (_, _, gen_kwargs) in enumerate(items):
            key = json.dumps({k: v for k, v in gen_kwargs.items() if k != "until"}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            settings, _ = self._generation(items[indices[0]][2], self.max_new_tokens)
            generation = self.pipe.generation_settings(**settings)
            for start in range(0, len(indices), self.batch_size):
                chunk, prepared = [], []
                for index in indices[start : start + self.batch_size]:
                    context, visuals, _ = items[index]
                    try:
                        prepared.append(self.pipe.prepare(self._request(context, visuals)))
                        chunk.append(index)
                    except MediaError as error:
                        logger.warning(f"onevision: {error}; answering with an empty string")
                if prepared:
                    for index, tokens in zip(chunk, self.pipe.generate_prepared(prepared, generation)):
                        _, until = self._generation(items[index][2], self.max_new_tokens)
                        answers[index] = _cut(self.pipe.decode(tokens), until)
                if bar is not None:
                    bar.update(len(indices[start : start + self.batch_size]))
        return answers

    def loglikelihood(self, requests: list[Instance]) -> list:
        """(summed log-probability, is greedy) of each request's continuation, in order.

        Each pair comes wrapped as `GenerationResult(text=pair)` when the installed lmms-eval
        would otherwise turn it into a string (see `_WRAP_SCORES`).
        """
        scores: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, instance in enumerate(requests):
            context, _, _, doc_id, task, split = instance.args
            groups.setdefault((context, str(doc_id), task, split), []).append(index)
        keys = list(groups)
        bar = tqdm(total=len(requests), desc="onevision loglikelihood", disable=self.rank != 0)
        for start in range(0, len(keys), self.batch_size):
            batch = keys[start : start + self.batch_size]
            prepared, continuations = [], []
            for key in batch:
                first = requests[groups[key][0]]
                context, _, doc_to_visual, doc_id, task, split = first.args
                doc = self._doc(task, split, doc_id)
                prepared.append(self.pipe.prepare(self._request(context, doc_to_visual(doc))))
                targets = []
                for index in groups[key]:
                    target = requests[index].args[1]
                    target = target if isinstance(target, str) else target(doc)
                    targets.append(self.pipe.encoder.encode_text(target) + self.pipe.answer_end)
                continuations.append(targets)
            for key, results in zip(batch, self.pipe.score(prepared, continuations)):
                for index, score in zip(groups[key], results):
                    scores[index] = (score.logprob, score.greedy)
            bar.update(sum(len(groups[k]) for k in batch))
        bar.close()
        return [GenerationResult(text=pair) for pair in scores] if _WRAP_SCORES else scores


def _cut(text: str, until: list[str]) -> str:
    """`text` up to the first of the stop strings."""
    for stop in until:
        if stop and stop in text:
            text = text[: text.index(stop)]
    return text


def _conversation(context: str) -> list[tuple[str, str]]:
    """(role, text) turns of a context that is a JSON list of `{"value": ...}` messages
    alternating user and assistant (lmms-eval's multi-round tasks), else []."""
    if not context.lstrip().startswith("["):
        return []
    try:
        messages = json.loads(context)
    except ValueError:
        return []
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "value" in m for m in messages):
        return []
    if len(messages) % 2 == 0:
        raise ValueError(f"a multi-round context must end with a user message; it has {len(messages)} messages")
    return [("user" if k % 2 == 0 else "assistant", str(m["value"])) for k, m in enumerate(messages)]

