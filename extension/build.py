"""Package the extension as a reproducible zip: the same tree gives the same bytes.

Entries are sorted, stamped 1980-01-01 00:00, mode 0644, deflated at a fixed level; tests,
this script and anything not shipped are left out. Usage:
    python3 extension/build.py [OUTPUT.zip]   (default: extension/dist/inboxlens-<version>.zip)
Prints the output path and its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIPPED = ("manifest.json", "sw.js", "options.html", "options.js", "panel.html", "panel.js", "pages.css",
           "content/", "lib/", "sites/")
STAMP = (1980, 1, 1, 0, 0, 0)


def files() -> list[Path]:
    found: list[Path] = []
    for name in SHIPPED:
        path = HERE / name
        found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix == ".js") if name.endswith("/") \
            else [path]
    return sorted(found, key=lambda p: p.relative_to(HERE).as_posix())


def build(output: Path) -> str:
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w") as archive:
        for path in files():
            info = zipfile.ZipInfo(path.relative_to(HERE).as_posix(), STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o100644 << 16
            info.create_system = 3
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main(argv: list[str]) -> int:
    version = json.loads((HERE / "manifest.json").read_text())["version"]
    output = Path(argv[1]) if len(argv) > 1 else HERE / "dist" / f"inboxlens-{version}.zip"
    print(f"{output} sha256:{build(output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
