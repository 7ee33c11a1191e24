"""Hatch build hook: put the top-level templates/ and static/ folders into the wheel.

Why a hook and not plain ``[tool.hatch.build.targets.wheel.force-include]``: hatchling
applies a wheel target's force-include to *editable* wheels too, so ``pip install -e .``
would copy templates/ and static/ into site-packages/webapp/ as stale copies.  Editable
installs must use the repo folders, so the mapping (kept in pyproject.toml as this
hook's ``force-include`` option) is applied to standard wheels only.

Force-include copies whole folders and ignores .gitignore, so the git-ignored
static/vendor/ (filled from node_modules by ``make setup``) goes into the wheel; a wheel
built before ``make setup`` would lack htmx, so that is an error.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

REQUIRED_VENDOR_FILES = ("static/vendor/htmx.min.js", "static/vendor/hx-ws.min.js")


class CustomBuildHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "standard":
            return
        mapping = self.config.get("force-include", {})
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError("hatch_build.py: option 'force-include' must be a non-empty table")
        for source, target in mapping.items():
            if not os.path.exists(os.path.join(self.root, source)):
                raise FileNotFoundError(f"hatch_build.py: {source!r} not found (for {target!r})")
            build_data["force_include"][source] = target
        # The C receive loop, built for this wheel (so it is a platform wheel, not pure Python).
        library = os.path.join(self.directory, "libfastpath.so.1")
        os.makedirs(self.directory, exist_ok=True)
        subprocess.run([os.environ.get("CC", "cc"), "-O2", "-shared", "-fPIC", "-pthread", "-o",
                        library, os.path.join(self.root, "webapp/engine/fastpath.c")], check=True)
        build_data["force_include"][library] = "webapp/engine/libfastpath.so.1"
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        missing = [p for p in REQUIRED_VENDOR_FILES if not os.path.isfile(os.path.join(self.root, p))]
        if missing:
            raise FileNotFoundError(
                f"hatch_build.py: missing {', '.join(missing)}; run `make setup` first "
                "(it copies them from node_modules/htmx.org/dist/)"
            )
