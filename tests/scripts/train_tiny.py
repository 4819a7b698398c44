"""Train a tiny ILQL agent on RandomWalks; used by the fault and multi-process tests.

usage: train_tiny.py OUT_DIR TOTAL_STEPS [resume]   (writes OUT_DIR/final.pt on the main process)
"""

import sys
from pathlib import Path

import torch

from agents import ILQLAgent
from textrl import make_dataset, task_config


def main() -> None:
    out, steps = Path(sys.argv[1]), int(sys.argv[2])
    resume = len(sys.argv) > 3 and sys.argv[3] == "resume"
    config = task_config(
        "randomwalks", "ilql", total_steps=steps, batch_size=16, checkpoint_interval=2, eval_interval=steps,
        eval_episodes=8, progress_bar=False, checkpoint_dir=str(out / "run"),
        resume_from_checkpoint=str(out / "run") if resume else None,
    )
    agent = ILQLAgent(config)
    agent.fit(make_dataset("textrl/randomwalks/mixed-v1", num_episodes=64, progress=False))
    import accelerate

    if accelerate.PartialState().is_main_process:
        torch.save(agent.model.state_dict(), out / "final.pt")


if __name__ == "__main__":
    main()
