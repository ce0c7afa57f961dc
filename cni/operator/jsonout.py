"""``--json`` output of ``weft ls`` / ``status`` / ``gc``: pydantic models.

Imported only by those subcommands when ``--json`` is given: ``import pydantic`` costs
45-77 ms, more than a whole CNI exec, so nothing on the CNI path may import this module.
Field names are camelCase like the CNI JSON a runtime sees; the schemas are stable
(``LsOutput.model_json_schema()`` etc.), so scripts can rely on them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, get_type_hints

# pydantic would otherwise scan every installed distribution's entry points for plugins
# (importlib.metadata: slow, and modules the frozen bundle does not carry); weft uses none.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from pydantic import BaseModel, ConfigDict, create_model  # noqa: E402
from pydantic.alias_generators import to_camel  # noqa: E402

from cni.operator.state import NodeFacts, Problem, RangeUsage, Row  # noqa: E402


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


def _mirror(nt: type[tuple[Any, ...]], name: str, **extra: Any) -> type[_Model]:
    """A model with the fields of the NamedTuple ``nt`` (plus ``extra``): the row types of
    ``cni.operator.state`` stay the one declaration of what a row holds."""
    fields: dict[str, Any] = {k: (t, ...) for k, t in get_type_hints(nt).items()}
    return create_model(name, __base__=_Model, **fields, **extra)


if TYPE_CHECKING:  # to mypy: models; built from the rows below
    Address = _Model
    RangeUse = _Model
else:
    Address = _mirror(Row, "Address")
    RangeUse = _mirror(RangeUsage, "RangeUse", available=(int, ...))


class LsOutput(_Model):
    config: str
    store: str
    addresses: list[Address]


class ProblemOut(_Model):
    what: str
    fix: str


class Bridge(_Model):
    name: str
    exists: bool
    kind: str | None
    addresses: list[str]
    mtu: int | None
    want_addresses: list[str]
    want_mtu: int | None


class Helper(_Model):
    socket: str
    state: str
    build: str


class SubnetOut(_Model):
    path: str | None
    networks: list[str]
    subnet: str | None
    ipv6_subnet: str | None
    mtu: int | None
    ipmasq: bool | None
    error: str


class StatusOutput(_Model):
    config: str
    healthy: bool
    subnet_file: SubnetOut
    bridge: Bridge
    forwarding: dict[str, str]
    ranges: list[RangeUse]
    store: str
    helper: Helper
    problems: list[ProblemOut]


class GcEntry(_Model):
    ip: str
    container_id: str
    ifname: str
    pod_namespace: str
    pod_name: str
    reason: str
    error: str = ""


class GcOutput(_Model):
    store: str
    dry_run: bool
    released: list[GcEntry]
    failed: list[GcEntry]
    not_touched: list[GcEntry]
    live_kept: int


def _dump(model: BaseModel) -> str:
    return model.model_dump_json(by_alias=True, indent=2)


def _address(r: Row) -> Address:
    return Address(**r._asdict())


def _range_use(u: RangeUsage) -> RangeUse:
    return RangeUse.model_validate({**u._asdict(), "available": u.available})


def ls_json(config: str, store: str, table: list[Row]) -> str:
    return _dump(LsOutput(config=config, store=store, addresses=[_address(r) for r in table]))


def status_json(config: str, f: NodeFacts, problems: list[Problem], helper_build: str) -> str:
    sf = f.subnet
    return _dump(
        StatusOutput(
            config=config,
            healthy=not problems,
            subnet_file=SubnetOut(
                path=f.subnet_file,
                networks=[str(n) for n in sf.networks] if sf else [],
                subnet=str(sf.subnet) if sf and sf.subnet else None,
                ipv6_subnet=str(sf.ipv6_subnet) if sf and sf.ipv6_subnet else None,
                mtu=sf.mtu if sf else None,
                ipmasq=sf.ipmasq if sf else None,
                error=f.subnet_error,
            ),
            bridge=Bridge(
                name=f.bridge,
                exists=f.bridge_exists,
                kind=f.bridge_kind,
                addresses=list(f.bridge_addrs),
                mtu=f.bridge_mtu,
                want_addresses=list(f.want_addrs),
                want_mtu=f.want_mtu,
            ),
            forwarding={f"ipv{v}": value for v, value in f.forwarding},
            ranges=[_range_use(u) for u in f.usage],
            store=f.store_dir,
            helper=Helper(socket=f.helper_socket, state=f.helper_state, build=helper_build),
            problems=[ProblemOut(what=p.what, fix=p.fix) for p in problems],
        )
    )


def _entry(r: Row, error: str = "") -> GcEntry:
    return GcEntry(
        ip=r.ip,
        container_id=r.container_id,
        ifname=r.ifname,
        pod_namespace=r.pod_namespace,
        pod_name=r.pod_name,
        reason=r.reason,
        error=error,
    )


def gc_json(
    store: str,
    dry_run: bool,
    released: list[Row],
    failed: list[tuple[Row, str]],
    not_touched: tuple[Row, ...],
    live_kept: int,
) -> str:
    return _dump(
        GcOutput(
            store=store,
            dry_run=dry_run,
            released=[_entry(r) for r in released],
            failed=[_entry(r, why) for r, why in failed],
            not_touched=[_entry(r) for r in not_touched],
            live_kept=live_kept,
        )
    )
