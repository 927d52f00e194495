"""Checks of a cluster with prefill/decode pools (``cluster[].role``, ``network``), before any
simulation: one line naming the field and the fix (called by ``goodput.sim.config_checks``)."""
from __future__ import annotations

from goodput.sim.config import ConfigError, SimConfig

ROLES = ("mixed", "prefill", "decode")


def check_pools(cfg: SimConfig) -> None:
    for g, group in enumerate(cfg.cluster):
        if group.role not in ROLES:
            raise ConfigError(f"cluster[{g}].role={group.role!r}: choose one of {', '.join(ROLES)}")
    roles = {g.role for g in cfg.cluster}
    if roles == {"decode"} or ("prefill" not in roles and "mixed" not in roles):
        raise ConfigError("cluster: every group has role 'decode', so no instance takes new prompts; "
                          "give at least one group role 'prefill' or 'mixed'")
    if "decode" in roles and "prefill" not in roles:
        raise ConfigError("cluster: a 'decode' group receives requests only from 'prefill' groups; "
                          "add a group with role 'prefill' (or make the decode group 'mixed')")
    if "prefill" not in roles:
        return
    if roles == {"prefill"}:
        raise ConfigError("cluster: every group has role 'prefill', so no instance decodes; "
                          "add a group with role 'decode' (or 'mixed')")
    from goodput.sim.engine.disagg import DISPATCH
    from goodput.sim.network import MODES, NetworkConfigError, Topology
    from goodput.sim.network.placement import place

    net = cfg.network
    if net.kv_transfer not in MODES:
        raise ConfigError(f"network.kv_transfer={net.kv_transfer!r}: choose one of {', '.join(MODES)}")
    if net.decode_dispatch not in DISPATCH:
        raise ConfigError(f"network.decode_dispatch={net.decode_dispatch!r}: choose one of "
                          f"{', '.join(DISPATCH)}")
    if net.message_bytes < 1:
        raise ConfigError(f"network.message_bytes={net.message_bytes}: must be >= 1 (bytes per message)")
    if net.stall_timeout_s is not None and not net.stall_timeout_s > 0:
        raise ConfigError(f"network.stall_timeout_s={net.stall_timeout_s}: must be > 0 seconds "
                          "(leave it out to wait for a link to recover)")
    if cfg.router.name == "llumnix":
        raise ConfigError("router.name=llumnix: live migration between pools is not modelled; use "
                          "round_robin, least_outstanding_tokens, least_kv or power_of_two with pools")
    if any(e.action == "scale_out" for e in cfg.events):
        raise ConfigError("events: scale_out with prefill/decode pools is not supported (a new "
                          "instance has no place on the network topology); size the pools up front")
    if net.topology:
        try:
            topology = Topology.from_config(net.topology)
            place(topology, [g.tp * g.pp for g in cfg.cluster for _ in range(g.count)])
        except NetworkConfigError as exc:
            raise ConfigError(str(exc)) from None
