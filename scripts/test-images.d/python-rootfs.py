#!/usr/bin/python3
"""Copies this machine's Python 3 with torch (Debian's python3-torch), Open MPI (Debian's
openmpi-bin: mpirun, orted and their plugins) and kubectl into an image root filesystem: the
interpreter, its standard library, the dist-packages torch imports, and every shared library
those link against (found with ldd), at their own paths.

    python-rootfs.py ROOT
"""
import os
import shutil
import subprocess
import sys

PYTHON = os.path.realpath("/usr/bin/python3")
STDLIB = f"/usr/lib/python{sys.version_info.major}.{sys.version_info.minor}"
DIST = "/usr/lib/python3/dist-packages"
# What `import torch, torch.distributed.run` loads from dist-packages.
PACKAGES = ["torch", "numpy", "astunparse", "six.py", "typing_extensions.py", "certifi"]
# Open MPI: its programs, the plugins it loads at run time, its help texts and settings.
MPI_FILES = ["/usr/bin/orterun", "/usr/bin/mpirun", "/usr/bin/mpiexec", "/usr/bin/orted"]
MPI_TREES = ["/usr/lib/x86_64-linux-gnu/openmpi", "/usr/lib/x86_64-linux-gnu/pmix2",
             "/usr/share/openmpi", "/etc/openmpi"]
KUBECTL = "/usr/bin/kubectl"
SKIP_STDLIB = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}


def copy(path: str, root: str) -> None:
    """Copies `path` (a file or symlink, its links followed and kept) under `root`."""
    dest = root + path
    if os.path.lexists(dest):
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if os.path.islink(path):
        target = os.readlink(path)
        os.symlink(target, dest)
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if os.path.isfile(resolved) or os.path.islink(resolved):
            copy(resolved, root)
    else:
        shutil.copy2(path, dest)


def is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def libraries(path: str) -> list[str]:
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) > parts.index("=>") + 1:
            lib = parts[parts.index("=>") + 1]
            if lib.startswith("/"):
                libs.append(lib)
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    # /lib is /usr/lib on Debian: one copy, at the directory's real path.
    return [os.path.join(os.path.realpath(os.path.dirname(lib)), os.path.basename(lib)) for lib in libs]


def main() -> None:
    root = sys.argv[1]
    files = [PYTHON]
    for top, dirs, names in os.walk(STDLIB):
        if top == STDLIB:
            dirs[:] = [d for d in dirs if d not in SKIP_STDLIB and not d.endswith("-packages") and not d.startswith("config-")]
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        files += [os.path.join(top, n) for n in names]
    for p in PACKAGES:
        path = os.path.join(DIST, p)
        if os.path.isfile(path):
            files.append(path)
            continue
        for top, dirs, names in os.walk(path):
            dirs[:] = [d for d in dirs if d not in ("__pycache__", "test", "tests", "include")]
            # torch/bin holds torch_shm_manager, which import torch needs, and C++ tests.
            files += [os.path.join(top, n) for n in names if not n.startswith("test_")]
    files += [f for f in MPI_FILES if os.path.lexists(f)]
    for tree in MPI_TREES:
        for top, _, names in os.walk(tree):
            files += [os.path.join(top, n) for n in names]
    seen = set()
    queue = list(files)
    while queue:
        f = queue.pop()
        if f in seen:
            continue
        seen.add(f)
        copy(f, root)
        if is_elf(f):
            queue += [lib for lib in libraries(f) if lib not in seen]
    for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64"), ("sbin", "usr/sbin")):
        if not os.path.lexists(os.path.join(root, link)):
            os.symlink(target, os.path.join(root, link))
    # kubectl (static): a copy of the real file at /usr/bin.
    kubectl = os.path.realpath(KUBECTL)
    if os.path.isfile(kubectl):
        os.makedirs(os.path.join(root, "usr/bin"), exist_ok=True)
        shutil.copy2(kubectl, os.path.join(root, "usr/bin/kubectl"))
    for name in ("python3", "python"):
        link = os.path.join(root, "usr/bin", name)
        if not os.path.lexists(link):
            os.symlink(os.path.basename(PYTHON), link)
    print(f"{len(seen)} files", file=sys.stderr)


if __name__ == "__main__":
    main()
