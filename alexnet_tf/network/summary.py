"""A plain-text layer table of the two-tower network: output shapes, parameters, and the tower of every layer."""

from __future__ import annotations

from alexnet_tf.network.model import PAPER_LAYERS, AlexNet, paper_layer_of


def parameters_by_paper_layer(model: AlexNet) -> dict[str, int]:
    """Sum the parameters of the Keras layers that make up each paper layer (conv1_a + conv1_b -> conv1)."""
    counts = dict.fromkeys(PAPER_LAYERS, 0)
    for layer in model.layers:
        paper_layer = paper_layer_of(layer.name)
        if paper_layer is not None:
            counts[paper_layer] += layer.count_params()
    return counts


def summarize(model: AlexNet) -> str:
    """Return the layer table, then parameters per paper layer and the total."""
    devices = model.tower_devices
    rows = [("layer", "type", "output shape", "params", "tower")]
    for layer in model.layers:
        tower = model.tower_of(layer.name)
        if tower is None:  # concatenations and fc8 read both towers; the input and its padding belong to neither
            where = "both" if layer.name.endswith("_input") or layer.weights else "-"
        else:
            where = "AB"[tower] + (f" {devices[tower]}" if devices else "")
        shape = "x".join(str(d) for d in layer.output.shape[1:])
        rows.append((layer.name, type(layer).__name__, shape, f"{layer.count_params():,}", where))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.rjust(w) if i == 3 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    counts = parameters_by_paper_layer(model)
    lines += ["", "parameters per paper layer:"]
    lines += [f"  {name:<6}{count:>13,}" for name, count in counts.items()]
    lines.append(f"  {'total':<6}{model.count_params():>13,}")
    placement = ", ".join(f"tower {'AB'[i]} on {d}" for i, d in enumerate(devices)) if devices else "none (one device)"
    lines.append(f"tower placement: {placement}")
    return "\n".join(lines)
