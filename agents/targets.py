"""The target-head update that the ILQL and CQL agents share."""

from __future__ import annotations

from typing import Any


class PolyakTargetSync:
    """Mixin for agents with target Q heads: every `method.steps_for_target_q_sync` optimizer steps,
    Qbar <- rate * Q + (1 - rate) * Qbar with rate = `method.target_update_rate`."""

    config: Any

    def after_optimizer_step(self, model: Any, step: int) -> None:
        method = self.config.method
        if step % method.steps_for_target_q_sync == 0:
            model.heads.sync_target_q_heads(method.target_update_rate)
