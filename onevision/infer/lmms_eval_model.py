"""lmms-eval model `onevision`: run lmms-eval's benchmarks on any checkpoint this project reads.

    pip install 'onevision[eval]'
    lmms-eval --model onevision --model_args pretrained=runs/ov/final,dtype=bfloat16,max_frames_num=32 \\
        --tasks mme,videomme --device cuda --batch_size 8

Registration: lmms-eval (0.7) builds its model registry from the Python entry-point group
`lmms_eval.models`; setup.cfg declares `onevision = onevision.infer.lmms_eval_model:MANIFEST`,
so installing the project makes `--model onevision` resolve to `OneVisionLMMS` (a "simple"
model: lmms-eval hands it `Instance`s whose `args` carry the raw context and `doc_to_visual`).

Model arguments: `onevision.infer.lmms_eval_args` (ours, and those of lmms-eval's own
llava_onevision models, each accepted with its meaning there or refused by name).

Requests:
- `generate_until`: the context becomes the user turn (placeholders put in front when it has
  none, as lmms-eval's llava_onevision does); `max_new_tokens`, `temperature` (0 or
  `do_sample=False`: greedy), `top_p` are honoured, requests with the same settings are
  batched, and the text is cut at the first `until` string. Generation also stops at `<|im_end|>`.
- `loglikelihood`: the continuation is the assistant's reply, scored with the closing
  `<|im_end|>` (as lmms-eval's llava_onevision scores it), with whether greedy decoding would
  have produced it. What the score is depends on the task's output type, because lmms-eval
  0.7.3 reads it two ways: `multiple_choice` picks `argmin` (its own models return losses),
  so there it is the loss, minus the summed log-probability; `loglikelihood` tasks aggregate
  `perplexity = exp(-mean)`, so there it is the summed log-probability. (lmms-eval 0.7.3's
  built-in process_results for loglikelihood tasks fails for every model, so such a task needs
  its own, as scripts/lmms_eval_tasks/utils.py has; acc_mutual_info requests are refused.)
- `generate_until_multi_round`: round 0 as `generate_until`; later rounds take their media and
  context from the task's `doc_to_text` until it signals the end (a context may be a JSON list
  of turns); the answers of every round per request.

A bad document (a placeholder count that does not match its media, a missing or undecodable
file, media over the visual budget) is logged in one line naming the task and document, listed
in `bad_documents`, and scored as a miss: an empty answer (every round), log-probability -inf,
or, in multiple choice, its gold option ranked last. The run goes on.

Visuals from `doc_to_visual`: PIL images (one: AnyRes, several: multi-image) or a path to a
video file or frame folder (image paths are read as images). One process only (no accelerate
sharding).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any


def _manifest():
    """What lmms-eval registers: model id `onevision` -> `OneVisionLMMS`."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="onevision", simple_class_path="onevision.infer.lmms_eval_model.OneVisionLMMS")


# The entry point's payload, bound before anything from lmms_eval is imported: importing
# lmms_eval.models loads every entry point, so when this module is imported first it is
# reached again half-imported. lmms-eval accepts a callable that returns the manifest.
MANIFEST = _manifest

from lmms_eval.api.instance import GenerationResult, Instance, unwrap_generation_output
from lmms_eval.api.model import lmms
from loguru import logger

from onevision.infer.lmms_eval_args import ModelArgumentError, parse_model_args
from onevision.infer.lmms_eval_requests import BAD_INPUT, Generator, visual_request
from onevision.utils.progress import progress_bar

# lmms-eval 0.7.3's evaluator passes every response through `unwrap_generation_output`, which
# turns a (score, is_greedy) tuple into its string and breaks the metrics; a
# `GenerationResult` carries the tuple through untouched. Wrap only where that is needed.
_WRAP_SCORES = unwrap_generation_output((0.0, True))[0] != (0.0, True)


class OneVisionLMMS(lmms):
    """lmms-eval's view of a `onevision.infer.OneVision` pipeline.

    Keyword arguments are lmms-eval's `--model_args` (see `onevision.infer.lmms_eval_args`).
    """

    is_simple = True

    def __init__(self, **model_args: Any) -> None:
        super().__init__()
        import torch

        from onevision.infer.pipeline import InferenceConfig, OneVision

        settings = parse_model_args(model_args)
        for note in settings.notes:
            logger.info(f"onevision: {note}")
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        config = InferenceConfig(
            system_prompt=settings.system_prompt, prompt_format=settings.prompt_format,
            num_frames=settings.num_frames, video_backend=settings.video_backend,
        )
        pipe = OneVision.from_pretrained(settings.pretrained, device=device, dtype=settings.dtype, config=config)
        pooling = {"video_pool_stride": settings.video_pool_stride, "video_pool_mode": settings.video_pool_mode}
        pooling = {k: v for k, v in pooling.items() if v is not None}
        if pooling:
            # The chat template and an original folder's runtime settings carry over.
            pipe = pipe.reconfigured(visual=dataclasses.replace(pipe.model.config.visual, **pooling))
        if settings.attn_implementation is not None:
            try:
                for part in (pipe.model.language_model, pipe.model.vision_tower.vision_model):
                    part.set_attn_implementation(settings.attn_implementation)
            except (ImportError, ValueError) as error:
                raise ModelArgumentError(f"model argument attn_implementation={settings.attn_implementation}: {error}") from None
        self.pipe = pipe
        self.settings = settings
        self.batch_size = settings.batch_size
        self.bad_documents: list[tuple[str, Any, str]] = []
        """(task, doc id, reason) of every document scored as a miss."""

    # ------------------------------------------------------------------ helpers

    def _doc(self, task: str, split: str, doc_id):
        return self.task_dict[task][split][doc_id]

    def _prepare(self, context: str, doc_to_visual, task: str, split: str, doc_id):
        """The prepared request of one document, or None (logged, recorded) when it is bad."""
        try:
            return self._prepare_visuals(context, doc_to_visual(self._doc(task, split, doc_id)))
        except BAD_INPUT as error:
            self._bad(task, doc_id, error)
            return None

    def _prepare_visuals(self, context: str, visuals):
        if self.settings.reasoning_prompt:
            context = context.strip() + self.settings.reasoning_prompt
        return self.pipe.prepare(visual_request(context, visuals))

    def _bad(self, task: str, doc_id, error: Exception) -> None:
        reason = " ".join(str(error).split()) or type(error).__name__
        self.bad_documents.append((task, doc_id, reason))
        logger.warning(f"onevision: task {task} doc {doc_id}: {reason}; scored as a miss")

    def _generator(self) -> Generator:
        return Generator(self.pipe, self.settings.max_new_tokens, self.batch_size, self.settings.use_cache)

    # ------------------------------------------------------------------ lmms-eval API

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Generated text per request, in order ("" for a bad document)."""
        generator = self._generator()
        answers = [""] * len(requests)
        for index, instance in enumerate(requests):
            context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
            prepared = self._prepare(context, doc_to_visual, task, split, doc_id)
            if prepared is not None:
                generator.add(index, prepared, gen_kwargs)
        bar = progress_bar(total=len(requests), desc="onevision generate_until", disable=self.rank != 0)
        for index, text in generator.run(bar):
            answers[index] = text
        bar.update(len(requests) - bar.n)  # the bad documents
        bar.close()
        return answers

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Each request's answers over several rounds, as lmms-eval's llava_onevision runs them.

        Round 0 answers the request's context about `doc_to_visual(doc)`. Before every later
        round the task's `doc_to_text(doc, previous_output=..., round_idx=..., previous_round_info=...)`
        returns (visuals, context, done, answers so far, info): the next round's media and
        question (a string, or a JSON list of `{"value": ...}` turns alternating user and
        assistant), whether to stop, and the answers it keeps. Requests still running are
        batched together in every round. A bad document answers "" in every round.
        """
        states = []
        for instance in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = instance.args
            doc = self._doc(task, split, doc_id)
            state = {"doc": doc, "doc_to_text": doc_to_text, "gen_kwargs": dict(gen_kwargs or {}), "task": task,
                     "doc_id": doc_id, "context": context, "answers": [], "info": None, "bad": False}
            try:
                state["visuals"] = doc_to_visual(doc)
            except BAD_INPUT as error:
                self._bad(task, doc_id, error)
                state.update(visuals=None, bad=True)
            states.append(state)
        active = list(range(len(states)))
        bar = progress_bar(total=len(requests), desc="onevision generate_until_multi_round", disable=self.rank != 0)
        round_index = 0
        while active:
            if round_index:
                active = [index for index in active if self._next_round(states[index], round_index)]
                bar.update(len(requests) - bar.n - len(active))
            generator = self._generator()
            for index in active:
                state = states[index]
                if state["bad"]:
                    continue
                try:
                    generator.add(index, self._prepare_visuals(state["context"], state["visuals"]), state["gen_kwargs"])
                except BAD_INPUT as error:
                    self._bad(state["task"], state["doc_id"], error)
                    state["bad"] = True
            answers = dict(generator.run())
            for index in active:
                states[index]["answers"].append(answers.get(index, ""))
            round_index += 1
        bar.close()
        return [state["answers"] for state in states]

    def _next_round(self, state: dict, round_index: int) -> bool:
        """Ask the task for the next round of one request; False when it is done."""
        try:
            visuals, context, done, answers, info = state["doc_to_text"](
                state["doc"], previous_output=state["answers"], round_idx=round_index, previous_round_info=state["info"]
            )
        except BAD_INPUT as error:
            if not state["bad"]:
                self._bad(state["task"], state["doc_id"], error)
            return False
        state.update(visuals=visuals, context=context, answers=list(answers), info=info)
        return not done

    def loglikelihood(self, requests: list[Instance]) -> list:
        """(score, is greedy) of each request's continuation, in order (see the module docstring).

        Each pair comes wrapped as `GenerationResult(text=pair)` when the installed lmms-eval
        would otherwise turn it into a string (see `_WRAP_SCORES`).
        """
        unconditional = [r for r in requests if len(r.args) != 6]
        if unconditional:
            raise ValueError(
                f"task {unconditional[0].task_name}: lmms-eval 0.7.3 builds acc_mutual_info's unconditional requests "
                "without their document (2 arguments, not 6) and ranks that metric by argmax over the losses it ranks acc "
                "by argmin; no model can score it. Remove acc_mutual_info from the task's metric_list"
            )
        scores: list[tuple[float, bool] | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for index, instance in enumerate(requests):
            context, _, _, doc_id, task, split = instance.args
            groups.setdefault((context, str(doc_id), task, split), []).append(index)
        keys = list(groups)
        bar = progress_bar(total=len(requests), desc="onevision loglikelihood", disable=self.rank != 0)
        for start in range(0, len(keys), self.batch_size):
            batch, prepared, continuations = [], [], []
            for key in keys[start : start + self.batch_size]:
                first = requests[groups[key][0]]
                context, _, doc_to_visual, doc_id, task, split = first.args
                doc = self._doc(task, split, doc_id)
                one = self._prepare(context, doc_to_visual, task, split, doc_id)
                if one is None:
                    for index, miss in zip(groups[key], _misses([requests[i] for i in groups[key]], doc)):
                        scores[index] = miss
                    continue
                targets = []
                for index in groups[key]:
                    target = requests[index].args[1]
                    target = target if isinstance(target, str) else target(doc)
                    targets.append(self.pipe.encoder.encode_reply(str(target)) + self.pipe.answer_end)
                batch.append(key)
                prepared.append(one)
                continuations.append(targets)
            if prepared:
                for key, results in zip(batch, self.pipe.score(prepared, continuations)):
                    for index, score in zip(groups[key], results):
                        sign = -1.0 if _output_type(requests[index]) == "multiple_choice" else 1.0
                        scores[index] = (sign * score.logprob, score.greedy)
            bar.update(sum(len(groups[k]) for k in keys[start : start + self.batch_size]))
        bar.close()
        return [GenerationResult(text=pair) for pair in scores] if _WRAP_SCORES else scores


def _output_type(instance: Instance) -> str:
    """'multiple_choice' or 'loglikelihood': the output type of the task that made the request.

    Read from the task itself (`doc_to_visual` is its bound method); without one, from the
    continuation: lmms-eval 0.7.3 passes multiple-choice options as strings and a
    loglikelihood task's `doc_to_target` as a function (`ConfigurableTask.construct_requests`).
    """
    task = getattr(instance.args[2], "__self__", None)
    kind = getattr(task, "OUTPUT_TYPE", None)
    if kind in ("multiple_choice", "loglikelihood"):
        return kind
    return "loglikelihood" if callable(instance.args[1]) else "multiple_choice"


def _misses(group: list[Instance], doc) -> list[tuple[float, bool]]:
    """Scores that make a bad document a miss: log-probability -inf (perplexity inf, never
    greedy); in multiple choice the loss +inf for the gold option(s) and the largest finite
    loss for the others, so lmms-eval's argmin never picks the gold."""
    if _output_type(group[0]) != "multiple_choice":
        return [(-math.inf, False)] * len(group)
    gold = _gold_options(getattr(group[0].args[2], "__self__", None), doc)
    return [(math.inf if k in gold else sys.float_info.max, False) for k in range(len(group))]


def _gold_options(task, doc) -> set[int]:
    """Indices of a multiple-choice document's gold options, as lmms-eval's process_results
    finds them; {0} when the task is unknown (argmin over equal losses picks the first)."""
    if task is None:
        return {0}
    try:
        choices = task.doc_to_choice(doc)
        gold = task.doc_to_text(doc) if task.multiple_input else task.doc_to_target(doc)
    except (LookupError, TypeError, ValueError, AttributeError):  # the document is bad; its gold may be too
        return {0}
    indices = set()
    for one in gold if isinstance(gold, list) else [gold]:
        if not isinstance(one, str):
            indices.add(int(one))
        elif one in choices:
            indices.add(choices.index(one))
    return indices or {0}
