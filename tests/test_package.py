import subprocess
import sys


def test_import_is_light_and_does_nothing():
    code = ("import sys, caption_core, caption_core.images, caption_core.text, caption_core.decoding, "
            "caption_core.bundle, caption_core.encoders, caption_core.decoders, caption_core.serving, caption_core.references,"
            "caption_core.batch;"
            "heavy = [m for m in ('tensorflow', 'keras', 'torch', 'gradio', 'transformers', 'training') if m in sys.modules];"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_no_import_circles_in_the_library():
    """Each caption_core module imports in a fresh interpreter on its own (a circle shows as an ImportError
    for some entry points only), and the encoders no longer import the bundle module."""
    import os

    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "caption_core")
    mods = sorted(f"caption_core.{f[:-3]}" for f in os.listdir(root) if f.endswith(".py") and f != "__main__.py")
    mods += ["caption_core.encoders.base", "caption_core.encoders.efficientnet_lite", "caption_core.decoders.base",
             "caption_core.decoders.merge", "caption_core.decoders.attention", "caption_core.decoders.ensemble"]
    for m in mods:
        subprocess.run([sys.executable, "-c", f"import {m}"], check=True, capture_output=True)
    code = ("import sys, caption_core.encoders.base, caption_core.encoders.efficientnet_lite;"
            "print('caption_core.bundle' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _import_graph(package_dir: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its file (top level or inside a function), from the
    source (ast): an import inside a function closes a circle as surely as one at the top."""
    import ast
    import os

    root = os.path.dirname(package_dir)
    files = {}
    for folder, _, names in os.walk(package_dir):
        for n in names:
            if n.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, n), root)[:-3].replace(os.sep, ".")
                files[rel.removesuffix(".__init__")] = os.path.join(folder, n)
    graph = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.endswith("__init__.py") else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
                stem = ".".join(base + ([node.module] if node.module else []))
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:
                    t = t.rpartition(".")[0]
                if t and t != mod and not files[t].endswith("__init__.py"):  # a package that hands names on
                    graph[mod].add(t)
    return graph


def test_no_module_imports_one_that_imports_it_back():
    """No import circle in caption_core or training: every edge counts, top level or inside a function (the same
    rule as ../shared/tools/import_circles.py)."""
    import os

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for package in ("caption_core", "training"):
        graph = _import_graph(os.path.join(here, package))

        def reaches(start: str, goal: str) -> bool:
            seen, todo = set(), [start]
            while todo:
                m = todo.pop()
                if m == goal:
                    return True
                if m not in seen:
                    seen.add(m)
                    todo.extend(graph[m])
            return False

        circles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
        assert not circles, f"import circles in {package}: {circles}"
    tool = os.path.join(here, "..", "shared", "tools", "import_circles.py")
    if os.path.isfile(tool):  # the workplace's own check, where it is
        out = subprocess.run([sys.executable, tool], cwd=here, capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip() == "no import circles", out.stdout
