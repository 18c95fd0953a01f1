"""The README's Python examples run as written and give what the README shows.

Each ```python block runs statement by statement in one namespace, and the comment at the end of a
statement is checked where it states a result:

- after a bare expression (REPL style), the comment starts with the value's repr
  (`res.classes  # [1, 3]`); a following `, in [lo, hi]` after `X.shape` is X's range;
- after `print(...)`, the comment is what it printed;
- after an assignment, `dtype [dims]` groups (`# float [4,3,160,160], long [4,160,160]`) are the
  assigned tensors' dtypes and shapes in order (a named dim such as B matches any size), and
  `# = EXPR to TOL` means the assigned tensor equals EXPR within TOL (max abs).

Other comments are prose and left alone.
"""
import ast
import contextlib
import io
import pathlib
import re
import tokenize

import pytest
import torch

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
DTYPES = {"float": torch.float32, "long": torch.int64, "uint8": torch.uint8, "bool": torch.bool, "int": torch.int64}
SHAPE = re.compile(r"(?:\b(" + "|".join(DTYPES) + r") )?\[([A-Za-z0-9_, ]+)\]")
EQUALS = re.compile(r"^= (.+) to ([0-9.eE+-]+)$")
RANGE = re.compile(r"^, in \[([-0-9.]+), ([-0-9.]+)\]")


def python_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.S)


def _comments(source: str) -> dict[int, str]:
    """{line number: the comment's text after '#'}."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return {t.start[0]: t.string[1:].strip() for t in tokens if t.type == tokenize.COMMENT}


def _targets(statement: ast.Assign) -> list[str]:
    target = statement.targets[-1]
    elements = target.elts if isinstance(target, ast.Tuple) else [target]
    return [ast.unparse(e) for e in elements]


def _check_shapes(comment: str, values: list, where: str) -> None:
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    groups = SHAPE.findall(comment)
    if not tensors or not groups:
        return
    assert len(groups) == len(tensors), f"{where}: {len(groups)} shapes in '# {comment}' for {len(tensors)} tensors"
    for (dtype, dims), tensor in zip(groups, tensors):
        dims = [d.strip() for d in dims.split(",")]
        assert len(dims) == tensor.dim() and all(not d.isdigit() or int(d) == n for d, n in zip(dims, tensor.shape)), \
            f"{where}: '# {comment}' but the tensor has shape {list(tensor.shape)}"
        if dtype:
            assert tensor.dtype == DTYPES[dtype], f"{where}: '# {comment}' but the tensor is {tensor.dtype}"


def run_block(source: str, name: str = "README.md") -> int:
    """Run one example block, checking its result comments; returns how many it checked."""
    comments = _comments(source)
    namespace: dict = {}
    checked = 0
    for statement in ast.parse(source).body:
        where = f"{name} block line {statement.lineno}"
        comment = comments.get(statement.end_lineno)
        code = compile(ast.Module([statement], []), name, "exec")
        if isinstance(statement, ast.Expr) and comment is not None:
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                value = eval(compile(ast.Expression(statement.value), name, "eval"), namespace)
            is_print = isinstance(statement.value, ast.Call) and ast.unparse(statement.value.func) == "print"
            shown = printed.getvalue().strip() if is_print else repr(value)
            assert comment.startswith(shown), f"{where}: `{ast.unparse(statement)}` gives {shown}, the README shows # {comment}"
            rest = RANGE.match(comment[len(shown):])
            if rest and ast.unparse(statement.value).endswith(".shape"):
                tensor = eval(ast.unparse(statement.value)[:-len(".shape")], namespace)
                lo, hi = float(rest.group(1)), float(rest.group(2))
                assert lo <= float(tensor.min()) and float(tensor.max()) <= hi, f"{where}: values outside [{lo}, {hi}]"
            checked += 1
            continue
        exec(code, namespace)
        if isinstance(statement, ast.Assign) and comment is not None:
            values = [eval(t, namespace) for t in _targets(statement)]
            equals = EQUALS.match(comment)
            if equals:
                expected = eval(equals.group(1), namespace)
                diff = float((values[0] - expected).abs().max())
                assert diff <= float(equals.group(2)), f"{where}: max abs difference {diff:.2e}, the README says {comment}"
                checked += 1
            elif SHAPE.search(comment) and any(isinstance(v, torch.Tensor) for v in values):
                _check_shapes(comment, values, where)
                checked += 1
    return checked


def test_readme_python_examples_run_and_show_their_results():
    from seg_xai_fast.engine.methods import registered, remove_method

    blocks = python_blocks(README.read_text())
    assert blocks, "README has no python example"
    try:
        checked = sum(run_block(block) for block in blocks)
    finally:  # the user-method example registers one
        if "positive_gradcam_readme" in registered():
            remove_method("positive_gradcam_readme")
    assert checked >= 8, f"only {checked} result comments were checked: the README examples lost their results"


def test_architecture_walk_through_of_adding_a_method_runs_and_shows_its_results():
    """docs/architecture.md's walk-through registers a method; it is unregistered afterwards."""
    from seg_xai_fast.engine.methods import registered, remove_method

    architecture = README.parent / "docs" / "architecture.md"
    blocks = python_blocks(architecture.read_text())
    assert blocks, "docs/architecture.md lost its walk-through"
    try:
        checked = sum(run_block(block, "docs/architecture.md") for block in blocks)
    finally:
        if "abs_gradcam" in registered():
            remove_method("abs_gradcam")
    assert checked >= 3


@pytest.mark.parametrize("block, message", [
    ("x = [1, 2]\nx  # [1, 3]\n", "gives \\[1, 2\\]"),
    ("print(3 * 3)  # 10\n", "gives 9"),
    ("import torch\nt = torch.zeros(2, 3)  # float [2,4]\n", "shape \\[2, 3\\]"),
    ("import torch\nt = torch.zeros(2, 3)  # long [B,3]\n", "torch.float32"),
    ("import torch\na, b = torch.zeros(2), torch.zeros(1)  # [2]\n", "1 shapes .* for 2 tensors"),
    ("import torch\nt = torch.ones(3)  # = torch.zeros(3) to 1e-5\n", "max abs difference"),
    ("import torch\nt = torch.full((2,), 2.0)\nt.shape  # torch.Size([2]), in [0, 1]\n", "outside \\[0.0, 1.0\\]"),
])
def test_a_wrong_result_comment_fails(block, message):
    with pytest.raises(AssertionError, match=message):
        run_block(block, "example")
