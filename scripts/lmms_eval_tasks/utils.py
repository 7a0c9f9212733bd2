"""Functions of the local lmms-eval tasks run by scripts/lmms_eval_local.py.

Documents name their media by paths relative to the folder lmms-eval runs in (the script's
work folder): `images` (image files, opened here as PIL images, as lmms-eval's own tasks hand
them over) and `video` (a video file, handed over as a path).
"""

from PIL import Image


def doc_to_visual(doc):
    """PIL images of the document's image files, then its video path."""
    visuals = []
    for path in doc.get("images") or []:
        with Image.open(path) as image:
            visuals.append(image.convert("RGB"))
    if doc.get("video"):
        visuals.append(doc["video"])
    return visuals


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def rounds_doc_to_text(doc, lmms_eval_specific_kwargs=None, previous_output=None, round_idx=None, previous_round_info=None):
    """Round 0: the first question; round k: the k-th follow-up about the same media; then done."""
    if round_idx is None:
        return doc["question"]
    follow_ups = doc["follow_ups"]
    if round_idx > len(follow_ups):
        return None, None, True, previous_output, previous_round_info
    return doc_to_visual(doc), follow_ups[round_idx - 1], False, previous_output, {"round": round_idx}


def rounds_process_results(doc, results):
    """answered: 1 when every round got a non-empty answer."""
    rounds = results[0] if results and isinstance(results[0], list) else results
    expected = 1 + len(doc["follow_ups"])
    return {"answered": float(len(rounds) == expected and all(answer.strip() for answer in rounds))}


def perplexity_process_results(doc, results):
    """perplexity: the answer's log-probability (lmms-eval aggregates exp(-mean)).

    lmms-eval 0.7.3's built-in process_results for loglikelihood tasks unpacks the list of
    the document's responses as if it were the one (log-probability, is greedy) pair, which
    fails for every model; a loglikelihood task needs its own, like this one.
    """
    ((logprob, _greedy),) = results
    return {"perplexity": logprob}
