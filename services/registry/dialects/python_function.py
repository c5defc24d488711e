"""A python tool's code checked against CallKaro's rules for its functions, by reading it.

The code is only parsed with ``ast``: it is never imported, executed or
evaluated here (the code-executor runs it, in its sandbox). ``parse_function``
gives the tool's name, description, JSON Schema parameters and the account
secrets it reads, or raises ``PythonToolError`` listing every rule broken.
"""

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeGuard

from services.registry.dialects import python_docstring, python_types
from services.registry.dialects.python_types import is_none, string, type_name
from shared.contract.tools import MAX_CODE_CHARS, PYTHON_MODULES, SECRET_NAME_PATTERN

DEFAULT_MODULES = frozenset(PYTHON_MODULES)

_NAME = re.compile(SECRET_NAME_PATTERN)
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_NESTED_SCOPES = (*_FUNCTIONS, ast.ClassDef, ast.Lambda)
_NOT_DICTS = (ast.Constant, ast.JoinedStr, ast.List, ast.Tuple, ast.Set, ast.ListComp)
# The wording of CallKaro's documentation, quoted after our own.
_CALLKARO_RULES = {
    "function": "Must be async def",
    "async": "Must be async def",
    "ctx": "first parameter must be ctx: RunContext",
    "annotations": "all parameters must have type annotations; the tool returns a dict",
    "types": "parameter types must be JSON-serializable",
    "defaults": "parameters must be JSON-serializable",
    "docstring": "must include a detailed docstring",
    "returns": 'must return a dict with a status field, "success" or "error"',
}
_TOP_LEVEL = (
    "only imports, definitions and constants at the top level: "
    "code there would run when the tool is loaded"
)
_SECRETS_MISUSE = (
    'name each secret literally, as ctx.secrets["NAME"]: '
    "only the secrets a tool names are given to it"
)

_Function = ast.FunctionDef | ast.AsyncFunctionDef
_Parameter = tuple[ast.arg, ast.expr | None]  # a parameter and its default


@dataclass(frozen=True)
class Problem:
    """A broken rule: its id, its 1-based line (0 if not about one line), a message."""

    rule: str
    line: int
    message: str


class PythonToolError(ValueError):
    """The code breaks tool rules; ``problems`` lists every one, in line order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda problem: problem.line)
        super().__init__("; ".join(problem.message for problem in self.problems))


@dataclass(frozen=True)
class PythonFunction:
    """What the registry needs to offer a checked function to the LLM as a tool."""

    name: str
    description: str
    parameters: dict[str, Any]
    secrets: tuple[str, ...]


def parse_function(code: str, allowed_modules: frozenset[str] = DEFAULT_MODULES) -> PythonFunction:
    """The tool the code's first top-level function is, checked without running it.

    Its name, docstring summary, the JSON Schema of its parameters (all but
    ``ctx``) and the sorted names of the account secrets it reads; a
    ``PythonToolError`` with every problem found otherwise.
    """
    tree = _parse(code)
    try:
        return _check(tree, allowed_modules)
    except RecursionError:
        raise PythonToolError([_too_deep()]) from None


def _too_deep() -> Problem:
    return _problem("size", 0, "the code is nested too deeply to check")


def _problem(rule: str, line: int, text: str) -> Problem:
    callkaro_rule = _CALLKARO_RULES.get(rule)
    text += f" (CallKaro's rule: {callkaro_rule})" if callkaro_rule else ""
    return Problem(rule, line, f"line {line}: {text}" if line > 0 else text)


class _Findings:
    """The problems found so far in one piece of code."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, rule: str, where: ast.AST | int | None, text: str) -> None:
        """Record a problem about ``where``: a node, a line number or None (no line)."""
        line = where if isinstance(where, int) else getattr(where, "lineno", 0)
        self.problems.append(_problem(rule, line, text))


def _parse(code: str) -> ast.Module:
    if len(code) > MAX_CODE_CHARS:
        text = f"the code has {len(code):,} characters; the limit is {MAX_CODE_CHARS:,}"
        raise PythonToolError([_problem("size", 0, text)])
    unreadable = re.search("[\0\ud800-\udfff]", code)
    if unreadable:
        line = code.count("\n", 0, unreadable.start()) + 1
        what = "a NUL byte" if unreadable[0] == "\0" else "a lone surrogate"
        text = f"the code is not valid Python: it contains {what}"
        raise PythonToolError([_problem("syntax", line, text)])
    try:
        return ast.parse(code)
    except SyntaxError as error:
        text = f"the code is not valid Python: {error.msg}"
        raise PythonToolError([_problem("syntax", error.lineno or 0, text)]) from None
    except (RecursionError, MemoryError):
        raise PythonToolError([_too_deep()]) from None


def _check(tree: ast.Module, allowed_modules: frozenset[str]) -> PythonFunction:
    found = _Findings()
    for node in tree.body:
        if not _is_definition(node):
            found.add("top_level", node, _TOP_LEVEL)
    _check_imports(tree, allowed_modules, found)
    secrets = _collect_secrets(tree, found)
    tool = next((node for node in tree.body if isinstance(node, _FUNCTIONS)), None)
    if tool is None:
        found.add("function", None, "the code defines no top-level function to be the tool")
        raise PythonToolError(found.problems)
    params = _check_signature(tool, found)
    summary, described = _check_docstring(tool, params, found)
    _check_returns(tool, found)
    properties = {
        param.arg: _property(param, default, described.get(param.arg, ""), found)
        for param, default in params
    }
    if found.problems:
        raise PythonToolError(found.problems)
    required = [param.arg for param, default in params if default is None]
    schema = {"type": "object", "properties": properties, "required": required}
    return PythonFunction(tool.name, summary, schema, tuple(sorted(secrets)))


def _is_definition(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import | ast.ImportFrom | ast.ClassDef | _Function):
        return True
    if isinstance(node, ast.Expr):
        return string(node.value) is not None
    if isinstance(node, ast.Assign):
        names = all(isinstance(target, ast.Name) for target in node.targets)
        return names and python_types.is_literal(node.value)
    if isinstance(node, ast.AnnAssign):
        value = node.value
        return isinstance(node.target, ast.Name) and (
            value is None or python_types.is_literal(value)
        )
    return False


def _check_imports(tree: ast.Module, allowed: frozenset[str], found: _Findings) -> None:
    allowed_list = ", ".join(sorted(allowed))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            found.add("imports", node, "relative imports such as `from . import x` are not allowed")
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for module in sorted(_imported_modules(node) - allowed):
                text = f"`{module}` cannot be imported; allowed: {allowed_list}"
                found.add("imports", node, text)


def _imported_modules(node: ast.Import | ast.ImportFrom) -> set[str]:
    """Top-level names of the modules imported; ``from __future__`` needs no permission."""
    if isinstance(node, ast.ImportFrom):
        names = [] if node.module == "__future__" else [node.module or ""]
    else:
        names = [alias.name for alias in node.names]
    return {name.split(".")[0] for name in names}


def _collect_secrets(tree: ast.Module, found: _Findings) -> set[str]:
    """Names read: ``ctx.secrets["NAME"]`` or ``ctx.secrets.get("NAME")``; no other use."""
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    names = set()
    for node in ast.walk(tree):
        if _is_getattr_secrets(node):
            found.add("secrets", node, _SECRETS_MISUSE)
        if not _is_ctx_secrets(node):
            continue
        name = string(_secret_key(node, parents))
        if name is None:
            found.add("secrets", node, _SECRETS_MISUSE)
        elif not _NAME.fullmatch(name):
            text = f"secret name {name!r} must be 1-64 ASCII letters, digits or _"
            found.add("secrets", node, text + ", not starting with a digit")
        else:
            names.add(name)
    return names


def _is_ctx_secrets(node: ast.AST) -> TypeGuard[ast.Attribute]:
    return isinstance(node, ast.Attribute) and node.attr == "secrets" and _is_ctx(node.value)


def _is_getattr_secrets(node: ast.AST) -> bool:
    """Whether the node is ``getattr(ctx, "secrets", ...)``."""
    if not (isinstance(node, ast.Call) and type_name(node.func) == "getattr"):
        return False
    return len(node.args) >= 2 and _is_ctx(node.args[0]) and string(node.args[1]) == "secrets"


def _is_ctx(node: ast.expr) -> bool:
    return isinstance(node, ast.Name) and node.id == "ctx"


def _secret_key(node: ast.Attribute, parents: dict[ast.AST, ast.AST]) -> ast.expr | None:
    """The key of ``ctx.secrets[key]`` or ``ctx.secrets.get(key[, default])``, else None."""
    parent = parents.get(node)
    if isinstance(parent, ast.Subscript) and isinstance(parent.ctx, ast.Load):
        return parent.slice
    if not (isinstance(parent, ast.Attribute) and parent.attr == "get"):
        return None
    call = parents.get(parent)
    if isinstance(call, ast.Call) and call.func is parent and not call.keywords:
        return call.args[0] if 1 <= len(call.args) <= 2 else None
    return None


def _check_signature(tool: _Function, found: _Findings) -> list[_Parameter]:
    """Check the signature; return the parameters the LLM fills in (all but ctx)."""
    if isinstance(tool, ast.FunctionDef):
        found.add("async", tool, "the tool must be an `async def`")
    _check_parameter_kinds(tool.args, found)
    _check_return_annotation(tool, found)
    params = _parameters(tool.args)
    first = params[0][0] if params else None
    if first is None or first.arg != "ctx" or not _is_run_context(first.annotation):
        found.add("ctx", first or tool, "the first parameter must be `ctx: RunContext`")
    if first is not None and (first.arg == "ctx" or _is_run_context(first.annotation)):
        return params[1:]
    return params


def _parameters(args: ast.arguments) -> list[_Parameter]:
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    defaults += args.defaults
    keyword_only = zip(args.kwonlyargs, args.kw_defaults, strict=True)
    return [*zip(positional, defaults, strict=True), *keyword_only]


def _is_run_context(annotation: ast.expr | None) -> bool:
    node = python_types.unstring(annotation)
    if isinstance(node, ast.Attribute):
        return node.attr == "RunContext"
    return isinstance(node, ast.Name) and node.id == "RunContext"


def _check_parameter_kinds(args: ast.arguments, found: _Findings) -> None:
    odd = [(arg, "`{}` is positional-only (before `/`)") for arg in args.posonlyargs]
    odd += [(arg, "`{}` is keyword-only (after `*`)") for arg in args.kwonlyargs]
    odd += [(arg, "`*{}` is not allowed") for arg in [args.vararg] if arg]
    odd += [(arg, "`**{}` is not allowed") for arg in [args.kwarg] if arg]
    for arg, fault in odd:
        text = fault.format(arg.arg) + "; a tool takes only plain named parameters"
        found.add("parameters", arg, text)
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        if not _NAME.fullmatch(arg.arg):
            text = f"parameter name `{arg.arg}` must be 1-64 ASCII letters, digits or _"
            found.add("parameters", arg, text)


def _check_return_annotation(tool: _Function, found: _Findings) -> None:
    node = python_types.unstring(tool.returns)
    if type_name(node.value if isinstance(node, ast.Subscript) else node) in python_types.DICTS:
        return
    if tool.returns is None:
        found.add("annotations", tool, "the tool needs the return annotation `-> dict`")
    else:
        written = ast.unparse(tool.returns)
        text = f"the tool's return annotation is `{written}`; it must be `dict`"
        found.add("annotations", tool.returns, text)


def _property(
    param: ast.arg, default: ast.expr | None, description: str, found: _Findings
) -> dict[str, Any]:
    """The JSON Schema property for one parameter, reporting what is wrong with it."""
    schema: dict[str, Any] = {}
    if param.annotation is None:
        found.add("annotations", param, f"parameter `{param.arg}` has no type annotation")
    elif (typed := python_types.schema(param.annotation)) is None:
        written = ast.unparse(param.annotation)
        text = f"parameter `{param.arg}` has type `{written}`; use {python_types.TYPE_CHOICES}"
        found.add("types", param, text)
    else:
        schema = typed
    if default is not None:
        schema["default"], fault = python_types.default(default, schema)
        if fault:
            found.add("defaults", default, f"the default of `{param.arg}`{fault}")
    return {**schema, "description": description} if description else schema


def _check_docstring(
    tool: _Function, params: list[_Parameter], found: _Findings
) -> tuple[str, dict[str, str]]:
    """The docstring's summary and parameter descriptions, reporting what is missing."""
    first = tool.body[0]
    docstring = python_docstring.read(
        string(first.value) if isinstance(first, ast.Expr) else None, first.lineno
    )
    if not docstring.summary:
        found.add("docstring", tool, "the tool needs a docstring that starts with a summary")
    described = {name: text for name, (_, text) in docstring.args.items() if text}
    for param, _ in params:
        if param.arg not in described:
            text = f"parameter `{param.arg}` is not described under Args: in the docstring"
            found.add("docstring", param, text)
    names = {param.arg for param, _ in params} | {"ctx"}
    for name, (line, _) in docstring.args.items():
        if name not in names:
            text = f"the docstring's Args: lists `{name}`, which is not a parameter"
            found.add("docstring", line, text)
    return docstring.summary, described


def _check_returns(tool: _Function, found: _Findings) -> None:
    returns = list(_own_returns(tool))
    if not returns:
        found.add("returns", tool, "the tool never returns")
    for node in returns:
        if fault := _return_fault(node.value):
            found.add("returns", node, f"this `return` {fault}")


def _own_returns(tool: _Function) -> Iterator[ast.Return]:
    """The tool's ``return`` statements, leaving out those of nested functions and classes."""
    pending: list[ast.AST] = list(tool.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Return):
            yield node
        if not isinstance(node, _NESTED_SCOPES):
            pending.extend(ast.iter_child_nodes(node))


def _return_fault(value: ast.expr | None) -> str:
    """What is certainly wrong with a returned value; "" if only running it can tell."""
    if value is None or is_none(value):
        return "returns nothing"
    if isinstance(value, _NOT_DICTS):
        return "returns something that is not a dict"
    if not isinstance(value, ast.Dict) or None in value.keys:
        return ""
    pairs = zip(value.keys, value.values, strict=True)
    statuses = [status for key, status in pairs if string(key) == "status"]
    if not statuses:
        return "returns a dict without a `status` key"
    status = statuses[-1]
    if isinstance(status, ast.Constant) and status.value not in {"success", "error"}:
        return f'returns the status {status.value!r}, which is not "success" or "error"'
    return ""
