"""Many images, one output folder, possibly several processes: output names, each process's share, the manifest.

Every process of a run plans the same list in the same way, so output names are decided over all inputs (two
processes never write the same file) and each process takes every `count`-th item from its own `index`.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError


@dataclass(frozen=True)
class Shard:
    """This process's place in a run: it handles the planned items index, index + count, index + 2 * count, ..."""

    index: int = 0
    count: int = 1
    local_rank: int | None = None  # the process's number on its machine (torchrun), for picking its GPU
    launcher: str = ""


@dataclass(frozen=True)
class Item:
    image: Path
    output: Path


def shard_from_environment(env=None) -> Shard:
    """The shard a launcher gave this process: torchrun and others set RANK / WORLD_SIZE (and LOCAL_RANK); a SLURM
    job array sets SLURM_ARRAY_TASK_ID / _COUNT / _MIN (and _STEP for --array=a-b:step). Neither: the whole list."""
    env = os.environ if env is None else env
    try:
        if "RANK" in env and "WORLD_SIZE" in env:
            local_rank = int(env["LOCAL_RANK"]) if "LOCAL_RANK" in env else None
            shard = Shard(int(env["RANK"]), int(env["WORLD_SIZE"]), local_rank, "RANK/WORLD_SIZE")
        elif "SLURM_ARRAY_TASK_ID" in env:
            step = int(env.get("SLURM_ARRAY_TASK_STEP", 1))
            offset = int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))
            shard = Shard(offset // step, int(env["SLURM_ARRAY_TASK_COUNT"]), None, "SLURM array")
        else:
            return Shard()
    except (KeyError, ValueError) as error:
        raise InputError(f"The launcher's environment variables cannot be read ({error}): set RANK and WORLD_SIZE "
                         "(or SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT) to whole numbers.") from None
    if not 0 <= shard.index < shard.count:
        raise InputError(f"This process is number {shard.index} of {shard.count} ({shard.launcher}), which is "
                         "outside the run: check the launcher's settings.")
    return shard


def plan(images, output_dir: Path, suffix: str) -> list[Item]:
    """One item per distinct input file, in input order, each with an output name no other item has.

    An image's name is its file's stem (robot.png → robot.ply); stems shared by several inputs take the extension
    too (robot.png, robot.jpg → robot_png.ply, robot_jpg.ply); a name still taken gets _2, _3, ... in input order.
    Names are compared without case, as on Windows and macOS file systems."""
    paths = list(dict.fromkeys(Path(os.path.abspath(image)) for image in images))
    stem_uses: dict[str, int] = {}
    for path in paths:
        stem_uses[path.stem.casefold()] = stem_uses.get(path.stem.casefold(), 0) + 1
    taken, items = set(), []
    for path in paths:
        name = path.stem if stem_uses[path.stem.casefold()] == 1 else f"{path.stem}_{path.suffix.lstrip('.')}"
        unique, number = name, 1
        while unique.casefold() in taken:
            number += 1
            unique = f"{name}_{number}"
        taken.add(unique.casefold())
        items.append(Item(path, output_dir / f"{unique}{suffix}"))
    return items


def share(items: list, shard: Shard) -> list:
    return items[shard.index::shard.count]


def manifest_path(output_dir: Path, shard: Shard) -> Path:
    """manifest.jsonl, or one file per process of a sharded run (they never write the same file)."""
    if shard.count == 1:
        return output_dir / "manifest.jsonl"
    width = len(str(shard.count - 1))
    return output_dir / f"manifest.{shard.index:0{width}d}-of-{shard.count}.jsonl"


class Manifest:
    """Appends one JSON line per image, flushed at once, so a run that is stopped keeps the lines of what it did."""

    def __init__(self, path: Path):
        self.path = path
        self.file = path.open("a", encoding="utf-8")

    def write(self, record: dict):
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()

