"""What each capture is (client, node, pod), inferred from where connections pass it."""

from __future__ import annotations

import pandas as pd

ROLE_ORDER = ("client", "node", "pod", "other")


def infer_roles(hops: pd.DataFrame, multi_interface: set[str] | None = None) -> dict[str, str]:
    """Role of every capture that saw a connection crossing more than one capture.

    node: some connection entered and left it (two or more request hops in it), or the
    capture shows several interfaces (``multi_interface``: ``tcpdump -i any``, dumpcap on
    several interfaces), which a client or a pod capture hardly does;
    client: it is where requests start more often than where they end; pod: where they
    end; other: seen, but never at an end and never forwarding. Captures that only saw
    traffic nobody else saw are not in the result.
    """
    on = hops[hops["on_path"] & (hops["direction"] == "request")]
    if on.empty:
        return {}
    multi = on.groupby("connection")["capture"].nunique()
    on = on[on["connection"].isin(multi[multi > 1].index)]
    if on.empty:
        return {}
    per = on.groupby(["connection", "capture"], observed=True)["hop"].agg(["min", "max", "size"]).reset_index()
    ends = on.groupby("connection")["hop"].agg(["min", "max"]).add_suffix("_conn")
    per = per.join(ends, on="connection")
    per["first"] = per["min"] == per["min_conn"]
    per["last"] = per["max"] == per["max_conn"]
    per["forward"] = per["size"] >= 2
    score = per.groupby("capture", observed=True)[["first", "last", "forward"]].sum()
    roles: dict[str, str] = {}
    multi_interface = multi_interface or set()
    for capture, row in score.iterrows():
        if str(capture) in multi_interface or (row["forward"] > 0 and row["forward"] >= max(row["first"], row["last"]) / 2):
            role = "node"
        elif row["first"] > row["last"]:
            role = "client"
        elif row["last"] > 0:
            role = "pod"
        else:
            role = "other"
        roles[str(capture)] = role
    return roles
