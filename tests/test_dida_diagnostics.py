"""scripts/dida_diagnostics.py's released-calibration check: where Σ_k s_k·z_(y_k) ≤ 0 the released
target q̂ = s ⊙ z_y / Σ has the sign of −z_y (its positive part on the rejected classes)."""

from __future__ import annotations

import torch

from dida.methods.common import calibrate_released
from scripts.dida_diagnostics import nonpositive_share


def test_a_negative_normaliser_flips_the_released_target_onto_the_rejected_classes() -> None:
    scores = torch.tensor([1.0, 1.1, 0.9, 1.0]).view(1, 4, 1, 1)  # positive, similar (post-ReLU)
    predicted = torch.tensor([3.0, -2.0, -2.5, -1.0]).view(1, 4, 1, 1)  # slot 0's class wins
    confident = torch.tensor([9.0, -2.0, -2.5, -1.0]).view(1, 4, 1, 1)
    assert (
        nonpositive_share(scores, predicted) == 1.0 and nonpositive_share(scores, confident) == 0.0
    )
    flipped = calibrate_released(scores, predicted)[0, :, 0, 0]
    assert flipped[0] < 0 and (flipped[1:] > 0).all()  # mass on the rejected slots
    kept = calibrate_released(scores, confident)[0, :, 0, 0]
    assert kept[0] > 1 and (kept[1:] < 0).all()
    both = torch.cat([predicted, confident], dim=0)
    assert nonpositive_share(scores.expand(2, -1, -1, -1), both) == 0.5
