"""pydantic models of what the CNI spec lets a plugin (and libcni) print, one per version.

Source: the CNI specification, SPEC.md of containernetworking/cni at the tags spec-v0.3.1,
spec-v0.4.0, spec-v1.0.0 and spec-v1.1.0 ("Result" / "Success" / "Error" / "Version"
sections), and libcni 1.1.2's re-encoding of results (``types/040``, ``types/100``) for what
the driver prints.

Every model is strict: unknown fields, missing required fields and wrong JSON types are
rejected (``extra="forbid"``, ``strict=True``: no "1" for 1, no 1 for "1"). On top of the
field shapes: addresses are CIDRs, gateways and route next hops are addresses of the same
family, a gateway lies inside its address's subnet (an IPv6 link-local next hop excepted: it
is how IPv6 routers are usually named), and an ``ips[].interface`` index points into
``interfaces``. 0.3.x and 0.4.0 carry ``version`` ("4"/"6", matching the address) on each ip;
1.x does not; 1.1.0 adds ``mtu``/``socketPath``/``pciID`` to interfaces and
``mtu``/``advmss``/``priority``/``table``/``scope`` to routes.

``validate_*`` raise ``AssertionError`` naming the object and every violation, so the harness
can call them on everything it receives and a test fails where the output was read.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

MAC_RE = re.compile(r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")

NonEmptyStr = Annotated[str, Field(min_length=1)]
NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(gt=0)]


def _cidr(value: str) -> str:
    if "/" not in value:
        raise ValueError(f"{value!r} is not in CIDR notation")
    ipaddress.ip_interface(value)
    return value


def _address(value: str) -> str:
    ipaddress.ip_address(value)
    return value


def _same_family(addr: str, other: str, what: str) -> None:
    if ipaddress.ip_interface(addr).version != ipaddress.ip_address(other).version:
        raise ValueError(f"{what} {other} is not of the family of {addr}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---- objects --------------------------------------------------------------------------------


class Interface(Strict):
    """interfaces[] up to 1.0.0."""

    name: NonEmptyStr
    mac: str | None = None
    sandbox: str | None = None

    @field_validator("mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not MAC_RE.match(v):
            raise ValueError(f"mac {v!r} is not a 48-bit MAC address")
        return v


class Interface110(Interface):
    mtu: PosInt | None = None
    socketPath: str | None = None  # noqa: N815 (spec field name)
    pciID: str | None = None  # noqa: N815


class IPConfig(Strict):
    """ips[] in 1.x: no ``version``."""

    address: str
    gateway: str | None = None
    interface: NonNegInt | None = None

    @field_validator("address")
    @classmethod
    def _address_is_cidr(cls, v: str) -> str:
        return _cidr(v)

    @field_validator("gateway")
    @classmethod
    def _gateway_is_ip(cls, v: str | None) -> str | None:
        return None if v is None else _address(v)

    @model_validator(mode="after")
    def _gateway_in_subnet(self) -> IPConfig:
        if self.gateway is not None:
            _same_family(self.address, self.gateway, "gateway")
            gw = ipaddress.ip_address(self.gateway)
            net = ipaddress.ip_interface(self.address).network
            if gw not in net and not (gw.version == 6 and gw.is_link_local):
                raise ValueError(f"gateway {gw} is outside the subnet {net} of {self.address}")
        return self


class IPConfig03(IPConfig):
    """ips[] in 0.3.0, 0.3.1, 0.4.0: ``version`` "4" or "6", matching the address."""

    version: Literal["4", "6"]

    @model_validator(mode="after")
    def _version_matches(self) -> IPConfig03:
        family = str(ipaddress.ip_interface(self.address).version)
        if self.version != family:
            raise ValueError(f"version {self.version!r} but {self.address} is IPv{family}")
        return self


class Route(Strict):
    dst: str
    gw: str | None = None

    @field_validator("dst")
    @classmethod
    def _dst(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"dst {v!r} is not in CIDR notation")
        ipaddress.ip_network(v, strict=False)
        return v

    @field_validator("gw")
    @classmethod
    def _gw(cls, v: str | None) -> str | None:
        return None if v is None else _address(v)

    @model_validator(mode="after")
    def _gw_family(self) -> Route:
        if self.gw is not None:
            _same_family(self.dst, self.gw, "gw")
        return self


class Route110(Route):
    mtu: NonNegInt | None = None
    advmss: NonNegInt | None = None
    priority: NonNegInt | None = None
    table: NonNegInt | None = None
    scope: NonNegInt | None = None


class DNS(Strict):
    nameservers: list[str] | None = None
    domain: str | None = None
    search: list[str] | None = None
    options: list[str] | None = None


# ---- results --------------------------------------------------------------------------------


class _Result(Strict):
    def _check_indices(self, ips: list[Any] | None, interfaces: list[Any] | None) -> None:
        count = len(interfaces or [])
        for i, ip in enumerate(ips or []):
            if ip.interface is not None and ip.interface >= count:
                raise ValueError(
                    f"ips[{i}].interface = {ip.interface} but there are {count} interfaces"
                )


class Result03(_Result):
    cniVersion: Literal["0.3.0", "0.3.1"]  # noqa: N815
    interfaces: list[Interface] | None = None
    ips: list[IPConfig03] | None = None
    routes: list[Route] | None = None
    dns: DNS | None = None

    @model_validator(mode="after")
    def _indices(self) -> Result03:
        self._check_indices(self.ips, self.interfaces)
        return self


class Result040(Result03):
    cniVersion: Literal["0.4.0"]  # type: ignore[assignment]  # noqa: N815


class Result100(_Result):
    cniVersion: Literal["1.0.0"]  # noqa: N815
    interfaces: list[Interface] | None = None
    ips: list[IPConfig] | None = None
    routes: list[Route] | None = None
    dns: DNS | None = None

    @model_validator(mode="after")
    def _indices(self) -> Result100:
        self._check_indices(self.ips, self.interfaces)
        return self


class Result110(_Result):
    cniVersion: Literal["1.1.0"]  # noqa: N815
    interfaces: list[Interface110] | None = None
    ips: list[IPConfig] | None = None
    routes: list[Route110] | None = None
    dns: DNS | None = None

    @model_validator(mode="after")
    def _indices(self) -> Result110:
        self._check_indices(self.ips, self.interfaces)
        return self


class IPConfig020(Strict):
    """ip4 / ip6 of the 0.1.0 / 0.2.0 result."""

    ip: str
    gateway: str | None = None
    routes: list[Route] | None = None

    @field_validator("ip")
    @classmethod
    def _ip(cls, v: str) -> str:
        return _cidr(v)

    @model_validator(mode="after")
    def _gateway(self) -> IPConfig020:
        if self.gateway is not None:
            IPConfig(address=self.ip, gateway=self.gateway)
        return self


class Result020(Strict):
    cniVersion: Literal["0.1.0", "0.2.0"]  # noqa: N815
    ip4: IPConfig020 | None = None
    ip6: IPConfig020 | None = None
    dns: DNS | None = None


RESULT_MODELS: dict[str, type[Strict]] = {
    "0.1.0": Result020,
    "0.2.0": Result020,
    "0.3.0": Result03,
    "0.3.1": Result03,
    "0.4.0": Result040,
    "1.0.0": Result100,
    "1.1.0": Result110,
}


# ---- errors, VERSION, the driver's own shapes -----------------------------------------------


class ErrorObject(Strict):
    """A plugin's error on stdout. ``cniVersion`` is checked by its own test (skel 1.1.1 leaves
    it out for environment errors)."""

    cniVersion: str | None = None  # noqa: N815
    code: NonNegInt
    msg: NonEmptyStr
    details: str | None = None


class VersionInfo(Strict):
    """VERSION's answer, from the plugin itself."""

    cniVersion: str  # noqa: N815
    supportedVersions: list[NonEmptyStr] = Field(min_length=1)  # noqa: N815

    @model_validator(mode="after")
    def _own_version_supported(self) -> VersionInfo:
        if self.cniVersion not in self.supportedVersions:
            raise ValueError(f"cniVersion {self.cniVersion} not among {self.supportedVersions}")
        return self


class DriverVersion(Strict):
    """cnidriver's ``version``: libcni's GetVersionInfo, re-encoded."""

    supportedVersions: list[NonEmptyStr] = Field(min_length=1)  # noqa: N815


class DriverFailure(Strict):
    """cnidriver's failure line: a plugin's ``*types.Error`` as libcni returned it, or the
    driver's/libcni's own error (code 0)."""

    code: NonNegInt
    msg: NonEmptyStr
    details: str | None = None
    source: Literal["plugin", "driver"]


# ---- entry points ---------------------------------------------------------------------------


def _validate(model: type[Strict], data: Any, what: str) -> None:
    try:
        model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<top>'}: {e['msg']}" for e in exc.errors()
        )
        raise AssertionError(f"{what} violates the CNI spec ({model.__name__}): {problems}\n"
                             f"{data!r}") from None


def validate_result(data: Any, version: str) -> None:
    """A Success result must be one of ``version``."""
    model = RESULT_MODELS.get(version)
    assert model is not None, f"no result model for spec version {version!r}"
    _validate(model, data, f"ADD result (requested {version})")


def validate_error(data: Any) -> None:
    _validate(ErrorObject, data, "error object")


def validate_version_info(data: Any) -> None:
    _validate(VersionInfo, data, "VERSION answer")


def validate_driver_version(data: Any) -> None:
    _validate(DriverVersion, data, "libcni version info")


def validate_driver_failure(data: Any) -> None:
    _validate(DriverFailure, data, "driver failure")
