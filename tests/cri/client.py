"""A small runtime.v1 RuntimeService client, what kubelet's side of the CRI does for pods."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc

from tests.e2e.private_containerd import PrivateContainerd

RPC_TIMEOUT = 120.0


@dataclass(frozen=True)
class PodSpec:
    """What the test asks for: CRI metadata, DNS and host ports."""

    name: str
    namespace: str
    uid: str
    dns_servers: tuple[str, ...] = ()
    dns_searches: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    host_ports: tuple[tuple[int, int], ...] = ()  # (container port, host port), TCP


@dataclass(frozen=True)
class Sandbox:
    """A running pod sandbox as the CRI reports it."""

    id: str
    ip: str
    netns: str  # the network namespace path containerd made (in the node's mount namespace)
    info: dict[str, Any]


class CriClient:
    def __init__(self, cd: PrivateContainerd, pb2: ModuleType, pb2_grpc: ModuleType) -> None:
        self.cd = cd
        self.pb = pb2
        self.channel = grpc.insecure_channel(f"unix://{cd.address}")
        self.rt = pb2_grpc.RuntimeServiceStub(self.channel)
        assert cd.cri is not None
        self.cgroup_parent = cd.cri.cgroup_parent

    def close(self) -> None:
        self.channel.close()

    def version(self) -> Any:
        return self.rt.Version(self.pb.VersionRequest(version="v1"), timeout=RPC_TIMEOUT)

    def conditions(self) -> dict[str, Any]:
        """CRI Status: condition type -> RuntimeCondition."""
        resp = self.rt.Status(self.pb.StatusRequest(verbose=True), timeout=RPC_TIMEOUT)
        return {c.type: c for c in resp.status.conditions}

    def cni_status(self) -> dict[str, Any]:
        """The CNI part of CRI Status's verbose info: the loaded network configs."""
        resp = self.rt.Status(self.pb.StatusRequest(verbose=True), timeout=RPC_TIMEOUT)
        info: dict[str, Any] = json.loads(resp.info["cniconfig"])
        return info

    def run_pod(self, spec: PodSpec) -> str:
        pb = self.pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=spec.name, namespace=spec.namespace, uid=spec.uid),
            hostname=spec.name,
            dns_config=pb.DNSConfig(
                servers=list(spec.dns_servers),
                searches=list(spec.dns_searches),
                options=list(spec.dns_options),
            ),
            port_mappings=[
                pb.PortMapping(protocol=pb.TCP, container_port=cport, host_port=hport)
                for cport, hport in spec.host_ports
            ],
            labels={"app": spec.name},
            linux=pb.LinuxPodSandboxConfig(cgroup_parent=self.cgroup_parent),
        )
        resp = self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=config), timeout=RPC_TIMEOUT)
        return str(resp.pod_sandbox_id)

    def sandbox(self, sandbox_id: str) -> Sandbox:
        resp = self.rt.PodSandboxStatus(
            self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True),
            timeout=RPC_TIMEOUT,
        )
        info: dict[str, Any] = json.loads(resp.info["info"]) if "info" in resp.info else {}
        namespaces = info.get("runtimeSpec", {}).get("linux", {}).get("namespaces", [])
        netns = [str(n.get("path", "")) for n in namespaces if n.get("type") == "network"]
        return Sandbox(
            id=sandbox_id,
            ip=str(resp.status.network.ip),
            netns=netns[0] if netns else "",
            info=info,
        )

    def state(self, sandbox_id: str) -> str:
        resp = self.rt.PodSandboxStatus(
            self.pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id), timeout=RPC_TIMEOUT
        )
        return str(self.pb.PodSandboxState.Name(resp.status.state))

    def list_pods(self) -> dict[str, str]:
        """sandbox id -> pod name, every sandbox containerd knows."""
        resp = self.rt.ListPodSandbox(self.pb.ListPodSandboxRequest(), timeout=RPC_TIMEOUT)
        return {str(p.id): str(p.metadata.name) for p in resp.items}

    def stop_pod(self, sandbox_id: str) -> None:
        self.rt.StopPodSandbox(
            self.pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=RPC_TIMEOUT
        )

    def remove_pod(self, sandbox_id: str) -> None:
        self.rt.RemovePodSandbox(
            self.pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id), timeout=RPC_TIMEOUT
        )

    def remove_all(self) -> None:
        """Teardown: stop and remove whatever sandboxes are left (errors are for the test)."""
        with contextlib.suppress(grpc.RpcError):
            for sandbox_id in self.list_pods():
                with contextlib.suppress(grpc.RpcError):
                    self.stop_pod(sandbox_id)
                with contextlib.suppress(grpc.RpcError):
                    self.remove_pod(sandbox_id)
