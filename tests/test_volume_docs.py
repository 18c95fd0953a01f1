"""docs/volumes.md's Python examples run as written and give what they show (tests/test_readme.py's
run_block checks each result comment)."""
import pathlib

import pytest

from test_readme import python_blocks, run_block

pytest.importorskip("monai")
DOC = pathlib.Path(__file__).resolve().parents[1] / "docs" / "volumes.md"


def test_volume_examples_run_and_show_their_results():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) == 2, "docs/volumes.md lost an example"
    checked = sum(run_block(block, "docs/volumes.md") for block in blocks)
    assert checked >= 8
