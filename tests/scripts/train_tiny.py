"""Train a tiny ILQL agent on RandomWalks; used by the fault and multi-process tests.

usage: train_tiny.py OUT_DIR TOTAL_STEPS [resume] [--fsdp] [--check-sync]

Writes, on the main process, OUT_DIR/final.pt (the trained state dict), OUT_DIR/agent (the saved
agent) and OUT_DIR/processes.txt (how many processes trained). --fsdp shards the model (train.fsdp). --check-sync gathers the target and online Q heads
around every optimizer step and writes OUT_DIR/sync.json: per step, whether the parameters were
sharded, how far the targets moved and how far they are from the Polyak average
rate * Q + (1 - rate) * Qbar_before on sync steps (from Qbar_before on the others).
"""

import json
import sys
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from agents import ILQLAgent
from textrl import make_dataset, task_config


def _whole(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state with shards gathered (a collective under FSDP: every process calls it)."""
    return {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().clone() for k, v in module.state_dict().items()}


class SyncCheckedILQL(ILQLAgent):
    """ILQL that records, around each target sync, how the whole target heads moved."""

    records: list[dict] = []

    def after_optimizer_step(self, model, step):
        method = self.config.method
        before, online = _whole(model.heads.target_q_heads), _whole(model.heads.q_heads)
        super().after_optimizer_step(model, step)
        after = _whole(model.heads.target_q_heads)
        synced = step % method.steps_for_target_q_sync == 0
        rate = method.target_update_rate if synced else 0.0
        self.records.append({
            "step": step, "synced": synced,
            "sharded": isinstance(next(model.parameters()), DTensor),
            "moved": max(float((after[k] - before[k]).abs().max()) for k in after),
            "error": max(float((after[k] - (rate * online[k] + (1 - rate) * before[k])).abs().max()) for k in after),
        })


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out, steps = Path(args[0]), int(args[1])
    resume = len(args) > 2 and args[2] == "resume"
    config = task_config(
        "randomwalks", "ilql", total_steps=steps, batch_size=16, checkpoint_interval=2, eval_interval=steps,
        eval_episodes=8, progress_bar=False, checkpoint_dir=str(out / "run"), fsdp="--fsdp" in sys.argv,
        resume_from_checkpoint=str(out / "run") if resume else None,
    )
    agent = (SyncCheckedILQL if "--check-sync" in sys.argv else ILQLAgent)(config)
    agent.fit(make_dataset("textrl/randomwalks/mixed-v1", num_episodes=64, progress=False))
    import accelerate

    state = accelerate.PartialState()
    if state.is_main_process:
        (out / "processes.txt").write_text(str(state.num_processes))
        torch.save(agent.model.state_dict(), out / "final.pt")
        agent.save(out / "agent")
        if "--check-sync" in sys.argv:
            (out / "sync.json").write_text(json.dumps(SyncCheckedILQL.records))


if __name__ == "__main__":
    main()
