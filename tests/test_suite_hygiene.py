"""The test suite's own hygiene: what `make test-fast` (``pytest -m "not slow"``) leaves out is marked, not guessed.

Every test that runs a pipeline or starts a server is marked ``slow`` (``@pytest.mark.slow``, or the module's
``pytestmark``): a test runs a pipeline when it, a fixture it takes, or a function, table or fixture it reaches
(in its module, a conftest.py above it, or a test module it imports from) calls ``run`` on a ``KedroSession``,
runs the ``kedro`` command (``kedro run``, ``kedro viz build``), or invokes the project's Kedro CLI
(``eagle_pipelines.cli``'s ``run``/``cli``) in process; it starts a server when it starts Ray (``ray.init``),
SeaweedFS (``weed``), Chromium, vLLM (``VllmServer``, ``ensure_venv``, ``score_in_venv``), a Jupyter kernel
(``NotebookClient``), a fresh virtual environment (``venv.EnvBuilder``) or any other child process
(``subprocess.Popen``).

The reading is static (the AST of each test file), so a new test is checked without running it.
"""

from __future__ import annotations

import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import MODEL_DIR

TESTS = Path(__file__).parent
#: calls that start a server or a child process that lives beside the test (name or attribute called)
SERVER_CALLS = {"EnvBuilder": "a fresh virtual environment", "VllmServer": "a vLLM server",
                "ensure_venv": "the vLLM environment", "score_in_venv": "vLLM", "Popen": "a child process",
                "NotebookClient": "a Jupyter kernel"}
#: module-level names whose mention in a call's arguments starts that program
SERVER_PROGRAMS = {"CHROMIUM": "Chromium", "WEED": "SeaweedFS"}
#: what the project's Kedro CLI exports that runs a pipeline when called
CLI_COMMANDS = {"run", "cli"}


@dataclass
class Module:
    """One test module (or conftest.py) read for what its functions start."""

    path: Path
    tree: ast.Module
    #: module-level functions, fixtures and assignments by name: the nodes that define them
    defs: dict[str, list[ast.AST]] = field(default_factory=dict)
    #: names imported from another module of the test suite: name -> (module path, name there)
    imported: dict[str, tuple[Path, str]] = field(default_factory=dict)


def _read(path: Path) -> Module:
    tree = ast.parse(path.read_text(), filename=str(path))
    module = Module(path, tree)
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            module.defs.setdefault(node.name, []).append(node)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        module.defs.setdefault(name.id, []).append(node)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == TESTS.name:
            source = TESTS.parent.joinpath(*node.module.split("."))
            source = source / "__init__.py" if source.is_dir() else source.with_suffix(".py")
            for alias in node.names:
                module.imported[alias.asname or alias.name] = (source, alias.name)
    return module


def _dotted(node: ast.AST) -> str:
    """``a.b.c`` for a Name/Attribute chain, else ''."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else node.attr
    return ""


def _mentions_kedro(node: ast.AST) -> bool:
    return any((isinstance(n, ast.Name) and n.id == "kedro") or (isinstance(n, ast.Constant) and n.value == "kedro")
               for n in ast.walk(node))


def _direct(node: ast.AST) -> str | None:
    """What `node` (a function, fixture or assignment) itself starts, in words, or None."""
    sessions: set[str] = set()  # names bound to KedroSession.create(...)
    for n in ast.walk(node):
        if isinstance(n, ast.withitem) and isinstance(n.optional_vars, ast.Name) and \
                _dotted(getattr(n.context_expr, "func", n.context_expr)).endswith("KedroSession.create"):
            sessions.add(n.optional_vars.id)
        elif isinstance(n, ast.Assign) and isinstance(n.value, ast.Call) and \
                _dotted(n.value.func).endswith("KedroSession.create"):
            sessions |= {t.id for t in n.targets if isinstance(t, ast.Name)}
    compared = {id(e) for n in ast.walk(node) if isinstance(n, ast.Compare) for e in ast.walk(n)}
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            func = _dotted(n.func)
            if isinstance(n.func, ast.Attribute) and n.func.attr == "run" and (
                    _dotted(n.func.value) in sessions or _dotted(getattr(n.func.value, "func", n)).endswith(
                        "KedroSession.create")):
                return "a KedroSession"
            if func == "ray.init":
                return "a Ray instance"
            last = func.rsplit(".", 1)[-1]
            if last in SERVER_CALLS:
                return SERVER_CALLS[last]
            for arg in [*n.args, *(k.value for k in n.keywords)]:
                for name in ast.walk(arg):
                    if isinstance(name, ast.Name) and name.id in SERVER_PROGRAMS:
                        return SERVER_PROGRAMS[name.id]
        elif isinstance(n, (ast.List, ast.Tuple)) and id(n) not in compared:
            words = [e.value for e in n.elts if isinstance(e, ast.Constant)]
            if any(_mentions_kedro(e) for e in n.elts) and {"run", "viz"} & set(words):
                return f"`kedro {'run' if 'run' in words else 'viz'}`"
        elif isinstance(n, ast.ImportFrom) and n.module == "eagle_pipelines.cli" and \
                CLI_COMMANDS & {a.name for a in n.names}:
            return "the Kedro CLI (eagle_pipelines.cli)"
    return None


def _parameters(node: ast.AST) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return [a.arg for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]]
    return []


def _references(node: ast.AST) -> set[str]:
    """The names `node` reads that it does not bind itself (a local import, assignment, nested function or
    parameter shadows the module's name)."""
    local = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
            local.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            local |= {(a.asname or a.name).split(".")[0] for a in n.names}
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            local |= {a.arg for a in [*n.args.posonlyargs, *n.args.args, *n.args.kwonlyargs]}
            if not isinstance(n, ast.Lambda) and n is not node:
                local.add(n.name)
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} - local


def _conftests(path: Path) -> list[Path]:
    """The conftest.py files pytest applies to `path`, nearest first."""
    return [d / "conftest.py" for d in path.parents if d.is_relative_to(TESTS) and (d / "conftest.py").exists()]


class Reader:
    """Which names of which modules start a pipeline or a server (and what), following names transitively."""

    def __init__(self) -> None:
        self.modules: dict[Path, Module] = {}
        self.busy: set[tuple[Path, str]] = set()
        self.known: dict[tuple[Path, str, bool], str | None] = {}

    def module(self, path: Path) -> Module:
        if path not in self.modules:
            self.modules[path] = _read(path)
        return self.modules[path]

    def starts(self, path: Path, name: str, fixtures: bool = True) -> str | None:
        """What the module-level `name` of `path` starts (directly or through what it reaches), or None; a name
        that is not defined there is looked up among the conftest fixtures above it when `fixtures`."""
        key = (path, name)
        if key in self.busy:  # recursion: what is being read starts nothing more than it is found to
            return None
        if (path, name, fixtures) not in self.known:
            self.busy.add(key)
            try:
                self.known[path, name, fixtures] = self._starts(path, name, fixtures)
            finally:
                self.busy.discard(key)
        return self.known[path, name, fixtures]

    def _starts(self, path: Path, name: str, fixtures: bool) -> str | None:
        module = self.module(path)
        if name in module.imported:
            source, there = module.imported[name]
            return self.starts(source, there, fixtures=False) if source.exists() else None
        if name not in module.defs:
            if fixtures:
                for conftest in _conftests(path):
                    if conftest != path and name in self.module(conftest).defs:
                        return self.starts(conftest, name, fixtures=False)
            return None
        for node in module.defs[name]:
            found = self.reach(path, node)
            if found:
                return found
        return None

    def reach(self, path: Path, node: ast.AST) -> str | None:
        """What `node` starts: itself, the module-level names it mentions, or the fixtures it takes."""
        found = _direct(node)
        if found:
            return found
        for name in sorted(_references(node)):
            found = self.starts(path, name, fixtures=False)
            if found:
                return found
        for name in _parameters(node):
            found = self.starts(path, name)
            if found:
                return f"{found} (fixture {name!r})"
        return None


def _is_slow(decorators: list[ast.expr]) -> bool:
    return any(_dotted(d.func if isinstance(d, ast.Call) else d).endswith("mark.slow") for d in decorators)


def _module_slow(tree: ast.Module) -> bool:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            values = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            if _is_slow(values):
                return True
    return False


def _tests(tree: ast.Module):
    """(name, node, marked slow) for each test function of a module, test methods of Test classes included."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            yield node.name, node, _is_slow(node.decorator_list)
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("test"):
                    yield f"{node.name}::{item.name}", item, _is_slow(node.decorator_list + item.decorator_list)


def unmarked(paths: list[Path]) -> list[str]:
    """``file::test: starts WHAT`` for every test of `paths` that runs a pipeline or starts a server without the
    slow mark."""
    reader = Reader()
    found = []
    for path in paths:
        module = reader.module(path)
        if _module_slow(module.tree):
            continue
        for name, node, slow in _tests(module.tree):
            what = None if slow else reader.reach(path, node)
            if what:
                found.append(f"{path.relative_to(TESTS.parent)}::{name}: runs {what}")
    return found


def test_every_test_that_runs_a_pipeline_or_a_server_is_marked_slow():
    offenders = unmarked(sorted(TESTS.rglob("test_*.py")))
    assert not offenders, ("mark these @pytest.mark.slow (or move what they start into a slow test), so that "
                           "`make test-fast` stays fast:\n" + "\n".join(offenders))


SAMPLE = '''
import subprocess, sys
from kedro.framework.session import KedroSession

def _run(project):
    with KedroSession.create(project_path=project) as session:
        session.run(pipeline_names=["eagle_coco"])

@pytest.fixture
def ran(tmp_path):
    _run(tmp_path)
    return tmp_path

CASES = [lambda p: _run(p)]

def test_unmarked_helper(tmp_path):
    _run(tmp_path)

def test_unmarked_fixture(ran):
    assert ran

@pytest.mark.parametrize("case", CASES)
def test_unmarked_table(case, tmp_path):
    case(tmp_path)

def test_unmarked_command(tmp_path):
    subprocess.run([sys.executable, "-m", "kedro", "run"], cwd=tmp_path)

def test_unmarked_conftest_fixture(served):
    assert served

@pytest.mark.slow
def test_marked(ran):
    assert ran

def test_a_session_context_alone(tmp_path):
    KedroSession.create(project_path=tmp_path).load_context()

def test_an_argv_compared(tmp_path):
    assert ["kedro", "run"] == ["kedro", "run"]
'''


def test_the_check_finds_each_way_a_test_starts_a_run(tmp_path, monkeypatch):
    folder = tmp_path / TESTS.name / "sample"
    folder.mkdir(parents=True)
    (folder / "conftest.py").write_text("import pytest\nfrom x import VllmServer\n\n@pytest.fixture\n"
                                        "def served():\n    return VllmServer().start()\n")
    (folder / "test_sample.py").write_text(SAMPLE)
    (folder / "test_marked_module.py").write_text("import pytest\npytestmark = [pytest.mark.slow]\n" + SAMPLE)
    monkeypatch.setattr(sys.modules[__name__], "TESTS", tmp_path / TESTS.name)
    found = unmarked([folder / "test_sample.py", folder / "test_marked_module.py"])
    names = sorted(line.split("::")[1].split(":")[0] for line in found)
    assert names == ["test_unmarked_command", "test_unmarked_conftest_fixture", "test_unmarked_fixture",
                     "test_unmarked_helper", "test_unmarked_table"], found
    assert all(line.startswith("tests/sample/test_sample.py::") for line in found)
    assert any("runs `kedro run`" in line for line in found) and any("a vLLM server" in line for line in found)


def test_the_shipped_models_path_is_written_in_conftest_only():
    """One place names the shipped model's folder: a test takes conftest's ``shipped_model`` fixture, or its
    SHIPPED_MODEL / MODEL_DIR, so moving the model is one edit and the model is loaded once per session."""
    folder, name = Path(MODEL_DIR).parts[-2:]
    path = re.compile(re.escape(folder) + r".{0,12}" + re.escape(name) + r"(?!\w)")
    found = [f"{p.relative_to(TESTS.parent)}:{i}" for p in sorted(TESTS.rglob("*.py")) if p.name != "conftest.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if path.search(line)]
    assert not found, "use tests/conftest.py's shipped_model, SHIPPED_MODEL or MODEL_DIR:\n" + "\n".join(found)
