"""Build hook: ship targets/ and schedules/ inside the wheel.

The repository keeps target descriptions and shipped tuning databases at the top level
(``targets/``, ``schedules/``), where people edit them; a wheel only carries the package.
``build_py`` copies both into the built package as ``tvm_autoglm/_targets`` and
``tvm_autoglm/_schedules``, which is where ``targets.targets_dir`` and
``tuning.apply.repo_schedules_dir`` look when the source tree is not beside the package.
Everything else is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithData(build_py):
    def run(self):
        super().run()
        package = Path(self.build_lib) / "tvm_autoglm"
        for source, dest, pattern in (("targets", "_targets", "*.json"), ("schedules", "_schedules", "*.json")):
            source_dir = ROOT / source
            for path in sorted(source_dir.rglob(pattern)):
                target = package / dest / path.relative_to(source_dir)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)


setup(cmdclass={"build_py": BuildPyWithData})
