"""How informative is a DIDA run's instance level? Diagnostics without training (CPU, ~1-2 min).

For a DIDA run folder (or a shipped checkpoint folder under assets/checkpoints/) — the final
student, the EMA teacher when the folder keeps a training checkpoint (else the student), and the
last bank snapshot (or ``--snapshot i``) — with the run's method options (``--set`` changes them,
e.g. ``--set centre=true`` asks what centring would do to the same model and bank):

1. on ``--images`` target val images, at feature resolution: the instance target q̂ the teacher
   gives each pixel (gathered with the teacher's p, or with the student's logits z on the same
   image when the run gathers from the student; negatives clipped): its mass on its top class,
   whether that class is the teacher's argmax, and its entropy within that class against
   log(slots of the class) (ratio 1 = uniform within the class: no instance information);
2. slot purity: the active slots the model's own classifier puts in the slot's class;
3. on ``--batches`` training batches drawn like the run's (ClassMix, strong augmentation): the norm
   of the gradients of λ·L_ins and of L_T with respect to the student's mixed-view features, on
   target-origin cells, their ratio and cosine;
4. pixel and mean class accuracy of the semantic argmax, the scattered instance scores, the
   regenerated pseudo-label scores and the nearest slot's class against the ground truth;
5. mean ‖e‖·‖M_k‖ over target cells and slots: tp × this is the temperature an unnormalised
   dot product needs to match a cosine softmax at tp (the cosine-vs-dot ablation).

    python -m scripts.dida_diagnostics assets/checkpoints/dida
    python -m scripts.dida_diagnostics runs/bench/main/dida_s0 --images 8 --batches 4 --set centre=true
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dida import runs
from dida.bank import BankHistory, InstanceBank
from dida.config import TrainConfig
from dida.data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from dida.data.uda import DataConfig, build_uda_data, target_val_images
from dida.methods.base import MethodContext
from dida.methods.common import (
    gather_from_classes,
    regenerate_pseudo_probs,
    scatter_to_classes,
    seg_ce,
)
from dida.methods.dida import DIDA, downsample_labels
from dida.methods.registry import build_method

RULES = ("semantic p", "scatter(calibrated q)", "regenerated", "nearest slot")


def load_method(run: Path, cfg: TrainConfig, options: dict, snapshot: int) -> tuple[DIDA, int]:
    """The run's DIDA method: student, teacher, bank snapshot ``snapshot``; (method, iteration)."""
    model = runs.load_run_model(run)
    ctx = MethodContext(crop=tuple(cfg.data.crop), seed=cfg.seed)
    method = build_method(cfg.method, model, ctx, {**cfg.method_options, **options})
    if not isinstance(method, DIDA):
        raise SystemExit(f"{run} is a {cfg.method} run; the diagnostics need a DIDA run")
    if (run / runs.CHECKPOINT).exists():
        method.teacher = runs.load_checkpoint_model(run)
    history = BankHistory.load(run / runs.BANK_HISTORY)
    snap = history[snapshot % len(history)]
    method.bank = InstanceBank.from_snapshot(snap)
    return method, snap.iteration


def instance_target(method: DIDA, image: torch.Tensor) -> tuple:
    """(q̂ (1, K', h, w) >= 0, teacher p (1, C, h, w), the teacher's InstanceView, the student's
    output) on one val image (1, 3, H, W)."""
    teacher = method.teacher_view(image)
    view = method.instance_view(teacher)
    with torch.no_grad():
        student = method.model(image)
    target = method.instance_target(view, student.logits).clamp_min(0.0)
    target = target / target.sum(1, keepdim=True).clamp_min(1e-12)
    return target, teacher.logits.softmax(1), view, student


def flipped_share(method: DIDA, view, student) -> float | None:
    """Share of cells whose released-code normaliser Σ_k s_k·z_{y_k} (scores times the student's
    raw logits gathered onto the slots) is ≤ 0: there q̂ = s ⊙ z_y / Σ has the sign of −z_y, so its
    positive part lies on the slots of classes with negative logits. None when the run gathers
    with the teacher's probabilities (the normaliser is then positive)."""
    if method.cfg.gather_from == "teacher":
        return None
    gathered = gather_from_classes(student.logits, method.active_slots()[1])
    return nonpositive_share(view.scores if method.cfg.mode == "released" else view.q, gathered)


def nonpositive_share(scores: torch.Tensor, gathered: torch.Tensor) -> float:
    """Share of cells of (B, K, h, w) scores and gathered logits where Σ_k s_k·g_k ≤ 0."""
    return float(((scores * gathered).sum(1) <= 0).float().mean())


def within_class_stats(target: torch.Tensor, p: torch.Tensor, slot_labels: torch.Tensor) -> dict:
    """Per pixel: top class of the scattered target, its mass, agreement with argmax p, and the
    entropy of the target restricted to that class's slots (renormalised)."""
    mass = scatter_to_classes(target, slot_labels, NUM_CLASSES)[0]  # (C, h, w)
    share, top = mass.max(0)  # (h, w)
    own = (slot_labels[:, None, None] == top[None]).float()  # (K', h, w)
    inside = target[0] * own
    inside = inside / inside.sum(0, keepdim=True).clamp_min(1e-12)
    entropy = torch.special.entr(inside).sum(0)  # (h, w) nats
    slots = torch.bincount(slot_labels, minlength=NUM_CLASSES).float()[top]
    agree = top == p[0].argmax(0)
    return {"top": top, "share": share, "agree": agree, "entropy": entropy, "slots": slots}


def rule_maps(method: DIDA, p: torch.Tensor, view, student) -> dict[str, torch.Tensor]:
    """(h, w) class maps of the decision rules for one image."""
    slot_labels = method.active_slots()[1]
    regen = regenerate_pseudo_probs(p, view.class_scores, method.cfg.scatter_alpha, method.cfg.mode)
    maps = (p, view.class_scores, regen)
    out = {name: m.argmax(1)[0] for name, m in zip(RULES, maps, strict=False)}
    scores = method.scores(student.features, method.active_slots()[0])  # (1, K', h, w)
    out["nearest slot"] = slot_labels[scores.argmax(1)[0]]
    return out


def val_pass(method: DIDA, data: DataConfig, images: int) -> dict:
    """Entropy, mass and agreement statistics, rule confusions and feature norms over val images."""
    val = target_val_images(data)
    bank, slot_labels = method.active_slots()
    stats, norms, flipped = [], [], []
    confusions = {n: torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long) for n in RULES}
    for i in range(min(images, len(val))):
        item = val[i]
        target, p, view, student = instance_target(method, item["image"][None])
        stats.append(within_class_stats(target, p, slot_labels))
        flipped.append(flipped_share(method, view, student))
        gt = downsample_labels(item["label"][None], target.shape[-2:])[0]
        accumulate(confusions, rule_maps(method, p, view, student), gt)
        feature_norm = torch.linalg.vector_norm(student.features, dim=1).mean()
        norms.append(float(feature_norm * torch.linalg.vector_norm(bank, dim=1).mean()))
    merged = {key: torch.cat([s[key].flatten() for s in stats]) for key in stats[0]}
    flips = None if None in flipped else sum(flipped) / len(flipped)
    return {"stats": merged, "confusions": confusions, "norm_product": sum(norms) / len(norms),
            "flipped": flips}  # fmt: skip


def accumulate(confusions: dict, maps: dict, gt: torch.Tensor) -> None:
    valid = gt != IGNORE_INDEX
    for name, pred in maps.items():
        idx = gt[valid] * NUM_CLASSES + pred[valid]
        confusions[name] += torch.bincount(idx, minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, -1)


def accuracy(confusion: torch.Tensor) -> tuple[float, float]:
    """(pixel accuracy, mean class accuracy over classes present) in %."""
    c = confusion.double()
    present = c.sum(1) > 0
    return 100 * float(c.diag().sum() / c.sum()), 100 * float((c.diag() / c.sum(1))[present].mean())


def slot_purity(method: DIDA) -> tuple[float, torch.Tensor, torch.Tensor]:
    """(% of active slots classified as their class, hits per class, slots per class)."""
    bank, slot_labels = method.active_slots()
    head = method.model.decode_head.conv_seg
    with torch.no_grad():
        predicted = head(bank[:, :, None, None])[:, :, 0, 0].argmax(1)
    hits = predicted == slot_labels
    per_class = torch.bincount(slot_labels[hits], minlength=NUM_CLASSES)
    return 100 * float(hits.float().mean()), per_class, torch.bincount(slot_labels, minlength=19)


def gradient_ratio(method: DIDA, batch: dict) -> tuple[float, float]:
    """‖∂(λ L_ins)/∂e‖ / ‖∂L_T/∂e‖ and their cosine on the student's target-origin mixed-view
    features e, for one training batch composed exactly as DIDA's step composes it."""
    src, tgt = batch["source"], batch["target"]
    teacher = method.teacher_view(tgt["image"])
    view = method.instance_view(teacher)
    mixed = method.mixed_view(src, tgt["image"], *method.regenerated_pseudo_labels(teacher, view))
    out = method.model(mixed.image)
    loss_t = seg_ce(out.logits, mixed.label, mixed.weight)
    loss_ins = method.cfg.ins_lambda * method.instance_term(view, out, mixed, src, 10**9)
    (g_t,) = torch.autograd.grad(loss_t, out.features, retain_graph=True)
    (g_ins,) = torch.autograd.grad(loss_ins, out.features)
    target_cells = 1.0 - F.interpolate(mixed.mask, size=out.features.shape[-2:], mode="nearest")
    g_t, g_ins = (g_t * target_cells).flatten(), (g_ins * target_cells).flatten()
    ratio = float(g_ins.norm() / g_t.norm().clamp_min(1e-30))
    return ratio, float(F.cosine_similarity(g_ins, g_t, dim=0))


def print_within_class(stats: dict) -> None:
    """Per top class: pixels, mass share, agreement, within-class entropy vs log(slots)."""
    top, share, entropy = stats["top"], stats["share"], stats["entropy"]
    ratio = entropy / stats["slots"].clamp_min(2).log()
    print(f"  instance targets over {len(top)} target cells (feature resolution):")
    print(f"    mass on the top class: mean {100 * share.mean():.1f} %, median "
          f"{100 * share.median():.1f} %; top class = teacher argmax {100 * stats['agree'].float().mean():.1f} %")  # fmt: skip
    print(
        f"    within-class entropy / log(slots of the class): mean {ratio.mean():.3f} "
        "(1 = uniform within the class)"
    )
    print("    class          cells  mass %  entropy  log(slots)  ratio")
    for c in range(NUM_CLASSES):
        sel = top == c
        if sel.sum() == 0:
            continue
        log_slots = math.log(max(float(stats["slots"][sel][0]), 1.0))
        print(f"    {CLASSES[c]:<13s} {int(sel.sum()):6d}  {100 * share[sel].mean():5.1f}  "
              f"{entropy[sel].mean():7.3f}  {log_slots:10.3f}  {ratio[sel].mean():5.3f}")  # fmt: skip


def parse_options(pairs: list[str]) -> dict:
    """``["centre=true", "tp=0.05"]`` -> {"centre": True, "tp": 0.05} (JSON values, else str)."""
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key.removeprefix("method.")] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.removeprefix("method.")] = raw
    return out


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("run", type=Path)
    p.add_argument("--images", type=int, default=8, help="target val images (default 8)")
    p.add_argument("--batches", type=int, default=4, help="training batches for the gradients")
    p.add_argument("--snapshot", type=int, default=-1, help="bank snapshot (default: the last)")
    p.add_argument("--set", action="append", default=[], metavar="OPTION=VALUE")
    p.add_argument("--seed", type=int, default=5)
    return p.parse_args()


def print_bank(run: Path, method, iteration: int, options: dict) -> None:
    """The run's bank snapshot, instance-level options and slot purity."""
    cfg = method.cfg
    print(f"{run}: bank snapshot at iteration {iteration}, {int(method.bank.filled.sum())} "
          f"active slots of {method.bank.num_slots}; mode {cfg.mode}, tp {cfg.tp}, normalize "
          f"{cfg.normalize}, centre {cfg.centre}, ins_weight {cfg.ins_weight}, "
          f"lambda {cfg.ins_lambda}, alpha {cfg.scatter_alpha}" + (f"; --set {options}" if options else ""))  # fmt: skip
    purity, hits, slots = slot_purity(method)
    print(f"  slot purity: {purity:.1f} % of active slots classified as their own class")
    print("    " + ", ".join(f"{CLASSES[c]} {int(hits[c])}/{int(slots[c])}" for c in range(19) if slots[c]))  # fmt: skip


def print_val(val: dict, tp: float) -> None:
    """Instance targets, accuracies and the dot-product temperature on the val images."""
    print_within_class(val["stats"])
    if val["flipped"] is not None:
        print(f"    gathered from the student's raw logits: normaliser Σ_k s_k·z_(y_k) ≤ 0 on "
              f"{100 * val['flipped']:.1f} % of cells (there the target's positive part lies on "
              "classes with negative logits)")  # fmt: skip
    for name, confusion in val["confusions"].items():
        acc, macc = accuracy(confusion)
        print(f"  {name:<22s} pixel acc {acc:5.1f}   mean class acc {macc:5.1f}")
    print(
        f"  mean ||e||*||M_k|| = {val['norm_product']:.3f}: a dot-product softmax matching "
        f"cosine tp {tp} needs tp ~ {tp * val['norm_product']:.3g}"
    )


def print_gradients(method, run_cfg: TrainConfig, batches: int, seed: int) -> None:
    """The L_ins / L_T gradient ratio and cosine over ``batches`` training batches."""
    drawn = build_uda_data(run_cfg.data, seed=seed).batches()
    method.model.train()
    grads = [gradient_ratio(method, b) for b in itertools.islice(drawn, batches)]
    ratios, cosines = zip(*grads, strict=True)
    print(f"  L_ins / L_T gradient on target-origin features: ratio {sum(ratios) / len(ratios):.3f} "
          f"(per batch {', '.join(f'{r:.2f}' for r in ratios)}), cosine {sum(cosines) / len(cosines):.3f}")  # fmt: skip


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    options = parse_options(args.set)
    run_cfg = TrainConfig.from_dict(runs.read_json(args.run / runs.CONFIG))
    method, iteration = load_method(args.run, run_cfg, options, args.snapshot)
    print_bank(args.run, method, iteration, options)
    print_val(val_pass(method, run_cfg.data, args.images), method.cfg.tp)
    print_gradients(method, run_cfg, args.batches, args.seed)
    print(f"  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
