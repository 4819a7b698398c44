"""ILQL on RandomWalks on several processes, with DDP or (--fsdp) FSDP2.

    accelerate launch --config_file examples/accelerate/one_node.yaml examples/train_ilql.py --fsdp

Writes checkpoints to OUT/run and the trained agent to OUT/agent; add --resume to continue a run.
"""

import argparse

import torch
from accelerate import PartialState

from agents import ILQLAgent
from textrl import make_dataset, task_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fsdp", action="store_true", help="shard with FSDP2 (train.fsdp) instead of DDP")
    parser.add_argument("--steps", type=int, default=200, help="optimizer steps")
    parser.add_argument("--out", default="runs/ilql-multi", help="output folder")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUT/run")
    args = parser.parse_args()
    state = PartialState(cpu=not torch.cuda.is_available())  # as the trainer's; without `cpu`, a machine
    #                                                           without GPUs would see one process per rank
    with state.main_process_first():  # one process builds the dataset, the others then open it
        dataset = make_dataset("textrl/randomwalks/mixed-v1", num_episodes=256)
    config = task_config("randomwalks", "ilql", total_steps=args.steps, batch_size=32, fsdp=args.fsdp,
                         checkpoint_interval=50, eval_interval=100, eval_episodes=32,
                         checkpoint_dir=f"{args.out}/run", resume_from_checkpoint=f"{args.out}/run" if args.resume else None)
    agent = ILQLAgent(config)
    agent.fit(dataset)
    if state.is_main_process:
        agent.save(f"{args.out}/agent")


if __name__ == "__main__":
    main()
