"""The stage registry: a stage registered under a new name is a CLI subcommand and a chain step;
`make help` prints the registry; an unknown stage's error lists the known ones."""
import argparse
import re
import subprocess
import sys

import pytest

from pipeline.cli import main
from pipeline.errors import PipelineError
from pipeline.stages import STAGES, chain_stages, ordered, stage
from tests.conftest import REPO

SEEN = {}


def add_arguments(parser: argparse.ArgumentParser) -> None:  # this module is the test stage's entry point
    parser.add_argument("--name", required=True)
    parser.add_argument("--work", default=None)
    parser.add_argument("--configs", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--folds-file", default=None)


def run(args: argparse.Namespace) -> None:
    SEEN.update(vars(args))
    print(f"hello {args.name}")


@pytest.fixture
def hello_stage():
    entry = stage("hello", 75, "say hello (a test stage)", chain=("model", "folds_file"), module=__name__)
    try:
        yield entry
    finally:
        STAGES.pop("hello")


def test_a_registered_stage_is_a_cli_subcommand_and_a_chain_step(hello_stage, capsys, tmp_path):
    from pipeline.chain import chain_argv

    assert main(["hello", "--name", "whale"]) == 0
    assert capsys.readouterr().out == "hello whale\n"
    with pytest.raises(SystemExit):
        main(["--help"])
    assert re.search(r"hello\s+say hello \(a test stage\)", capsys.readouterr().out)
    # Between knn (70) and ensemble (80), with the chain values it declared.
    argv = chain_argv(tmp_path, tmp_path, "m", start="knn")
    assert [a[0] for a in argv] == ["knn", "hello", "ensemble", "submit", "cv"]
    assert argv[1][argv[1].index("--model") + 1] == "m" and "--folds-file" in argv[1]
    # The catalogue's zero-shot work runs the chain up to knn: its folds file is WORK's own.
    head = chain_argv(tmp_path / "data", tmp_path, "m", stop="knn")
    assert [a[0] for a in head] == ["preprocess", "folds", "train", "embed", "knn"]
    assert all(a[a.index("--folds-file") + 1] == str(tmp_path / "folds.csv") for a in head[1:])


def test_the_stage_list_and_its_errors():
    names = [s.name for s in ordered()]
    assert names[:2] == ["synth", "boxes"] and names[-1] == "catalogue"
    assert [s.name for s in chain_stages()] == ["preprocess", "folds", "train", "embed", "knn", "ensemble",
                                                "submit", "cv"]
    with pytest.raises(PipelineError, match=r"unknown stage 'nope'; use one of .*preprocess.*synth"):
        STAGES.get("nope")
    with pytest.raises(ValueError, match="unknown chain argument 'colour'"):
        stage("bad", 1, "bad", chain=("colour",))
    assert "bad" not in STAGES


def test_unknown_subcommand_lists_the_stages(capsys):
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nope'" in err and all(s.name in err for s in ordered())


def test_make_help_prints_the_registry_and_make_all_runs_the_chain():
    listed = subprocess.run([sys.executable, "-m", "pipeline.cli", "stages"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout
    assert [line.split()[0] for line in listed.splitlines()[:-1]] == [s.name for s in ordered()]
    made = subprocess.run(["make", "--no-print-directory", "help", f"PYTHON={sys.executable}"], cwd=REPO,
                          capture_output=True, text=True)
    if made.returncode == 0:  # where make is installed
        assert listed in made.stdout
    # `make all`'s hand-written prerequisites are the chain's stages (single: `whale ensemble --model`).
    makefile = (REPO / "Makefile").read_text()
    all_targets = re.search(r"^all: (.*)$", makefile, re.M).group(1).split()
    assert [t.replace("single", "ensemble") for t in all_targets] == [s.name for s in chain_stages()]
