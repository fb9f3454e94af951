"""The docs say what the code is: the module map names every module, the README's commands are CI's."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_module_map_names_every_module():
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    package = ROOT / "layerwatch"
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        folder = rel.split("/")[0] + "/"
        if rel.startswith(("demo/", "datasets/", "integrations/", "pages/")):
            assert f"`{folder}`" in design, folder  # examples and integrations: one row per package
            continue
        assert f"`{rel}`" in design, f"docs/design.md does not name layerwatch/{rel}"


def test_the_readme_opens_with_the_two_commands_and_ci_runs_the_second():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```bash\n(.*?)\n```", readme, re.S).group(1).splitlines()
    assert len(block) == 2 and block[0].rstrip().endswith("layerwatch demo")
    test_command = block[1].split("&&")[-1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line.strip() for line in ci if line.strip()][-1] == test_command


def test_the_readme_stays_short_and_its_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 170, "the README holds the pitch, the commands, an example and links; move the rest to docs/"
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing file: {target}"


def test_the_design_names_every_measurement_folder_and_its_settings():
    from layerwatch.measures import registered

    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    for name, cls in registered().items():
        if not cls.__module__.startswith("layerwatch."):
            continue  # a measurement another package (or a test) registered
        folder = cls.__module__.split(".")
        assert folder[:2] == ["layerwatch", "measures"] and len(folder) >= 4, f"{name} is not a folder of layerwatch/measures/"
        assert f"`measures/{folder[2]}/__init__.py`" in design
        if cls.Settings is not None:
            assert f"`measures/{folder[2]}/settings.py`" in design


# -- the claims of docs/design.md that code can check ---------------------------------------------

# Modules that write files themselves, and why it is not a run file written past the store.
# Everything else hands its bytes to the run's RunStore (store.py), whose writes are atomic,
# kept inside the run directory and listed in its manifest.
_STORE_MODULES = {"files.py", "store.py", "rundir.py"}
_WRITES_ELSEWHERE = {
    "config.py": "the writability probe of output_dir, before the run starts",
    "animate.py": "GIF bytes encoded in memory ('<bytes>'), handed to the store by film.py",
    "demo/run.py": "removes the demo's own scratch folder of Trainer checkpoints",
    "integrations/export.py": "the W&B folder layerwatch export is told to write (outside the run)",
    "measures/attention/cli.py": "the bertviz page `layerwatch attention -o FILE` is told to write",
    "measures/dynamics/cli.py": "the CSV `layerwatch suspects --csv FILE` is told to write",
    "measures/dynamics/measure.py": "the partial epoch kept in a Trainer checkpoint folder (files.atomic_write)",
}
_RAW_CALLS = {("np", "save"), ("np", "savez"), ("np", "savez_compressed"), ("os", "replace"), ("os", "rename"),
              ("os", "remove"), ("os", "unlink"), ("os", "rmdir"), ("os", "makedirs"), ("os", "mkdir"),
              ("shutil", "move"), ("shutil", "copy"), ("shutil", "copyfile"), ("shutil", "copy2"), ("shutil", "rmtree")}


def _raw_writes(path: Path) -> list[str]:
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            mode = node.args[1] if len(node.args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and set(str(mode.value)) & set("wax+"):
                found.append(f"line {node.lineno}: open(..., {mode.value!r})")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in _RAW_CALLS:
            found.append(f"line {node.lineno}: {f.value.id}.{f.attr}")
        elif isinstance(f, ast.Attribute) and f.attr in ("write_text", "write_bytes", "imwrite", "mimwrite", "mimsave"):
            receiver = f.value
            through_store = (isinstance(receiver, ast.Name) and receiver.id == "store") or (
                isinstance(receiver, ast.Attribute) and receiver.attr == "store"
            )
            if not through_store:
                found.append(f"line {node.lineno}: .{f.attr}")
    return found


def test_run_files_are_written_through_the_store_as_the_design_says():
    package = ROOT / "layerwatch"
    writers = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        calls = _raw_writes(path)
        if calls and rel not in _STORE_MODULES:
            writers[rel] = calls
    unexplained = {rel: calls for rel, calls in writers.items() if rel not in _WRITES_ELSEWHERE}
    assert not unexplained, f"these modules write files past the store: {unexplained}; hand the bytes to RunStore"
    stale = sorted(set(_WRITES_ELSEWHERE) - set(writers))
    assert not stale, f"no longer writing files themselves (drop them from the list): {stale}"
    design = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    assert "through which every run file is written and read" in design


def test_the_store_the_monitor_and_every_measurement_module_stay_small():
    package = ROOT / "layerwatch"
    paths = [package / "store.py", package / "monitor.py", *sorted((package / "measures").rglob("*.py"))]
    for path in paths:
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines < 400, f"{path.relative_to(ROOT)} has {lines} lines; cut it by job (docs/design.md)"
