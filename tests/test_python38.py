"""Every module of mmext, tools/, configs/ and setup.py parses and imports on Python 3.8.

The project supports Python 3.8-3.11 but the test machines run 3.11, so the check is static, in
three layers over every ``.py`` file:

1. ``ast.parse(src, feature_version=(3, 8))``: syntax 3.8 lacks (``match``, parenthesized context
   managers, ``except*``, ...).
2. vermin (requirements/tests.txt) with the flags of ``VERMIN_FLAGS`` (target ``3.8-``, violations
   only): standard-library modules, members and keyword arguments newer than 3.8
   (``functools.cache``, ``math.lcm``, ``zip(strict=)``, ``typing.TypeAlias``, dict ``|`` merge
   of known dicts, ...) and syntax (relaxed decorators, parenthesized context managers, ...).
   Files without ``from __future__ import annotations`` are also given ``--eval-annotations``:
   Python 3.8 evaluates their function, class and module annotations at definition time, so
   ``def f(a: dict[str, int])`` raises ``TypeError`` on import; the flag also makes vermin see
   builtin generics outside annotations (``Alias = list[int]``). Files with the future import are
   checked without it (their annotations are never evaluated); layer 3 covers their run-time
   generics. vermin's quirks with the flag: it also reports a local variable's annotation (never
   evaluated: harmless to fix) and gives a return annotation the line of the function's last
   statement (layer 3 gives the ``def`` line).
3. ``_RuntimeConstructs``: run-time constructs vermin cannot see without knowing types: ``X | Y``
   unions (any ``|`` in an evaluated annotation; elsewhere a ``|`` with ``None``, a builtin type,
   a builtin generic or a ``typing`` name as an operand, or in ``isinstance``/``issubclass``),
   builtin generics (``list[int]``) evaluated at run time, and calls of methods 3.8's ``str``,
   ``int`` and ``pathlib.Path`` lack (``s.removeprefix(p)`` on an ``s`` of unknown type).

A line that must stay as it is (e.g. behind a ``sys.version_info`` guard) can carry ``# novm``,
vermin's own marker, which layer 3 honours too.
"""
import ast
import os
import os.path as osp
import re

import pytest

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
ROOTS = ('mmext', 'tools', 'configs')
TARGET = (3, 8)
VERMIN_FLAGS = ('-t=3.8-', '--violations', '--no-tips', '--format', 'parsable',
                '--no-config-file', '--processes=1')
INSTALL_HINT = ('vermin is not installed; install the test requirements: '
                'pip install -r requirements/tests.txt')

BUILTIN_GENERICS = frozenset({'list', 'dict', 'tuple', 'set', 'frozenset', 'type'})
BUILTIN_TYPES = BUILTIN_GENERICS | {'int', 'float', 'complex', 'str', 'bytes', 'bytearray',
                                    'bool', 'object'}
# methods (of str/bytes, int and pathlib.Path) Python 3.8 lacks, with the version that added them
NEW_METHODS = {'removeprefix': '3.9', 'removesuffix': '3.9', 'is_relative_to': '3.9',
               'with_stem': '3.9', 'readlink': '3.9', 'bit_count': '3.10',
               'hardlink_to': '3.10'}
NOVM = re.compile(r'#\s*(novm|novermin)\b')


def _sources():
    """Paths (relative to the repository) of every ``.py`` file checked."""
    paths = []
    for root in ROOTS:
        for dirpath, dirnames, files in os.walk(osp.join(REPO, root)):
            dirnames[:] = sorted(d for d in dirnames if d != '__pycache__')
            paths += [osp.relpath(osp.join(dirpath, f), REPO) for f in files if f.endswith('.py')]
    paths.append('setup.py')
    return sorted(paths)


def _future_annotations(tree):
    return any(isinstance(node, ast.ImportFrom) and node.module == '__future__'
               and any(alias.name == 'annotations' for alias in node.names)
               for node in tree.body)


def _report(findings, what):
    findings = sorted(set(findings))
    return (f'{len(findings)} construct(s) {what} (file:line: construct):\n  '
            + '\n  '.join(f'{path}:{line}: {msg}' for path, line, msg in findings))


# ---------------------------------------------------------------------------- layer 1: syntax


def _syntax_findings(rel, src):
    try:
        ast.parse(src, filename=rel, feature_version=TARGET)
    except SyntaxError as exc:
        return [(rel, exc.lineno or 0, f'Python 3.8 cannot parse this: {exc.msg}')]
    return []


# ---------------------------------------------------------------------------- layer 2: vermin


def _vermin_config(vermin, eval_annotations):
    config = vermin.Config()
    flags = list(VERMIN_FLAGS) + (['--eval-annotations'] if eval_annotations else [])
    # the path only satisfies the argument parser: files are given to process_individual
    args = vermin.Arguments(flags + ['setup.py']).parse(config)
    assert args.get('code') == 0, f'vermin rejected the flags {flags}: {args}'
    return config


def _vermin_findings(vermin, configs, base, rel, future_annotations):
    """vermin's violations of the 3.8 target in one file: [(rel, line, construct)]."""
    path = osp.join(base, rel)
    res = vermin.Processor.process_individual((path, configs[not future_annotations]))
    findings = []
    for out in (res.text if res is not None else '').splitlines():
        # parsable format: path:line:col:py2:py3:feature; a line without line number is the
        # file's summary, one without a path the run's
        assert out.startswith(path + ':'), f'unexpected vermin output line: {out!r}'
        line, _, _, py3, msg = out[len(path) + 1:].split(':', 4)
        if line:
            findings.append((rel, int(line), f'{msg} (needs Python {py3})'))
    return findings


# ---------------------------------------------------------------------------- layer 3


class _RuntimeConstructs(ast.NodeVisitor):
    """Run-time unions, builtin generics and 3.9+ method calls (see the module docstring)."""

    def __init__(self, future_annotations):
        self.future_annotations = future_annotations
        self.typing_names = set()    # names bound by `from typing import X`
        self.typing_modules = {'typing'}    # `import typing as t`
        self.modules = set()         # names bound by `import X [as Y]` (os.readlink is old)
        self.in_annotation = False
        self.found = []              # [(line, construct)]

    # --- what an operand of `|` that makes it a union looks like
    def _typeish(self, node):
        if isinstance(node, ast.Constant) and node.value is None:
            return True
        if isinstance(node, ast.Subscript):
            node = node.value
        if isinstance(node, ast.Name):
            return node.id in BUILTIN_TYPES or node.id in self.typing_names
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in self.typing_modules)

    def _union(self, node):
        self.found.append((node.lineno, '`X | Y` union evaluated at run time (needs Python 3.10; '
                                        'use typing.Union/Optional)'))

    # --- imports
    def visit_ImportFrom(self, node):
        if node.module == 'typing':
            self.typing_names.update(a.asname or a.name for a in node.names)

    def visit_Import(self, node):
        self.typing_modules.update(a.asname or a.name for a in node.names if a.name == 'typing')
        self.modules.update(a.asname or a.name.split('.')[0] for a in node.names)

    # --- annotations: evaluated at definition time unless the future import is on; a local
    # variable's annotation (AnnAssign in a function body) is never evaluated
    def _annotation(self, node, evaluated):
        if node is None or not evaluated:
            return
        outer, self.in_annotation = self.in_annotation, True
        self.visit(node)
        self.in_annotation = outer

    def _function(self, node):
        for deco in node.decorator_list:
            self.visit(deco)
        args = node.args
        for default in args.defaults + [d for d in args.kw_defaults if d is not None]:
            self.visit(default)
        for arg in args.posonlyargs + args.args + args.kwonlyargs + [args.vararg, args.kwarg]:
            if arg is not None:
                self._annotation(arg.annotation, not self.future_annotations)
        self._annotation(node.returns, not self.future_annotations)
        for stmt in node.body:
            self._body_stmt(stmt, local=True)

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_ClassDef(self, node):
        for child in node.decorator_list + node.bases + [k.value for k in node.keywords]:
            self.visit(child)
        for stmt in node.body:
            self._body_stmt(stmt, local=False)

    def visit_Module(self, node):
        for stmt in node.body:
            self._body_stmt(stmt, local=False)

    def _body_stmt(self, stmt, local):
        """A statement of a body; nested blocks (if/for/with/try) keep the scope's locality."""
        if isinstance(stmt, ast.AnnAssign):
            self.visit(stmt.target)
            if stmt.value is not None:
                self.visit(stmt.value)
            self._annotation(stmt.annotation, not (local or self.future_annotations))
            return
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.visit(stmt)
            return
        blocks = [getattr(stmt, f, None) or [] for f in ('body', 'orelse', 'finalbody')]
        blocks += [h.body for h in getattr(stmt, 'handlers', None) or []]
        if not any(blocks):
            self.visit(stmt)
            return
        block_nodes = {id(s) for block in blocks for s in block}
        handler_nodes = {id(h) for h in getattr(stmt, 'handlers', None) or []}
        for _, value in ast.iter_fields(stmt):
            for child in (value if isinstance(value, list) else [value]):
                if not isinstance(child, ast.AST) or id(child) in block_nodes:
                    continue
                if id(child) in handler_nodes:
                    if child.type is not None:
                        self.visit(child.type)
                    continue
                self.visit(child)
        for block in blocks:
            for s in block:
                self._body_stmt(s, local)

    # --- the constructs
    def visit_BinOp(self, node):
        if isinstance(node.op, ast.BitOr) and (
                self.in_annotation or self._typeish(node.left) or self._typeish(node.right)):
            self._union(node)
            self._visit_union_operands(node)
            return
        self.generic_visit(node)

    def _visit_union_operands(self, node):
        """One finding per union: its nested `|` are not reported again."""
        for side in (node.left, node.right):
            if isinstance(side, ast.BinOp) and isinstance(side.op, ast.BitOr):
                self._visit_union_operands(side)
            else:
                self.visit(side)

    def visit_Subscript(self, node):
        if isinstance(node.value, ast.Name) and node.value.id in BUILTIN_GENERICS:
            self.found.append((node.lineno, f'builtin generic `{node.value.id}[...]` evaluated at '
                                            'run time (needs Python 3.9; use typing.'
                                            f'{node.value.id.capitalize()})'))
        self.generic_visit(node)

    def visit_Call(self, node):
        func = node.func
        if (isinstance(func, ast.Attribute) and func.attr in NEW_METHODS
                and not (isinstance(func.value, ast.Name) and func.value.id in self.modules)):
            self.found.append((node.lineno, f'`.{func.attr}()` (a str/int/Path method of Python '
                                            f'{NEW_METHODS[func.attr]}+)'))
        if (isinstance(func, ast.Name) and func.id in ('isinstance', 'issubclass')
                and len(node.args) == 2 and isinstance(node.args[1], ast.BinOp)
                and isinstance(node.args[1].op, ast.BitOr)):
            self.visit(node.args[0])
            self._union(node.args[1])
            self._visit_union_operands(node.args[1])
            for kw in node.keywords:
                self.visit(kw)
            self.visit(func)
            return
        self.generic_visit(node)


def _runtime_findings(rel, src, tree):
    visitor = _RuntimeConstructs(_future_annotations(tree))
    visitor.visit(tree)
    lines = src.splitlines()
    return [(rel, line, msg) for line, msg in visitor.found
            if not (0 < line <= len(lines) and NOVM.search(lines[line - 1]))]


# ---------------------------------------------------------------------------- the checks


def _check(rels, base=REPO):
    """All findings of the three layers for the files ``rels`` (relative to ``base``):
    {layer: [(rel, line, construct)]}."""
    try:
        import vermin
    except ImportError:
        vermin = None
    if vermin is None:      # failed outside the except: one line, no chained traceback
        pytest.fail(INSTALL_HINT, pytrace=False)
    configs = {True: _vermin_config(vermin, eval_annotations=True),
               False: _vermin_config(vermin, eval_annotations=False)}
    found = {'syntax': [], 'vermin': [], 'runtime': []}
    for rel in rels:
        with open(osp.join(base, rel), encoding='utf-8') as f:
            src = f.read()
        syntax = _syntax_findings(rel, src)
        found['syntax'] += syntax
        try:
            tree = ast.parse(src, filename=rel)
        except SyntaxError as exc:     # not even the running Python's syntax
            found['syntax'] += [] if syntax else [(rel, exc.lineno or 0, exc.msg)]
            continue
        found['vermin'] += _vermin_findings(vermin, configs, base, rel, _future_annotations(tree))
        found['runtime'] += _runtime_findings(rel, src, tree)
    return found


@pytest.fixture(scope='module')
def findings():
    return _check(_sources())


def test_sources_found():
    rels = _sources()
    assert 'setup.py' in rels and 'mmext/__init__.py' in rels and len(rels) > 50, rels


def _fail_on(findings, what):
    if findings:
        pytest.fail(_report(findings, what), pytrace=False)


def test_parses_as_python38(findings):
    _fail_on(findings['syntax'], 'that Python 3.8 cannot parse')


def test_vermin_python38(findings):
    _fail_on(findings['vermin'], 'newer than Python 3.8 (vermin ' + ' '.join(VERMIN_FLAGS)
             + ' [--eval-annotations]; fix them, or mark a version-guarded line `# novm`)')


def test_no_runtime_python39_constructs(findings):
    _fail_on(findings['runtime'], 'that fail at run time on Python 3.8 (tests/test_python38.py '
             'layer 3; fix them, or mark a version-guarded line `# novm`)')


# planted constructs: each line a layer must report ends in `# <- layer: words of the message`;
# the lines marked `# <- none` must give no finding in any layer
PLANTED = {
    'planted.py': '''\
import functools
import math
import os
import typing
from typing import Optional

x: list[int] = []                       # <- vermin: list[..]; runtime: list[...]
Alias = dict[str, int]                  # <- vermin: dict[..]; runtime: dict[...]
Opt = int | None                        # <- runtime: union


def f(a: dict[str, int]) -> tuple[int, ...]:  # <- vermin: dict[..]; runtime: tuple[...]
    local: list[int] = []               # <- vermin: list[..] (not evaluated, vermin is strict)
    return local                        # <- vermin: tuple[..] (vermin's line for `->`)


def g(s, p, n, a, b, d: Optional[int] = None):  # <- none
    u = a | b                           # <- none (bitwise: operand types unknown)
    isinstance(s, str | bytes)          # <- runtime: union
    with (open(s) as f1, open(p) as f2):  # <- vermin: with` statement with parentheses
        pass
    k = s.removeprefix('x')  # <- runtime: .removeprefix(); syntax: context managers (CPython's)
    k += s.removesuffix('y')            # <- runtime: .removesuffix()
    m = n.bit_count() + math.lcm(2, 3)  # <- runtime: .bit_count(); vermin: math.lcm
    z = list(zip(a, b, strict=True))    # <- vermin: zip(strict)
    os.readlink(s)                      # <- none (a module function, old)
    w = p.is_relative_to(s)             # <- runtime: .is_relative_to()
    return u, k, m, z, w, {1: 2} | {3: 4}  # <- vermin: dict union


def h():
    return 'x'.removeprefix('y')  # novm <- none (marked)


@functools.cache                        # <- vermin: functools.cache
def c() -> typing.Optional[int] | None:  # <- runtime: union
    return None
''',
    'future.py': '''\
from __future__ import annotations


def f(a: dict[str, int], b: int | None = None) -> list[int]:  # <- none (never evaluated)
    return [a, b]


class C:
    x: list[int] = []                   # <- none (never evaluated)


Alias = list[int]                       # <- runtime: list[...]
Union = int | None                      # <- runtime: union
''',
}


def _planted_expectations():
    expected, quiet = set(), set()
    for rel, src in PLANTED.items():
        for line, text in enumerate(src.splitlines(), 1):
            if '# <- none' in text:
                quiet.add((rel, line))
            elif '# <- ' in text:
                for claim in text.split('# <- ', 1)[1].split('; '):
                    layer, words = claim.split(' (')[0].split(': ', 1)
                    expected.add((layer, rel, line, words))
    return expected, quiet


def test_the_checks_catch_planted_constructs(tmp_path):
    """As configured, the three layers report what Python 3.8 lacks, on its line, and only that."""
    for rel, src in PLANTED.items():
        (tmp_path / rel).write_text(src, encoding='utf-8')
    found = _check(sorted(PLANTED), base=str(tmp_path))
    expected, quiet = _planted_expectations()
    missed = [(layer, rel, line, words) for layer, rel, line, words in sorted(expected)
              if not any(r == rel and n == line and words.lower() in m.lower()
                         for r, n, m in found[layer])]
    assert not missed, (missed, found)
    claimed = {(layer, rel, line) for layer, rel, line, _ in expected}
    extra = [(layer, f) for layer, fs in found.items() for f in fs
             if (layer, f[0], f[1]) not in claimed]
    assert not extra, extra
    assert quiet and not [e for e in extra if (e[1][0], e[1][1]) in quiet]
