"""The import rules of docs/design.md, read from the code: `omnideft` never imports `data_builders`; `data_builders`
imports only the torch-free shard format, the camera record and COLMAP reading, the error type, the output-folder
lock and the progress bars; imports flow
downward, and the verbs (train, eval, generate) do not import each other."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILDERS_MAY_IMPORT = ("omnideft.data.format", "omnideft.camera.record", "omnideft.camera.colmap", "omnideft.errors",
                       "omnideft.locks", "omnideft.progress")
# The floors of docs/design.md, top to bottom: a room imports rooms of lower floors; on one floor only the rooms
# below the verbs may use each other. The package root is the public facade on top: it re-exports the API
# (`from omnideft import Generator`) lazily, on first attribute access, so importing omnideft stays cheap.
FLOORS = [{"__main__", "__init__"}, {"cli"}, {"commands"}, {"studio"}, {"demo", "bench"},
          {"train", "eval", "generate", "export"}, {"plan"}, {"families"}, {"flow", "sizing"},
          {"adapters", "prompts", "camera", "shapes"}, {"model", "data", "images"},
          {"errors", "files", "locks", "progress", "options", "claims"}]
VERBS = {"train", "eval", "generate"}
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "peft", "deepspeed")


def imported(path: Path) -> set[str]:
    """Every module a file imports, at any depth of the file; `from a import b` counts as `a.b`."""
    package = ".".join(path.relative_to(REPO).parent.parts) if path.is_relative_to(REPO) else ""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


def _files(folder: str) -> list[Path]:
    files = sorted((REPO / folder).rglob("*.py"))
    assert files, folder
    return files


def _room(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "omnideft" and len(parts) > 1 else None


def test_omnideft_never_imports_data_builders():
    offenders = [f"{p.relative_to(REPO)}: {m}" for p in _files("omnideft") for m in imported(p)
                 if m.split(".")[0] == "data_builders"]
    assert not offenders


def test_builders_import_only_the_format_the_camera_record_and_errors():
    seen, offenders = set(), []
    for p in _files("data_builders"):
        for m in imported(p):
            if m.split(".")[0] == "omnideft":
                seen.add(m)
                if not m.startswith(tuple(f"{allowed}." for allowed in BUILDERS_MAY_IMPORT)):
                    offenders.append(f"{p.relative_to(REPO)}: {m}")
    assert not offenders
    assert any(m.startswith("omnideft.data.format.writer.") for m in seen)  # the scan does see the imports


def test_the_format_and_every_builder_import_without_torch():
    code = ("import importlib, pkgutil, sys, data_builders, omnideft.data.format\n"
            "for m in pkgutil.iter_modules(omnideft.data.format.__path__):\n"
            "    importlib.import_module('omnideft.data.format.' + m.name)\n"
            "for m in pkgutil.iter_modules(data_builders.__path__):\n"
            "    importlib.import_module('data_builders.' + m.name)\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_imports_flow_downward_and_the_verbs_stay_apart():
    floor = {room: level for level, rooms in enumerate(FLOORS) for room in rooms}  # 0 = top
    offenders = []
    for p in _files("omnideft"):
        room = _room(".".join(p.relative_to(REPO).with_suffix("").parts))
        assert room in floor, f"{p.relative_to(REPO)}: room {room!r} has no floor in FLOORS"
        for m in imported(p):
            other = _room(m)
            if other is None or other == room or other not in floor:  # e.g. `from omnideft import __version__`
                continue
            if floor[other] < floor[room]:
                offenders.append(f"{p.relative_to(REPO)} imports {m} from a floor above")
            elif floor[other] == floor[room] and room in VERBS:
                offenders.append(f"{p.relative_to(REPO)} imports {m} of the same floor")
    assert not offenders


# Attributes that only one family's components or transformer have: testing them is deciding the family by hand.
FAMILY_ATTRIBUTES = {"ref_image_refiner", "noise_refiner", "context_refiner", "mllm", "mllm_adapter", "llm",
                     "time_token", "input_x_embedder"}


def family_mentions(path: Path, families: set[str]) -> list[str]:
    """Where a module names a family: an import of `omnideft.families.<family>`, a string equal to a family's name or
    holding "omnigen2" (a family's name in a path, a flag value or a doc link), `hasattr` of a family's attribute or
    of an attribute the rule cannot read."""
    found = [f"imports {m}" for m in sorted(imported(path))
             if m.split(".")[:2] == ["omnideft", "families"] and m.count(".") > 1 and m.split(".")[2] in families]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in families or "omnigen2" in node.value:
                found.append(f"line {node.lineno}: string {node.value[:60]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "hasattr":
            attribute = node.args[1] if len(node.args) > 1 else None
            if not (isinstance(attribute, ast.Constant) and isinstance(attribute.value, str)):
                found.append(f"line {node.lineno}: hasattr of an attribute computed at run time")
            elif attribute.value in FAMILY_ATTRIBUTES:
                found.append(f"line {node.lineno}: hasattr(..., {attribute.value!r})")
    return found


def test_no_module_outside_the_families_names_a_family():
    """A new family is one folder plus one registry line: shared code asks the registry and the interface, never a
    family by name (the registry's names are read, so a new family is covered too)."""
    from omnideft.families.registry import family_names

    families = set(family_names())
    offenders = [f"{p.relative_to(REPO)} {found}" for p in _files("omnideft")
                 if not p.relative_to(REPO).as_posix().startswith("omnideft/families/")
                 for found in family_mentions(p, families)]
    assert not offenders


def test_the_family_rule_sees_each_kind_of_mention(tmp_path):
    path = tmp_path / "m.py"
    path.write_text("from omnideft.families.omnigen2.model import folder\nimport omnideft.families.registry\n"
                    "x = 'omnigen'\ny = 'see docs/omnigen2.md'\nhasattr(t, 'ref_image_refiner')\nhasattr(t, name)\n"
                    "hasattr(t, 'peft_config')\nz = 'OmniGen, the model class'\n")
    assert [f.split(":")[0] for f in family_mentions(path, {"omnigen", "omnigen2"})] == [
        "imports omnideft.families.omnigen2.model.folder", "line 3", "line 4", "line 5", "line 6"]
