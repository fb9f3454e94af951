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
