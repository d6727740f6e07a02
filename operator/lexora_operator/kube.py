"""A small async Kubernetes API client over aiohttp (which kopf already brings).

Only what the operator does: get, list, create, server-side apply, merge-patch, delete. It
authenticates with the same kopf.ConnectionInfo the operator logs in with, so kopf and this client
talk to one server.
"""

from __future__ import annotations

import json
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

# Built-in kinds the operator creates, by apiVersion and kind -> plural.
PLURALS = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Pod": "pods",
    "Node": "nodes",
    "Deployment": "deployments",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "NetworkPolicy": "networkpolicies",
    "Secret": "secrets",
    "Event": "events",
    "Job": "jobs",
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "ModelDeployment": "modeldeployments",
    "ScaledObject": "scaledobjects",  # KEDA's (keda.sh/v1alpha1)
    "EndpointSlice": "endpointslices",
}
# Server-side apply's field manager: the fields the operator sets are owned under this name, and a
# field it stops setting is removed from the object by the next apply.
FIELD_MANAGER = "lexora-operator"


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason


def path_for(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [base]
    if namespace:
        parts.append(f"namespaces/{namespace}")
    parts.append(PLURALS[kind])
    if name:
        parts.append(name)
    return "/".join(parts)


def object_path(obj: Mapping[str, Any]) -> str:
    meta = obj["metadata"]
    return path_for(obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"])


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext | bool:
    if not info.server.startswith("https"):
        return False
    if info.insecure:
        return False
    context = ssl.create_default_context(
        cafile=str(info.ca_path) if info.ca_path else None,
        cadata=info.ca_data.decode() if isinstance(info.ca_data, bytes) else info.ca_data,
    )
    certificate, key = info.certificate_path, info.private_key_path
    if info.certificate_data:
        certificate = _to_file(info.certificate_data)
    if info.private_key_data:
        key = _to_file(info.private_key_data)
    if certificate:
        context.load_cert_chain(str(certificate), str(key) if key else None)
    return context


def _to_file(data: str | bytes) -> str:
    with tempfile.NamedTemporaryFile("wb", delete=False, suffix=".pem") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        return f.name


class KubeApi:
    def __init__(self, info: kopf.ConnectionInfo, token_file: str | None = None) -> None:
        self.server = info.server.rstrip("/")
        # Projected service-account tokens rotate: re-read the file rather than keep the first token.
        self._token_file = token_file
        headers = {"Accept": "application/json"}
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        auth = aiohttp.BasicAuth(info.username, info.password or "") if info.username else None
        self._session = aiohttp.ClientSession(
            headers=headers,
            auth=auth,
            connector=aiohttp.TCPConnector(ssl=_ssl_context(info)),
            timeout=aiohttp.ClientTimeout(total=30),
        )

    async def close(self) -> None:
        await self._session.close()

    def _fresh_token(self) -> dict[str, str]:
        if not self._token_file or not os.path.exists(self._token_file):
            return {}
        with open(self._token_file, encoding="utf-8") as f:
            return {"Authorization": f"Bearer {f.read().strip()}"}

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        kwargs["headers"] = {**self._fresh_token(), **kwargs.get("headers", {})}
        async with self._session.request(method, self.server + path, **kwargs) as response:
            if response.status == 404 and method in ("GET", "DELETE"):
                return None
            body = await response.json(content_type=None) if response.content_length != 0 else {}
            if response.status >= 400:
                body = body if isinstance(body, dict) else {}
                raise KubeError(response.status, body.get("reason", ""), body.get("message", str(body)))
            return body if isinstance(body, dict) else {}

    async def get(self, path: str) -> dict[str, Any] | None:
        return await self._request("GET", path)

    async def list(self, path: str, labels: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
        body = await self._request("GET", path, params=params) or {}
        items = list(body.get("items") or [])
        if labels:  # the selector is also applied here: not every server (or emulator) filters
            items = [i for i in items if _has_labels(i, labels)]
        return items

    async def create(self, path: str, obj: Mapping[str, Any]) -> dict[str, Any]:
        return await self._request("POST", path, json=obj) or {}

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply (creates the object if missing). `force`: the operator's fields win over
        another manager's edit (kubectl edit, a stray controller), which is what drift correction is."""
        headers = {"Content-Type": "application/apply-patch+yaml"}  # JSON is YAML
        params = {"fieldManager": FIELD_MANAGER, "force": "true"}
        path = object_path(obj)
        return await self._request("PATCH", path, data=json.dumps(obj), headers=headers, params=params) or {}

    async def patch(self, path: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/merge-patch+json"}
        return await self._request("PATCH", path, data=json.dumps(patch), headers=headers) or {}

    async def log_tail(self, namespace: str, pod: str, lines: int = 20) -> str | None:
        """The last lines of a pod's log (None: not readable, e.g. without `get pods/log`)."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        headers = {**self._fresh_token(), "Accept": "text/plain"}
        try:
            async with self._session.get(self.server + path, params={"tailLines": str(lines)}, headers=headers) as r:
                return await r.text() if r.status == 200 else None
        except aiohttp.ClientError:
            return None

    async def delete(self, path: str) -> None:
        await self._request("DELETE", path, json={"propagationPolicy": "Background"})


def _has_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    actual = (obj.get("metadata") or {}).get("labels") or {}
    return all(actual.get(k) == v for k, v in labels.items())
