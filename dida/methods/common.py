"""Pure maths shared by the adaptation methods (METHOD.md §3 DAFormer, §4 DIDA, §5.2 ProDA-style).

Tensor in, tensor out; vectorised; device-agnostic; every random draw comes from an explicit
``torch.Generator`` (drawn on the generator's device, then moved). Shapes: B images, C classes,
K bank slots, D feature width, (H, W) label/crop size, (h, w) decoder size. Ignore label 255.
The method classes compose these; loss weights (λ) are applied by the methods, not here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor, nn

from dida.bank import check_labels, class_means
from dida.data.classes import IGNORE_INDEX, NUM_CLASSES

# ---------------------------------------------------------------------------------------------
# Mean teacher (§3 step 1)


def ema_alpha(it: int, alpha_max: float = 0.999) -> float:
    """DAFormer's teacher momentum α_t = min(1 - 1/(t + 1), α_max); α_0 = 0 copies the student."""
    return min(1.0 - 1.0 / (it + 1), alpha_max)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """θ' <- α θ' + (1 - α) θ for parameters only; buffers (BN running stats) stay the teacher's.

    Exact at both ends (lerp): α = 1 keeps the teacher, α = 0 copies the student.
    """
    t_params, s_params = list(teacher.parameters()), list(student.parameters())
    if len(t_params) != len(s_params) or any(
        t.shape != s.shape for t, s in zip(t_params, s_params, strict=True)
    ):
        raise ValueError("teacher and student parameters differ; build the teacher by deep copy")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"EMA alpha {alpha} must lie in [0, 1]; use ema_alpha(it)")
    torch._foreach_lerp_(t_params, [s.detach() for s in s_params], 1.0 - alpha)


# ---------------------------------------------------------------------------------------------
# Segmentation loss and pseudo-labels (§1.3, §3 steps 4 and 6)


def resize_to(logits: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (align_corners=False) resize of (B, C, h, w) maps to ``size`` if they differ."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def seg_ce(
    logits: Tensor, labels: Tensor, weight: Tensor | None = None, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """mmseg cross-entropy: logits (B, C, h, w) upsampled to labels (B, H, W); scalar.

    Per-pixel CE (0 at ignored pixels) times the optional weight (B, H, W), then the mean over ALL
    B·H·W pixels — ignored pixels stay in the denominator (mmseg/DAFormer quirk).
    """
    logits = resize_to(logits, labels.shape[-2:])
    loss = F.cross_entropy(logits, labels, reduction="none", ignore_index=ignore_index)  # (B, H, W)
    if weight is not None:
        loss = loss * weight
    return loss.mean()


class PseudoLabels(NamedTuple):
    """Hard pseudo-labels (B, H, W) int64 and their per-pixel loss weight (B, H, W) float."""

    labels: Tensor
    weight: Tensor


def scale_ignore_rows(
    ignore_top: int, ignore_bottom: int, height: int, reference: int = 512
) -> tuple[int, int]:
    """DAFormer's ignored rows (15 top, 120 bottom, given for a 512 crop) scaled to ``height``."""
    return (
        math.floor(ignore_top * height / reference + 0.5),
        math.floor(ignore_bottom * height / reference + 0.5),
    )


def pseudo_label(
    probs: Tensor, threshold: float = 0.968, ignore_top: int = 15, ignore_bottom: int = 120
) -> PseudoLabels:
    """DAFormer pseudo-labels from teacher probabilities (B, C, H, W).

    labels = argmax_c; weight = ONE scalar per batch (as DAFormer): the fraction of all B·H·W
    pixels whose max probability is >= threshold, broadcast to (B, H, W); then the top
    ``ignore_top`` and bottom ``ignore_bottom`` rows are set to 0 (for other crop heights scale
    them with ``scale_ignore_rows``). The fraction is taken before the rows are zeroed.
    """
    if ignore_top < 0 or ignore_bottom < 0 or ignore_top + ignore_bottom > probs.shape[-2]:
        raise ValueError(
            f"ignored rows {ignore_top} + {ignore_bottom} do not fit a crop of height "
            f"{probs.shape[-2]}; scale them with scale_ignore_rows"
        )
    confidence, labels = probs.max(dim=1)  # (B, H, W)
    fraction = (confidence >= threshold).float().mean()
    weight = fraction * torch.ones_like(confidence)
    weight[:, :ignore_top] = 0
    weight[:, weight.shape[1] - ignore_bottom :] = 0
    return PseudoLabels(labels, weight)


# ---------------------------------------------------------------------------------------------
# ClassMix, strong photometric augmentation (§3 step 5) and MIC's block masks


def _uniform(shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """U(0, 1) draws on the generator's device."""
    return torch.rand(tuple(shape), generator=generator, device=generator.device)


def class_mix_masks(source_labels: Tensor, generator: torch.Generator) -> Tensor:
    """ClassMix masks: labels (B, H, W) -> (B, 1, H, W) float, 1 where the source is pasted.

    The classes are the unique labels of the WHOLE source batch (255 included, as DAFormer);
    each image independently picks ceil(n/2) of them at random (the generator) and its mask
    marks its own pixels of the picked classes.
    """
    batch = source_labels.shape[0]
    classes = torch.unique(source_labels)  # (n,) sorted
    n = len(classes)
    order = _uniform((batch, n), generator).argsort(dim=1).to(source_labels.device)
    chosen = classes[order[:, : (n + 1) // 2]]  # (B, ceil(n/2))
    table = torch.zeros(batch, 256, dtype=torch.bool, device=source_labels.device)
    table.scatter_(1, chosen, True)  # (B, 256) picked label values
    mask = table.gather(1, source_labels.reshape(batch, -1).long())
    return mask.reshape(batch, 1, *source_labels.shape[1:]).float()


def mix(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``a`` where mask = 1, ``b`` elsewhere; mask (B, 1, H, W).

    Works for images / instance maps (B, *, H, W) and labels / weights (B, H, W); keeps dtype.
    """
    m = mask.bool() if a.dim() == mask.dim() else mask[:, 0].bool()
    return torch.where(m, a, b)


def _mean_std(values: Sequence[float] | Tensor, like: Tensor) -> Tensor:
    """(1, 3, 1, 1) in 0..1 units; values > 1 are read as 0..255 units (mmseg's mean/std)."""
    t = torch.as_tensor(values, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
    return t / 255.0 if float(t.max()) > 1.0 else t


def blur_kernel_size(size: int, kernel_frac: float = 0.1) -> int:
    """DAFormer's odd blur kernel: ceil(frac·size), minus one if even (51 for 512)."""
    k = math.ceil(kernel_frac * size)
    return max(1, k - 1 if k % 2 == 0 else k)


def color_jitter(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Per-image random brightness/contrast/saturation/hue on RGB in [0, 1], shape kept.

    Factors ~ U(1 - s, 1 + s) (hue ~ U(-s, s)) per image; the order of the four ops is one random
    permutation per call (kornia ColorJitter). Loops over the B images (torchvision takes scalars).
    """
    batch = images.shape[0]
    draws = _uniform((batch, 4), generator).cpu() * 2 - 1  # (B, 4) in [-1, 1)
    order = torch.randperm(4, generator=generator, device=generator.device).tolist()
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    out = []
    for b in range(batch):
        x = images[b]
        for i in order:
            factor = float(draws[b, i]) * strength
            x = ops[i](x, factor if i == 3 else max(0.0, 1.0 + factor))
        out.append(x)
    return torch.stack(out)


def strong_augment(
    images: Tensor,
    mean: Sequence[float] | Tensor,
    std: Sequence[float] | Tensor,
    generator: torch.Generator,
    jitter_p: float = 0.2,
    jitter_s: float = 0.2,
    blur_p: float = 0.5,
    sigma: tuple[float, float] = (0.15, 1.15),
    kernel_frac: float = 0.1,
) -> Tensor:
    """DAFormer's strong photometric augmentation of normalised images (B, 3, H, W) -> same shape.

    One decision per call (DAFormer draws per iteration): colour jitter iff U > jitter_p (on the
    denormalised [0, 1] image, then renormalised), Gaussian blur iff U > blur_p with one σ ~ U(sigma)
    and an odd kernel of ≈ kernel_frac of each side. ``mean``/``std`` are the normalisation
    constants (0..255 units as mmseg, or 0..1). Returns a new tensor.
    """
    u_jitter, u_blur, u_sigma = _uniform((3,), generator).tolist()
    out = images
    if u_jitter > jitter_p:
        m, s = _mean_std(mean, images), _mean_std(std, images)
        rgb = (images * s + m).clamp(0.0, 1.0)
        out = (color_jitter(rgb, jitter_s, generator) - m) / s
    if u_blur > blur_p:
        sd = sigma[0] + (sigma[1] - sigma[0]) * u_sigma
        size = [
            blur_kernel_size(images.shape[-1], kernel_frac),
            blur_kernel_size(images.shape[-2], kernel_frac),
        ]
        out = TF.gaussian_blur(out, kernel_size=size, sigma=[sd, sd])
    return out.clone() if out is images else out


def block_mask(
    shape: Sequence[int], patch: int, ratio: float, generator: torch.Generator
) -> Tensor:
    """MIC's random block mask for images (B, H, W) -> (B, 1, H, W) float, 0 on masked pixels.

    The crop is tiled into ``patch`` x ``patch`` blocks from its top-left corner (blocks at the
    right and bottom border are cut by it); each block is masked independently with probability
    ``ratio`` (MIC keeps a block iff U(0, 1) > ratio). One draw per block from ``generator``.
    """
    if patch < 1 or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"need patch >= 1 pixel and ratio in [0, 1], got {patch} and {ratio}")
    batch, height, width = shape
    grid = (batch, 1, -(-height // patch), -(-width // patch))
    keep = (_uniform(grid, generator) > ratio).float()
    mask = keep.repeat_interleave(patch, dim=2).repeat_interleave(patch, dim=3)
    return mask[:, :, :height, :width]


# ---------------------------------------------------------------------------------------------
# Feature distance to the ImageNet model (§3 step 3)


def downscale_label_ratio(
    labels: Tensor,
    scale: int,
    min_ratio: float = 0.75,
    num_classes: int = NUM_CLASSES,
    ignore_index: int = IGNORE_INDEX,
) -> Tensor:
    """Majority-if-dominant downscaling: labels (B, H, W) -> (B, H // scale, W // scale).

    Each scale×scale cell takes its most frequent label (ignore counted as a class of its own)
    when that label covers >= min_ratio of the cell, else ``ignore_index``.
    """
    check_labels(labels, num_classes)
    index = torch.where(labels == ignore_index, num_classes, labels)
    one_hot = F.one_hot(index, num_classes + 1).permute(0, 3, 1, 2).float()  # (B, C+1, H, W)
    ratio, out = F.avg_pool2d(one_hot, scale).max(dim=1)  # (B, h, w)
    return out.masked_fill((out == num_classes) | (ratio < min_ratio), ignore_index)


def feature_distance_loss(
    f_student: Tensor,
    f_reference: Tensor,
    labels: Tensor,
    classes: Sequence[int],
    min_ratio: float = 0.75,
    num_classes: int = NUM_CLASSES,
) -> Tensor:
    """Mean L2 distance ‖F_student − F_reference‖₂ (over channels) on cells of ``classes``.

    f_* (B, D, h, w); labels (B, H, W) full resolution, downscaled by H // h with
    ``downscale_label_ratio``. The reference is detached. An empty mask gives 0 with the graph
    intact (finite zero gradient) instead of DAFormer's NaN. Unweighted (λ_FD is the method's).
    """
    scale = labels.shape[-2] // f_student.shape[-2]
    small = downscale_label_ratio(labels, scale, min_ratio, num_classes)
    if small.shape != (f_student.shape[0], *f_student.shape[-2:]):
        raise ValueError(
            f"labels {tuple(labels.shape)} do not downscale to the feature grid "
            f"{tuple(f_student.shape[-2:])}; the label size must be a multiple of it"
        )
    chosen = torch.as_tensor(list(classes), device=labels.device)
    mask = torch.isin(small, chosen).to(f_student.dtype)  # (B, h, w)
    distance = torch.linalg.vector_norm(f_student - f_reference.detach(), dim=1)  # (B, h, w)
    return (distance * mask).sum() / mask.sum().clamp_min(1.0)


# ---------------------------------------------------------------------------------------------
# DIDA instance level and cross-level interaction (§4)


def instance_scores(
    features: Tensor, bank: Tensor, normalize: bool = False, centre: bool = False
) -> Tensor:
    """s[b, k, h, w] = ⟨E[b, :, h, w], M_k⟩: features (B, D, h, w), bank (K, D) -> (B, K, h, w).

    ``centre`` first subtracts the bank mean μ = mean_k M_k from both (post-ReLU features share a
    large common component; without it their cosines crowd into [0, 1]); ``normalize`` then
    L2-normalises both (cosine similarity in [-1, 1]).
    """
    bank = bank.to(device=features.device, dtype=features.dtype)
    if centre:
        mean = bank.mean(dim=0)  # (D,)
        features, bank = features - mean[None, :, None, None], bank - mean
    if normalize:
        features, bank = F.normalize(features, dim=1), F.normalize(bank, dim=1)
    return torch.einsum("bdhw,kd->bkhw", features, bank)


def temperature_softmax(scores: Tensor, tp: float, dim: int = 1) -> Tensor:
    """softmax(scores / tp) along ``dim``; tp = 0 is the exact one-hot argmax (DIDA supplement).

    Continuous as tp -> 0 wherever the maximum is unique (ties: argmax takes the first index).
    """
    if tp < 0:
        raise ValueError(f"temperature tp must be >= 0 (0 = argmax), got {tp}")
    if tp == 0:
        index = scores.argmax(dim=dim, keepdim=True)
        return torch.zeros_like(scores).scatter_(dim, index, 1.0)
    return torch.softmax(scores / tp, dim=dim)


def sum_normalize(scores: Tensor, eps: float = 0.0, dim: int = 1) -> Tensor:
    """Released-code instance distribution q = s / (Σ_k s + eps) (no softmax; s >= 0 post-ReLU)."""
    return scores / (scores.sum(dim=dim, keepdim=True) + eps)


def _slot_one_hot(slot_labels: Tensor, num_classes: int, like: Tensor) -> Tensor:
    if (
        slot_labels.dim() != 1
        or int(slot_labels.min()) < 0
        or int(slot_labels.max()) >= num_classes
    ):
        raise ValueError(f"slot_labels must be a (K,) tensor of class IDs 0-{num_classes - 1}")
    return F.one_hot(slot_labels.to(like.device).long(), num_classes).to(like.dtype)  # (K, C)


def scatter_to_classes(q: Tensor, slot_labels: Tensor, num_classes: int = NUM_CLASSES) -> Tensor:
    """Scattering (instance -> semantic): a_c = Σ_{k: y_k = c} q_k; (B, K, h, w) -> (B, C, h, w)."""
    return torch.einsum("bkhw,kc->bchw", q, _slot_one_hot(slot_labels, num_classes, q))


def gather_from_classes(p: Tensor, slot_labels: Tensor) -> Tensor:
    """Gathering (semantic -> instance): g_k = p_{y_k}; (B, C, h, w) -> (B, K, h, w)."""
    return p.index_select(1, slot_labels.to(p.device).long())


def calibrate(q_teacher: Tensor, p_gathered: Tensor, eps: float = 1e-10) -> Tensor:
    """Paper calibration: q̂_k = q_k g_k / (Σ_j q_j g_j + eps), all (B, K, h, w), over dim 1.

    With probabilities in, q̂ is a distribution. Called with eps = 0 on raw scores s^A and the
    student's raw mixed-view logits gathered onto the slots, it is the released-code form
    (``calibrate_released``).
    """
    product = q_teacher * p_gathered
    return product / (product.sum(dim=1, keepdim=True) + eps)


def calibrate_released(s_teacher: Tensor, z_gathered: Tensor) -> Tensor:
    """Released code: q̂ = s^A ⊙ z_y / Σ_k (s^A ⊙ z_y) with raw logits z and no epsilon.

    Logits can be negative, so these "targets" can be negative, exceed 1, or blow up where the
    sum nears 0 — reproduced as documented (METHOD.md §4.4 step 10), not fixed.
    """
    return calibrate(s_teacher, z_gathered, eps=0.0)


def regenerate_pseudo_probs(
    p: Tensor, a: Tensor, alpha: float, mode: Literal["paper", "released"] = "paper"
) -> Tensor:
    """Scattering-regenerated semantic scores from p (B, C, H, W) and scattered a (B, C, H, W).

    paper: α p + (1 − α) a (a distribution if both are); released: p + (1 − α) a, unnormalised.
    """
    if mode == "paper":
        return alpha * p + (1.0 - alpha) * a
    if mode == "released":
        return p + (1.0 - alpha) * a
    raise ValueError(f"regeneration mode {mode!r} unknown; use 'paper' or 'released'")


def instance_loss(
    q_target: Tensor,
    q_student: Tensor,
    weight: Tensor | None = None,
    student_is_log: bool = True,
    eps: float = 1e-10,
    reduction: Literal["all", "weight"] = "all",
) -> Tensor:
    """L_ins = mean over pixels of −Σ_k q̂_k log q_k; q_* (B, K, h, w), weight (B, h, w); scalar.

    ``q_student`` is log-probabilities (paper: log_softmax(s/tp)) or, with student_is_log=False,
    probabilities logged as log(q + eps) (released: eps = 1e-10). The target is detached.
    reduction "all": Σ w·ce / (B·h·w) (like seg_ce); "weight": Σ w·ce / Σ w (mean over the
    weighted pixels, e.g. target-origin pixels only; 0 if Σ w = 0).
    """
    log_q = q_student if student_is_log else torch.log(q_student + eps)
    loss = -(q_target.detach() * log_q).sum(dim=1)  # (B, h, w)
    if weight is None:
        return loss.mean()
    if reduction == "all":
        return (loss * weight).mean()
    if reduction == "weight":
        return (loss * weight).sum() / weight.sum().clamp_min(1e-12)
    raise ValueError(f"reduction {reduction!r} unknown; use 'all' or 'weight'")


def slot_targets_from_labels(labels: Tensor, slot_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Instance targets from ground truth: uniform over the bank slots of each pixel's class.

    labels (B, H, W), slot_labels (K,) -> (q (B, K, H, W), valid (B, H, W) bool). Pixels whose
    label owns no slot (255, or a class without slots) get q = 0 and valid = False.
    """
    match = (labels[:, None] == slot_labels.to(labels.device)[None, :, None, None]).float()
    count = match.sum(dim=1, keepdim=True)  # (B, 1, H, W)
    return match / count.clamp_min(1.0), count[:, 0] > 0


def mix_instance_targets(q_teacher_target: Tensor, q_source_pasted: Tensor, mask: Tensor) -> Tensor:
    """View alignment for ClassMix: the instance target of the mixed image (B, K, h, w).

    Target-origin pixels keep the teacher's distribution on the clean target; source-pasted
    pixels (mask (B, 1, h, w) = 1) take ``q_source_pasted``. Our choice for the latter is
    ``slot_targets_from_labels`` of the pasted source labels — uniform over the slots of the true
    class: uses ground truth, costs no extra forward and is not a self-target; weight its invalid
    pixels (255) with 0.
    """
    return mix(mask, q_source_pasted, q_teacher_target)


def target_origin_mask(mix_mask: Tensor) -> Tensor:
    """Weight restricting L_ins to target-origin pixels: 1 − mask; (B, 1, H, W) -> (B, H, W)."""
    return 1.0 - mix_mask[:, 0]


# ---------------------------------------------------------------------------------------------
# ProDA-style prototypes (§5)


def prototype_distances(features: Tensor, prototypes: Tensor) -> Tensor:
    """d_c = ‖f − P_c‖₂: features (B, D, h, w), prototypes (C, D) -> (B, C, h, w)."""
    batch, dim, h, w = features.shape
    flat = features.flatten(2).transpose(1, 2)  # (B, hw, D)
    protos = prototypes.to(flat).expand(batch, -1, -1)  # (B, C, D)
    return torch.cdist(flat, protos).transpose(1, 2).reshape(batch, -1, h, w)


def prototype_logits(distances: Tensor, tau: float = 1.0) -> Tensor:
    """ProDA's assignment logits −(d − min_c d)·τ (τ multiplies the distance); (B, C, h, w)."""
    return -(distances - distances.min(dim=1, keepdim=True).values) * tau


def prototype_weights(distances: Tensor, tau: float = 1.0) -> Tensor:
    """Soft prototypical weights w = softmax_c(−(d − min d)·τ); (B, C, h, w)."""
    return torch.softmax(prototype_logits(distances, tau), dim=1)


class Rectified(NamedTuple):
    """Rectified pseudo-labels (B, h, w) and the renormalised w ⊙ p (B, C, h, w)."""

    labels: Tensor
    probs: Tensor


def rectified_pseudo_label(weights: Tensor, p: Tensor) -> Rectified:
    """ProDA rectification ŷ = argmax_c (w_c p_c); probs = w ⊙ p / Σ_c (w ⊙ p)."""
    product = weights * p
    probs = product / product.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return Rectified(probs.argmax(dim=1), probs)


def symmetric_ce(
    logits: Tensor,
    labels: Tensor,
    alpha: float = 0.1,
    beta: float = 1.0,
    ignore_index: int = IGNORE_INDEX,
    weight: Tensor | None = None,
) -> Tensor:
    """ProDA symmetric CE: α·CE + β·RCE, each a mean over valid (non-ignored) pixels; scalar.

    RCE = −Σ_c clamp(softmax(z), 1e-7, 1)_c · log clamp(onehot(ŷ)_c, 1e-4, 1)
        = −log(1e-4) · Σ_{c ≠ ŷ} p_c. logits (B, C, h, w) are upsampled to labels (B, H, W).
    ``weight`` (B, H, W), optional: per-pixel loss weight (e.g. DAFormer's confidence weight);
    the denominator stays the number of valid pixels.
    """
    logits = resize_to(logits, labels.shape[-2:])
    valid = (labels != ignore_index).float()
    count = valid.sum().clamp_min(1.0)
    if weight is not None:
        valid = valid * weight
    ce = F.cross_entropy(logits, labels, reduction="none", ignore_index=ignore_index)
    probs = torch.softmax(logits, dim=1).clamp(1e-7, 1.0)
    safe = torch.where(labels == ignore_index, 0, labels)[:, None]
    off_label = probs.sum(dim=1) - probs.gather(1, safe)[:, 0]  # (B, H, W)
    rce = -math.log(1e-4) * off_label
    return alpha * (ce * valid).sum() / count + beta * (rce * valid).sum() / count


def proto_kl(
    teacher_assign: Tensor, student_logassign: Tensor, valid: Tensor | None = None
) -> Tensor:
    """Structure learning KL(t ‖ s) summed over classes, mean over valid pixels; scalar.

    teacher_assign (B, C, h, w) probabilities (detached), student_logassign (B, C, h, w)
    log-probabilities, valid (B, h, w) bool/float or None (all). No valid pixel gives 0.
    """
    t = teacher_assign.detach()
    kl = (torch.xlogy(t, t) - t * student_logassign).sum(dim=1)  # (B, h, w)
    if valid is None:
        return kl.mean()
    valid = valid.to(kl.dtype)
    return (kl * valid).sum() / valid.sum().clamp_min(1.0)


def update_prototypes(
    prototypes: Tensor,
    features: Tensor,
    labels: Tensor,
    counts: Tensor,
    momentum: float = 1e-4,
    start_mean: bool = True,
    min_pixels: int = 10,
    mean_updates: int = 100,
    max_count: int = 3000,
) -> tuple[Tensor, Tensor]:
    """ProDA's online prototype update, per image then per class (vectorised over classes).

    prototypes (C, D), features (B, D, h, w), labels (B, h, w) at the feature size (255 ignored),
    counts (C,) updates seen so far -> (new prototypes, new counts); inputs are not modified.
    For each image b and class c with >= min_pixels pixels (and a non-zero mean): the running
    mean (P·n + v) / (n + 1) while n < mean_updates and start_mean, else the EMA
    P <- (1 − momentum) P + momentum v (``momentum`` = weight of the NEW mean, ProDA 1e-4);
    n <- min(n + 1, max_count).
    """
    means, pixels = class_means(features, labels, prototypes.shape[0])  # (B, C, D), (B, C)
    protos, counts = prototypes.float().clone(), counts.clone()
    for b in range(means.shape[0]):
        v = means[b].to(protos)
        present = ((pixels[b] >= min_pixels) & (v.sum(dim=1) != 0)).to(counts.device)
        n = counts.to(protos)[:, None]
        running = (protos * n + v) / (n + 1)
        moving = protos * (1.0 - momentum) + momentum * v
        use_mean = (counts < mean_updates) & start_mean
        new = torch.where(use_mean[:, None], running, moving)
        protos = torch.where(present[:, None], new, protos)
        counts = torch.where(present, (counts + 1).clamp_max(max_count), counts)
    return protos, counts
