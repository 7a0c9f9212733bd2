"""The LM head on labelled positions only, in chunks, equals the full head in loss and gradients."""

import pytest
import torch
from torch import nn

from onevision.train.loss import (
    IGNORE_INDEX,
    chunks_needed,
    full_head_loss,
    labelled_lm_loss,
    labelled_token_losses,
    shifted_targets,
)


def _case(batch=2, length=40, width=16, vocab=97, supervised=0.3):
    hidden = torch.randn(batch, length, width, requires_grad=True)
    head = nn.Linear(width, vocab, bias=False)
    labels = torch.randint(0, vocab, (batch, length))
    labels[torch.rand(batch, length) > supervised] = IGNORE_INDEX
    return hidden, labels, head


@pytest.mark.parametrize("chunk_rows", [1, 5, 4096])
def test_loss_and_gradients_match_full_head(chunk_rows):
    hidden, labels, head = _case()
    ours = labelled_lm_loss(hidden, labels, head, chunk_rows=chunk_rows)
    grads = torch.autograd.grad(ours, [hidden, head.weight])
    reference = full_head_loss(hidden, labels, head)
    expected = torch.autograd.grad(reference, [hidden, head.weight])
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


def test_head_runs_on_labelled_rows_only_and_in_chunks():
    hidden, labels, head = _case(batch=1, length=50)
    rows_seen = []
    head.register_forward_hook(lambda module, args, out: rows_seen.append(args[0].shape[0]))
    with torch.no_grad():
        losses, positions = labelled_token_losses(hidden, labels, head, chunk_rows=4)
    _, mask = shifted_targets(labels)
    assert sum(rows_seen) == int(mask.sum()) == losses.numel()
    assert max(rows_seen) <= 4 and len(rows_seen) == chunks_needed(int(mask.sum()), 4)
    assert torch.equal(positions, mask.flatten().nonzero().squeeze(1))


def test_fixed_number_of_chunks_allows_empty_chunks():
    hidden, labels, head = _case(batch=1, length=12, supervised=0.0)
    labels[0, 4:7] = torch.tensor([3, 5, 7])
    calls = []
    head.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    loss = labelled_lm_loss(hidden, labels, head, chunk_rows=4096, num_chunks=7)
    assert len(calls) == 7 and 0 in calls
    torch.testing.assert_close(loss, full_head_loss(hidden, labels, head))


def test_nothing_supervised_gives_zero_with_a_graph():
    hidden, _, head = _case()
    labels = torch.full(hidden.shape[:2], IGNORE_INDEX)
    loss = labelled_lm_loss(hidden, labels, head)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() == 0
