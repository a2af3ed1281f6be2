"""The house rules of DESIGN.md section 1, read from the source: imports flow one way, no import circles, small
modules, and one CLI module per command."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("alexnet_tf", "export", "serving")

# What each part of alexnet_tf may import of ours (besides itself). Top-level modules (figures) may use
# every library part; only cli/ imports export/ and serving/.
ALLOWED = {
    "alexnet_tf.process": set(),
    "alexnet_tf.network": {"alexnet_tf.process"},
    "alexnet_tf.data": {"alexnet_tf.process"},
    "alexnet_tf.training": {"alexnet_tf.process", "alexnet_tf.network", "alexnet_tf.data"},
    "alexnet_tf.weights": {"alexnet_tf.process", "alexnet_tf.network", "alexnet_tf.data", "alexnet_tf.training"},
    "alexnet_tf.classifier": {"alexnet_tf.process", "alexnet_tf.network", "alexnet_tf.data"},
}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def our_imports(path: pathlib.Path) -> set[str]:
    """Every module of ours that `path` imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    known = modules()
    return {name for name in found if name in known}


def part_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "alexnet_tf" and len(parts) > 2 or module in ALLOWED else module


def test_imports_flow_one_way():
    wrong = []
    for module, path in modules().items():
        part = part_of(module)
        for imported in our_imports(path):
            target = part_of(imported)
            if target == part or imported == "alexnet_tf":
                continue
            if part in ALLOWED and target not in ALLOWED[part]:
                wrong.append(f"{module} imports {imported}")
            if module.startswith("alexnet_tf") and not module.startswith("alexnet_tf.cli") \
                    and imported.split(".")[0] in ("export", "serving"):
                wrong.append(f"{module} imports {imported} (only alexnet_tf.cli may)")
    assert not wrong, "\n".join(wrong)


def test_the_serving_client_needs_neither_keras_nor_the_model():
    """A client machine needs tensorflow-serving-api, grpcio and numpy: of TensorFlow only its TensorProto protos."""
    tree = ast.parse((ROOT / "serving" / "client.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    heads = {name.split(".")[0] for name in imported if name != "tensorflow.core.framework"}
    assert not heads & {"keras", "tensorflow", "alexnet_tf", "export"}, sorted(imported)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles(package):
    graph = {m: {i for i in our_imports(p) if i != m and not m.startswith(i + ".")}
             for m, p in modules().items() if m.split(".")[0] == package}

    def visit(module, stack):
        if module in stack:
            return stack[stack.index(module):] + [module]
        for imported in graph.get(module, ()):
            cycle = visit(imported, stack + [module])
            if cycle:
                return cycle
        return None

    for module in graph:
        cycle = visit(module, [])
        assert cycle is None, " -> ".join(cycle)


def test_modules_are_small_and_say_what_they_are_for():
    for module, path in modules().items():
        lines = len(path.read_text().splitlines())
        limit = 200 if module.startswith("alexnet_tf.cli") else 450
        assert lines <= limit, f"{path.relative_to(ROOT)}: {lines} lines (at most {limit})"
        assert ast.get_docstring(ast.parse(path.read_text())), f"{path.relative_to(ROOT)} has no module docstring"


def test_every_command_has_its_own_module():
    from alexnet_tf import cli

    helpers = {"__init__", "__main__", "common", "serve_flags", "tf_serving_flags"}
    files = {p.stem for p in (ROOT / "alexnet_tf" / "cli").glob("*.py")} - helpers
    assert {command.__name__.rsplit(".", 1)[-1] for command in cli.COMMANDS} == files
    for command in cli.COMMANDS:
        assert callable(command.add_parser) and callable(command.run) and command.NAME
