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
