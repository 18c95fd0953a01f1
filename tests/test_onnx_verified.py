"""OnnxExplainer's graph-digest check is remembered per file content (a marker in the cache named by
the bytes' sha1): a second load of the same bytes needs no `onnx` import (a second of every batch
job's start), while any other bytes — a swapped graph, edited metadata — are checked again."""
import sys

import onnx
import pytest
import torch

from seg_xai_fast.demo.model import DemoSegNet
from seg_xai_fast.runtimes import OnnxExplainer, export_onnx
from seg_xai_fast.runtimes.export import METADATA_KEY, verified_marker


def test_a_verified_file_loads_without_onnx_and_other_bytes_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SEG_XAI_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    a = export_onnx(DemoSegNet().eval(), "decoder", tmp_path / "a.onnx", torch.rand(1, 3, 64, 64))
    torch.manual_seed(1)
    b = export_onnx(DemoSegNet().eval(), "decoder", tmp_path / "b.onnx", torch.rand(1, 3, 64, 64))
    assert not verified_marker(a.read_bytes()).exists()
    OnnxExplainer(a)
    assert verified_marker(a.read_bytes()).is_file()

    # b's graph with a's metadata (whose digest a's load verified): still refused.
    proto = onnx.load(str(b))
    meta = next(p.value for p in onnx.load(str(a)).metadata_props if p.key == METADATA_KEY)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta
    swapped = tmp_path / "b_with_a.onnx"
    onnx.save(proto, str(swapped))
    with pytest.raises(ValueError, match="not written for this graph"):
        OnnxExplainer(swapped)
    assert not verified_marker(swapped.read_bytes()).exists()

    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now fails: a's check must not need it
    explainer = OnnxExplainer(a)
    assert explainer(torch.rand(1, 3, 64, 64)).maps.shape == (1, 4, 64, 64)
