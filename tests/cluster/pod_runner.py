"""Run a Kubernetes pod spec on this machine, as a kubelet and container runtime would. Test harness.

`LocalPod` takes a pod spec as the operator rendered it (a Deployment's or a Job's pod template) and
runs it with no change to its commands, arguments, environment or paths:

- the pod gets its own network namespace (a "pause" process holds it, loopback up), so Triton binds
  its rendered ports 8000/8001/8002 without meeting any other process; `connect` reaches a port of
  the pod from this machine (the kubelet's probes, kube-proxy); its only egress is what
  `PodEnvironment.egress` opens: a port on the pod's loopback that reaches the same port on this
  machine's (a test's stand-in for a server on the internet, which counts what it serves);
- each volume is a directory of the pod's (emptyDir, configMap with its defaultMode, secret,
  persistentVolumeClaim from `PodEnvironment.claims`); emptyDir with medium Memory is a tmpfs of
  its sizeLimit, as the kubelet makes it;
- each container runs in its own mount namespace over this machine's filesystem (container_launch.py):
  its image is what `PodEnvironment.images` says the image holds (directories at paths, and ENV),
  its volume mounts are at their mountPath (subPath, readOnly), readOnlyRootFilesystem holds;
- init containers run one after the other to completion, then the containers start; a container's
  termination message (terminationMessagePath, FallbackToLogsOnError) is kept for the pod status;
- probes run as the kubelet runs them: httpGet against the pod's port, exec inside the container.

Not emulated: resource limits, users (containers run as root), the scheduler. Needs root, or
unprivileged user namespaces, for `unshare --mount` and `nsenter`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LAUNCHER = Path(__file__).with_name("container_launch.py")
CLONE_NEWNET = 0x40000000
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
_libc = ctypes.CDLL(None, use_errno=True)


class ContainerFailed(Exception):
    def __init__(self, container: str, exit_code: int, message: str):
        super().__init__(f"container {container} exited with {exit_code}: {message}")
        self.container = container
        self.exit_code = exit_code
        self.message = message


@dataclass(frozen=True)
class LocalImage:
    """An image, on this machine: the host's root filesystem plus `files` (path in the image -> a
    host directory or file, bound read-only there) and the image's ENV."""

    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)


@dataclass
class PodEnvironment:
    """What a pod's images, volumes and env refer to: the cluster's side of the pod."""

    images: dict[str, LocalImage]
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # decoded values
    claims: dict[str, Path] = field(default_factory=dict)  # PVC name -> its directory
    # Ports of 127.0.0.1 on this machine that every pod reaches at 127.0.0.1:<port> in its own
    # network namespace: its egress (nothing else outside the pod is reachable).
    egress: set[int] = field(default_factory=set)


def _quantity_bytes(value: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return int(float(value[: -len(suffix)]) * factor)
    return int(value)


def connect_in_netns(netns: str, port: int, timeout: float = 5.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` inside the network namespace `netns` (a /proc path).

    setns() moves only the calling thread, so a short-lived thread connects; the socket stays in the
    namespace it was made in and works from any thread."""
    result: dict[str, Any] = {}

    def connect() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result["sock"] = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=connect, name=f"connect-{port}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sock: socket.socket = result["sock"]
    sock.settimeout(None)
    return sock


def listen_in_netns(netns: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` inside the network namespace `netns` (as
    connect_in_netns: a short-lived thread enters the namespace; the socket stays there)."""
    result: dict[str, Any] = {}

    def listen() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns failed")
            finally:
                os.close(fd)
            result["sock"] = socket.create_server(("127.0.0.1", port))
        except OSError as exc:
            result["error"] = exc

    thread = threading.Thread(target=listen, name=f"listen-{port}", daemon=True)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    sock: socket.socket = result["sock"]
    return sock


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()


def _egress(listener: socket.socket, port: int) -> None:
    """Forward each connection accepted in the pod to 127.0.0.1:`port` on this machine (this thread
    was started from a thread in this machine's network namespace, so it connects from there)."""
    while True:
        try:
            inside, _ = listener.accept()
        except OSError:
            return  # the pod stopped
        try:
            outside = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            inside.close()
            continue
        outside.settimeout(None)
        threading.Thread(target=_pump, args=(outside, inside), daemon=True).start()
        threading.Thread(target=_pump, args=(inside, outside), daemon=True).start()


class LocalPod:
    """One pod spec, run here. `start()` makes the sandbox and volumes, `run_init_containers()` runs
    them to completion, `start_containers()` starts the rest; `stop()` ends everything."""

    def __init__(self, name: str, namespace: str, spec: dict[str, Any], env: PodEnvironment, workdir: Path):
        self.name, self.namespace, self.spec, self.environment = name, namespace, spec, env
        self.dir = workdir / f"{namespace}.{name}"
        self.volumes: dict[str, dict[str, Any]] = {}
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.termination: dict[str, str] = {}
        self._pause: subprocess.Popen[bytes] | None = None
        self._egress: list[socket.socket] = []
        self._lock = threading.Lock()

    # ---- sandbox and volumes ---------------------------------------------------------------------
    @property
    def netns(self) -> str:
        assert self._pause is not None, "the pod is not started"
        return f"/proc/{self._pause.pid}/ns/net"

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=False)
        (self.dir / "logs").mkdir()
        self._pause = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && exec sleep 2147483647"],
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while not self._loopback_up():
            if self._pause.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pod {self.name}: cannot make its network namespace")
            time.sleep(0.02)
        for port in sorted(self.environment.egress):
            listener = listen_in_netns(self.netns, port)
            self._egress.append(listener)
            threading.Thread(target=_egress, args=(listener, port), daemon=True, name=f"egress-{port}").start()
        for volume in self.spec.get("volumes") or []:
            self.volumes[volume["name"]] = self._make_volume(volume)

    def _loopback_up(self) -> bool:
        try:
            connect_in_netns(self.netns, 1).close()
        except ConnectionRefusedError:
            return True  # lo answers: up
        except OSError:
            return False
        return True

    def _make_volume(self, volume: dict[str, Any]) -> dict[str, Any]:
        path = self.dir / "volumes" / volume["name"]
        if "emptyDir" in volume:
            empty = volume["emptyDir"] or {}
            path.mkdir(parents=True)
            if empty.get("medium") == "Memory":
                return {"tmpfs_size": _quantity_bytes(str(empty.get("sizeLimit") or "64Mi"))}
            return {"path": path}
        if "configMap" in volume:
            ref = volume["configMap"]
            data = self.environment.config_maps.get(ref["name"])
            if data is None:
                raise ContainerFailed("(pod)", 1, f'configmap "{ref["name"]}" not found')
            return {"path": self._write_files(path, data, int(ref.get("defaultMode", 0o644)))}
        if "secret" in volume:
            ref = volume["secret"]
            data = self.environment.secrets.get(ref["secretName"])
            if data is None:
                raise ContainerFailed("(pod)", 1, f'secret "{ref["secretName"]}" not found')
            return {"path": self._write_files(path, data, int(ref.get("defaultMode", 0o644)))}
        if "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            if claim not in self.environment.claims:
                raise ContainerFailed("(pod)", 1, f'persistentvolumeclaim "{claim}" not found')
            return {"path": self.environment.claims[claim]}
        raise NotImplementedError(f"volume {volume['name']}: only emptyDir, configMap, secret and PVC are run here")

    @staticmethod
    def _write_files(path: Path, data: dict[str, str], mode: int) -> Path:
        path.mkdir(parents=True)
        for key, value in data.items():
            (path / key).write_text(value)
            (path / key).chmod(mode)
        return path

    # ---- containers ------------------------------------------------------------------------------
    def _env(self, container: dict[str, Any], image: LocalImage) -> dict[str, str]:
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", **image.env}
        env["HOSTNAME"] = self.name
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                env.update(self._secret(source["secretRef"]["name"]))
            elif "configMapRef" in source:
                env.update(self.environment.config_maps.get(source["configMapRef"]["name"]) or {})
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = str(var["value"])
            elif "secretKeyRef" in (var.get("valueFrom") or {}):
                ref = var["valueFrom"]["secretKeyRef"]
                secret = self._secret(ref["name"])
                if ref["key"] not in secret:
                    raise ContainerFailed(container["name"], 1, f"couldn't find key {ref['key']} in Secret")
                env[var["name"]] = secret[ref["key"]]
        return env

    def _secret(self, name: str) -> dict[str, str]:
        if name not in self.environment.secrets:
            raise ContainerFailed("(pod)", 1, f'secret "{name}" not found')
        return self.environment.secrets[name]

    def _launch_spec(self, container: dict[str, Any]) -> dict[str, Any]:
        name = container["name"]
        image = self.environment.images.get(container["image"])
        if image is None:
            raise ContainerFailed(name, 1, f"ErrImagePull: no local image {container['image']}")
        argv = [*(container.get("command") or []), *(container.get("args") or [])]
        if not argv:
            raise NotImplementedError(f"container {name}: the image's own entrypoint is not run here")
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = self.volumes[mount["name"]]
            entry: dict[str, Any] = {"target": mount["mountPath"], "read_only": bool(mount.get("readOnly"))}
            if "tmpfs_size" in volume:
                entry["tmpfs_size"] = volume["tmpfs_size"]
            else:
                source = Path(volume["path"])
                if mount.get("subPath"):
                    source = source / mount["subPath"]
                    source.mkdir(parents=True, exist_ok=True)  # as the kubelet makes a missing subPath
                entry["source"] = str(source)
            mounts.append(entry)
        termination_log = self.dir / "logs" / f"{name}.termination"
        termination_log.write_text("")
        security = container.get("securityContext") or {}
        return {
            "scratch": str(self.dir / "scratch" / name),
            "argv": argv,
            "env": self._env(container, image),
            "working_dir": container.get("workingDir"),
            "image_files": {target: str(source) for target, source in image.files.items()},
            "mounts": mounts,
            "read_only_root": bool(security.get("readOnlyRootFilesystem")),
            "termination_log": str(termination_log),
            "termination_message_path": container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH,
        }

    def _launch(self, container: dict[str, Any]) -> subprocess.Popen[bytes]:
        spec = self._launch_spec(container)
        spec_path = self.dir / f"{container['name']}.launch.json"
        spec_path.write_text(json.dumps(spec, indent=1))
        log = open(self.log_path(container["name"]), "ab")  # noqa: SIM115 - the child owns it
        try:
            process = subprocess.Popen(
                ["nsenter", f"--net={self.netns}", "--", "unshare", "--mount", "--propagation", "private", "--"]
                + [sys.executable, "-I", str(LAUNCHER), str(spec_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            log.close()
        with self._lock:
            self.processes[container["name"]] = process
        return process

    def log_path(self, container: str) -> Path:
        return self.dir / "logs" / f"{container}.log"

    def logs(self, container: str, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path(container).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def termination_message(self, container: dict[str, Any]) -> str:
        """What the kubelet reports for a terminated container: its termination-message file, or
        (FallbackToLogsOnError, on failure) the tail of its log."""
        message = (self.dir / "logs" / f"{container['name']}.termination").read_text(errors="replace").strip()
        if not message and container.get("terminationMessagePolicy") == "FallbackToLogsOnError":
            message = self.logs(container["name"], 20)
        return message

    def run_init_containers(self, timeout: float = 600) -> None:
        """Each init container to completion, in order; ContainerFailed on the first that fails."""
        for container in self.spec.get("initContainers") or []:
            self.run_to_completion(container, timeout)

    def run_to_completion(self, container: dict[str, Any], timeout: float = 600) -> None:
        process = self._launch(container)
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill(process)
            raise ContainerFailed(container["name"], 137, f"still running after {timeout:g} s") from None
        if code != 0:
            raise ContainerFailed(container["name"], code, self.termination_message(container))

    def start_containers(self) -> None:
        for container in self.spec["containers"]:
            self._launch(container)

    def run_job_pod(self, timeout: float = 600) -> None:
        """A Job's pod (restartPolicy Never/OnFailure, run once here): init containers, then every
        container to completion. ContainerFailed on the first failure."""
        self.run_init_containers(timeout)
        for container in self.spec["containers"]:
            self.run_to_completion(container, timeout)

    def container_exited(self, name: str) -> int | None:
        process = self.processes.get(name)
        return None if process is None else process.poll()

    # ---- probes ----------------------------------------------------------------------------------
    def connect(self, port: int) -> socket.socket:
        return connect_in_netns(self.netns, port)

    def port_of(self, container: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        return next(p["containerPort"] for p in container.get("ports") or [] if p.get("name") == port)

    def probe(self, container: dict[str, Any], probe: dict[str, Any]) -> tuple[bool, str]:
        """One probe, as the kubelet runs it: (success, what it said)."""
        timeout = float(probe.get("timeoutSeconds", 1))
        if "httpGet" in probe:
            get = probe["httpGet"]
            try:
                sock = self.connect(self.port_of(container, get["port"]))
            except OSError as exc:
                return False, f"connect: {exc}"
            connection = http.client.HTTPConnection("localhost", timeout=timeout)
            sock.settimeout(timeout)
            connection.sock = sock
            try:
                connection.request("GET", get.get("path", "/"))
                response = connection.getresponse()
                return 200 <= response.status < 400, f"HTTP {response.status}"
            except OSError as exc:
                return False, str(exc)
            finally:
                connection.close()
        if "exec" in probe:
            process = self.processes[container["name"]]
            image = self.environment.images[container["image"]]
            env = self._env(container, image)
            command = ["nsenter", "-t", str(process.pid), "-m", "-n", "-r", "-w", "--", *probe["exec"]["command"]]
            try:
                done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                return False, f"command timed out after {timeout:g}s"
            return done.returncode == 0, (done.stdout + done.stderr).strip()
        raise NotImplementedError(f"probe {probe}")

    def wait_for_probe(self, container: dict[str, Any], probe: dict[str, Any], deadline: float) -> str:
        """Probe until it succeeds (its answer) or the container exits or `deadline` passes (ContainerFailed)."""
        while True:
            code = self.container_exited(container["name"])
            if code is not None:
                raise ContainerFailed(container["name"], code, self.termination_message(container))
            ok, said = self.probe(container, probe)
            if ok:
                return said
            if time.monotonic() > deadline:
                raise ContainerFailed(container["name"], -1, f"probe never passed: {said}")
            time.sleep(0.5)

    # ---- the end ---------------------------------------------------------------------------------
    @staticmethod
    def _kill(process: subprocess.Popen[bytes], grace: float = 10) -> None:
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(5)

    def stop(self, grace: float = 10) -> None:
        """SIGTERM every container, SIGKILL what is left after `grace` seconds (the kubelet's
        terminationGracePeriodSeconds, shortened: nothing here needs to drain)."""
        with self._lock:
            processes = list(self.processes.values())
        for process in processes:
            self._kill(process, grace)
        for listener in self._egress:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes its accept()
            with contextlib.suppress(OSError):
                listener.close()
        if self._pause is not None:
            self._kill(self._pause, grace=2)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def decode_secret(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return {**data, **(secret.get("stringData") or {})}
