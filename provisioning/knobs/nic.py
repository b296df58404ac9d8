"""Ethtool-level knobs: channels, ring sizes, interrupt coalescing, offloads, flow control."""
from __future__ import annotations

from provisioning.accessors import ChannelCount, EthtoolField, Feature
from provisioning.context import Context
from provisioning.errors import Unsupported
from provisioning.settings import Setting, unsupported

# What each knob touches, by profile key -> ethtool name; provisioning.owned derives revert's allow-list from
# these, so a field added here is one revert may restore.
FEATURES = {"gro": "rx-gro", "lro": "rx-lro", "hw_gro": "rx-gro-hw"}
COALESCE = {"adaptive_rx": "use_adaptive_rx_coalesce", "rx_usecs": "rx_coalesce_usecs"}
CHANNELS = ("combined_count", "rx_count")
RINGS = ("rx", "tx")
PAUSE = ("autoneg", "rx", "tx")


def channels(ctx: Context, cfg: dict) -> list[Setting]:
    """Combined channels where the driver has them (most NICs), else rx channels (veth)."""
    rows, nic = [], ctx.host.nic
    for t in ctx.targets:
        key = f"{t.iface} channels"
        try:
            ch = nic.channels(t.iface)
        except Unsupported as err:
            rows.append(unsupported("channels", key, cfg["reason"], str(err)))
            continue
        if ch["max_combined"] > 0:
            field, limit = CHANNELS[0], ch["max_combined"]
        elif ch["max_rx"] > 0:
            field, limit = CHANNELS[1], ch["max_rx"]
        else:
            rows.append(unsupported("channels", key, cfg["reason"],
                                    f"the {t.iface} driver has no adjustable rx or combined channels"))
            continue
        want = min(t.queues, limit)
        note = f"capped at the driver's maximum of {limit}" if want < t.queues else ""
        tx = want if field == "combined_count" else len(ctx.host.topo.queues(t.iface, "tx"))
        ctx.planned[t.iface] = {"rx": want, "tx": tx}
        kind = field.split("_")[0]
        rows.append(Setting("channels", f"{key} {kind}", cfg["reason"],
                            ChannelCount(nic, ctx.host.fs, t.iface, field), target=want, note=note))
    return rows


def rings(ctx: Context, cfg: dict) -> list[Setting]:
    rows, nic = [], ctx.host.nic
    for t in ctx.targets:
        try:
            sizes = nic.rings(t.iface)
        except Unsupported as err:
            rows.append(unsupported("rings", f"{t.iface} rings", cfg["reason"], str(err)))
            continue
        for ring in RINGS:
            if ring not in cfg:
                continue
            limit = sizes.get(f"{ring}_max", 0)
            if not limit:
                rows.append(unsupported("rings", f"{t.iface} ring {ring}", cfg["reason"],
                                        f"the {t.iface} driver reports no {ring} ring maximum"))
                continue
            want = limit if cfg[ring] == "max" else min(cfg[ring], limit)
            note = f"capped at the driver's maximum of {limit}" if cfg[ring] != "max" and cfg[ring] > limit \
                else ""
            rows.append(Setting("rings", f"{t.iface} ring {ring}", cfg["reason"],
                                EthtoolField(nic, t.iface, "rings", ring), target=want, note=note))
    return rows


def coalesce(ctx: Context, cfg: dict) -> list[Setting]:
    """Adaptive moderation first: some drivers ignore or refuse rx-usecs while it is on."""
    rows, nic = [], ctx.host.nic
    for t in ctx.targets:
        try:
            nic.coalesce(t.iface)
        except Unsupported as err:
            rows.append(unsupported("coalesce", f"{t.iface} coalescing", cfg["reason"], str(err)))
            continue
        for option, field in COALESCE.items():
            if option in cfg:
                want = int(cfg[option])
                rows.append(Setting("coalesce", f"{t.iface} coalesce {field}", cfg["reason"],
                                    EthtoolField(nic, t.iface, "coalesce", field), target=want))
    return rows


def offloads(ctx: Context, cfg: dict) -> list[Setting]:
    rows, nic = [], ctx.host.nic
    for t in ctx.targets:
        try:
            nic.features(t.iface)
        except Unsupported as err:
            rows.append(unsupported("offloads", f"{t.iface} offloads", cfg["reason"], str(err)))
            continue
        for option, feature in FEATURES.items():
            if option in cfg:
                rows.append(Setting("offloads", f"{t.iface} {feature}", cfg["reason"],
                                    Feature(nic, t.iface, feature), target=bool(cfg[option])))
    return rows


def pause(ctx: Context, cfg: dict) -> list[Setting]:
    """Autonegotiation first: with it on, rx/tx only change what is advertised."""
    rows, nic = [], ctx.host.nic
    for t in ctx.targets:
        try:
            nic.pause(t.iface)
        except Unsupported as err:
            rows.append(unsupported("pause", f"{t.iface} pause", cfg["reason"], str(err)))
            continue
        for option in PAUSE:
            if option in cfg:
                rows.append(Setting("pause", f"{t.iface} pause {option}", cfg["reason"],
                                    EthtoolField(nic, t.iface, "pause", option), target=bool(cfg[option])))
    return rows
