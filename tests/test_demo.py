"""`textrl demo`: what it says when it runs again in the same folder, and its help text."""

import warnings

from agents.commands import add_demo_command
from agents.demo import run_demo


def test_a_second_demo_run_says_it_starts_over_without_advice_the_demo_cannot_take(tmp_path, capsys,
                                                                                  built_dataset) -> None:
    built_dataset("textrl/randomwalks/random-v1")
    run_demo(steps=2, episodes=8, out_dir=str(tmp_path / "demo"))
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no trainer warning may reach the user
        run_demo(steps=2, episodes=8, out_dir=str(tmp_path / "demo"))
    out = capsys.readouterr().out
    assert "holds an earlier demo run: the demo starts it over" in out
    assert "resume_from_checkpoint" not in out


def test_demo_help_gives_its_real_duration() -> None:
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    add_demo_command(sub)
    assert "about a minute" in sub._choices_actions[0].help


def test_the_demo_folder_is_ignored_by_git() -> None:
    from pathlib import Path

    from textrl.cli import build_parser

    default = build_parser().parse_args(["demo"]).out
    ignored = (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()
    assert f"{default}/" in ignored
