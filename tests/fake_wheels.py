"""Small, valid wheel files built in a test's folder: what gpu_wheels checks and gpu_check installs."""
from __future__ import annotations

import base64
import hashlib
import zipfile
from pathlib import Path


def make_wheel(folder: Path, name: str, version: str, *, requires: tuple[str, ...] = (),
               requires_python: str | None = None, tag: str = "py3-none-any", padding: int = 0) -> Path:
    """``name``-``version`` as a wheel holding the module ``name`` (``VALUE = version``) and ``padding``
    incompressible bytes; METADATA lists ``requires`` as Requires-Dist."""
    folder.mkdir(parents=True, exist_ok=True)
    module, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    metadata += [f"Requires-Python: {requires_python}"] if requires_python else []
    metadata += [f"Requires-Dist: {r}" for r in requires]
    files = {f"{module}/__init__.py": f"VALUE = {version!r}\n".encode(),
             f"{dist}/METADATA": ("\n".join(metadata) + "\n").encode(),
             f"{dist}/WHEEL": (f"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                               f"Tag: {tag}\n").encode()}
    if padding:
        files[f"{module}/padding.bin"] = hashlib.shake_256(name.encode()).digest(padding)

    def record_line(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}"

    record = "\n".join([record_line(p, d) for p, d in files.items()] + [f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{module}-{version}-{tag}.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for p, d in [*files.items(), (f"{dist}/RECORD", record.encode())]:
            zf.writestr(p, d)
    return path
