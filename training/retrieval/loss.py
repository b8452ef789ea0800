"""The retrieval task: in-batch sampled softmax over weighted positives.

Each loss tweak is its own small function, applied in the order of TensorFlow Recommenders'
`tasks.Retrieval` (`retrieval_loss` composes them):

    1. logits = cos(query_i, pin_j) / temperature         (the model: `RetrievalModel.logits`)
    2. logQ correction: logits[:, j] -= log q(pin_j)      (`logq_correction`)
    3. mask: drop from row i's negatives every in-batch pin that is a positive of row i's user,
       of any kind, which includes exact duplicates of row i's own pin (accidental hits);
       the diagonal (row i's own positive) is never masked (`same_user_positive_mask`,
       `remove_masked`)
    4. weighted cross-entropy with the diagonal as the label, normalised by the sum of weights
       (`weighted_softmax_cross_entropy`)

Why logQ: in-batch negatives are sampled in proportion to how often a pin is a positive, so
popular pins are over-represented as negatives and the model learns to demote them. Subtracting
log q (Yi et al. 2019, "Sampling-bias-corrected neural modeling") restores the full-softmax
estimate. Masked entries are filled with -inf, so they get exactly zero gradient.

`engagement_aux_loss` is the optional auxiliary engagement task's loss (the `_aux` variants).

Notation: B rows in the batch (= N candidates; candidate j is row j's positive pin).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pinfeed.errors import ConfigError


def logq_correction(logits: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """[B, N] logits, [N] log sampling probability of each candidate -> [B, N] logits - log q."""
    if log_q.shape != logits.shape[1:]:
        raise ConfigError(
            f"log_q: shape {tuple(log_q.shape)} must be [N] = [{logits.shape[1]}], one per candidate"
        )
    return logits - log_q.unsqueeze(0)


def same_user_positive_mask(user_id: torch.Tensor, pin_id: torch.Tensor) -> torch.Tensor:
    """Which in-batch negatives are in fact positives of the row's user.

    Args:
        user_id: [B] int64, the user of each row.
        pin_id: [B] int64, the positive pin of each row (candidate j is `pin_id[j]`).

    Returns:
        [B, B] bool, True at (i, j) when the pair (user_id[i], pin_id[j]) is a row of the batch
        and j != i. That covers every pin the same user engaged with in the batch (any kind) and
        every duplicate of row i's own pin, whoever's row it is on. The diagonal is False.
    """
    users, user_index = torch.unique(user_id, return_inverse=True)
    pins, pin_index = torch.unique(pin_id, return_inverse=True)
    # [distinct users, distinct pins] table of the batch's pairs (at most B x B bools), read
    # back at every (row user, candidate pin): a gather, where torch.isin over the B x B pair
    # codes sorted them and took ~60 ms of an ~85 ms CPU step at B = 1024.
    in_batch = torch.zeros(users.shape[0], pins.shape[0], dtype=torch.bool, device=pin_id.device)
    in_batch[user_index, pin_index] = True
    mask = in_batch[user_index][:, pin_index]
    mask.fill_diagonal_(False)
    return mask


def remove_masked(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, N] logits with masked entries set to -inf: out of the softmax, zero gradient."""
    return logits.masked_fill(mask, float("-inf"))


def weighted_softmax_cross_entropy(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each row against its diagonal candidate, weighted, normalised by sum(w).

    Args:
        logits: [B, B] after correction and masking; the diagonal is finite.
        weights: [B] per-row weights >= 0.

    Returns:
        Scalar sum_i w_i * CE_i / sum_i w_i (0 when every weight is 0).
    """
    diagonal = torch.arange(logits.shape[0], device=logits.device)
    per_row = F.cross_entropy(logits, diagonal, reduction="none")
    weights = weights.to(per_row.dtype)
    return (weights * per_row).sum() / weights.sum().clamp_min(torch.finfo(per_row.dtype).tiny)


def retrieval_loss(
    logits: torch.Tensor,
    user_id: torch.Tensor,
    pin_id: torch.Tensor,
    weights: torch.Tensor,
    log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """The whole task in TFRS order (see module docstring).

    Args:
        logits: [B, B] cos / temperature, row i's positive at column i.
        user_id: [B] int64 user of each row.
        pin_id: [B] int64 positive pin of each row (= candidate of each column).
        weights: [B] positive weights (`weights.positive_weights`).
        log_q: [B] log sampling probability of each column's pin; None skips the correction.

    Returns:
        Scalar loss.
    """
    if logits.shape[0] != logits.shape[1]:
        raise ConfigError(f"logits: in-batch softmax needs [B, B], got {tuple(logits.shape)}")
    if log_q is not None:
        logits = logq_correction(logits, log_q)
    logits = remove_masked(logits, same_user_positive_mask(user_id, pin_id))
    return weighted_softmax_cross_entropy(logits, weights)


def shuffled_negatives(batch_size: int, shift: int) -> torch.Tensor:
    """[B] index pairing row i with candidate (i - shift) mod B: a derangement when 0 < shift < B."""
    if not 0 < shift < batch_size:
        raise ConfigError(f"shift: must be in [1, {batch_size - 1}] for batch size {batch_size}")
    return torch.remainder(torch.arange(batch_size) - shift, batch_size)


def engagement_aux_loss(
    positive_logits: torch.Tensor,
    negative_logits: torch.Tensor,
    engaged: torch.Tensor,
    negative_valid: torch.Tensor,
) -> torch.Tensor:
    """Auxiliary engagement head: binary logistic loss, engaged pairs vs shuffled in-batch pairs.

    Positives are the (query_i, pin_i) pairs of engagement rows (click, save); negatives pair
    each query with another row's pin (`shuffled_negatives`), minus pairs the positive mask
    flags (the user engaged with that pin too). Unweighted mean over both sets: the head
    learns "engaged at all", the main task learns "converted", on the same towers.

    Args:
        positive_logits: [B] head logits of (query_i, pin_i).
        negative_logits: [B] head logits of (query_i, shuffled pin).
        engaged: [B] bool, rows whose positive is an engagement.
        negative_valid: [B] bool, shuffled pairs that are true negatives.

    Returns:
        Scalar mean binary cross-entropy (0 when there is nothing to score).
    """
    logits = torch.cat([positive_logits[engaged], negative_logits[negative_valid]])
    if logits.numel() == 0:
        return positive_logits.sum() * 0.0
    labels = torch.cat(
        [
            torch.ones_like(positive_logits[engaged]),
            torch.zeros_like(negative_logits[negative_valid]),
        ]
    )
    return F.binary_cross_entropy_with_logits(logits, labels)
