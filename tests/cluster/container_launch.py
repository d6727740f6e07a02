"""Start one container of a pod: the container runtime's part of the pod runner (pod_runner.py).

Run as `unshare --mount --propagation private python container_launch.py SPEC.json` inside the pod's
network namespace. It builds the container's root filesystem and execs the container's command there:

- the image is this machine's root filesystem under a private overlay (writes go to a tmpfs and
  vanish with the container), plus the directories the image bakes in (`image_files`) bound at their
  paths inside the image;
- `/dev` is a fresh tmpfs with the usual device nodes and the termination-message file; `/proc` and
  `/sys` are the host's;
- each volume mount is a bind of the pod's volume directory (read-only when the mount says so), or a
  tmpfs of the volume's size (emptyDir with medium Memory);
- the root is remounted read-only when the container asks for readOnlyRootFilesystem, so a program
  that writes outside its volumes fails here as it would in the cluster.

Standard library only: it runs before the container's environment exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def make_target(path: str, is_file: bool) -> None:
    if is_file:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.exists(path):
            open(path, "a").close()  # noqa: SIM115 - a mount point, closed at once
    else:
        os.makedirs(path, exist_ok=True)


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    scratch = spec["scratch"]  # a private directory for this container's upper layer
    os.makedirs(scratch, exist_ok=True)
    mount("-t", "tmpfs", "-o", "size=256m", "tmpfs", scratch)
    upper, work, root = (os.path.join(scratch, d) for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.makedirs(d)
    mount("-t", "overlay", "overlay", "-o", f"lowerdir=/,upperdir={upper},workdir={work}", root)

    def inside(path: str) -> str:
        return os.path.join(root, path.lstrip("/"))

    for fs in ("proc", "sys"):
        mount("--rbind", f"/{fs}", inside(fs))
    dev = inside("dev")
    mount("-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", dev)
    for node in DEVICES:
        make_target(os.path.join(dev, node), True)
        mount("--bind", f"/dev/{node}", os.path.join(dev, node))
    os.makedirs(os.path.join(dev, "shm"))
    mount("-t", "tmpfs", "-o", "size=64m", "tmpfs", os.path.join(dev, "shm"))  # the runtime's default
    termination_log = spec["termination_log"]
    make_target(inside(spec["termination_message_path"]), True)
    mount("--bind", termination_log, inside(spec["termination_message_path"]))

    # What the image bakes in, then the volumes (longest paths last, so nested mounts stack).
    binds = [(target, source, True) for target, source in spec["image_files"].items()]
    for target, source, read_only in sorted(binds, key=lambda b: len(b[0])):
        make_target(inside(target), os.path.isfile(source))
        mount("--bind", source, inside(target))
        if read_only:
            mount("-o", "remount,bind,ro", inside(target))
    for volume in sorted(spec["mounts"], key=lambda m: len(m["target"])):
        target = inside(volume["target"])
        if volume.get("tmpfs_size"):
            make_target(target, False)
            mount("-t", "tmpfs", "-o", f"size={volume['tmpfs_size']}", "tmpfs", target)
            continue
        make_target(target, os.path.isfile(volume["source"]))
        mount("--bind", volume["source"], target)
        if volume.get("read_only"):
            mount("-o", "remount,bind,ro", target)
    if spec.get("read_only_root"):
        mount("-o", "remount,ro", root)

    os.chroot(root)
    os.chdir(spec.get("working_dir") or "/")
    env = spec["env"]
    argv = spec["argv"]
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as exc:
        print(f"cannot start {argv[0]}: {exc}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1])
