"""`nnrun show`: a per-layer table of a model (type, output shape, kernel, stride,
activation, maps/units, parameters, FLOPs), found by intercepting the top-level
submodule calls of one forward pass, so any Flax model gets a table without
describing itself twice. FLOPs come from XLA's cost analysis of each layer alone.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.config import Experiment
from experiments.data import load_dataset
from experiments.errors import UserError
from experiments.models import MODELS, build_model, data_info
from experiments.models.patch_conv import NHWC

COLUMNS = ["Layer", "Type", "Output", "Kernel", "Stride", "Activation", "Maps/Units", "Params", "FLOPs"]


def model_table(exp: Experiment) -> tuple[list[str], list[list[str]], list[str]]:
    dataset = load_dataset(exp.data)
    info = data_info(dataset)
    trainer = MODELS.get(exp.model.name).trainer
    if trainer == "hebbian":
        return COLUMNS, *_energy_rows(dataset)
    if trainer != "gradient":
        raise UserError(f"`nnrun show` has no table for models of the '{trainer}' trainer yet")
    model = build_model(exp.model, info)
    if "layout" in getattr(model, "__dataclass_fields__", {}):
        # the table describes the network, not how it stores activations: show NHWC
        # shapes whichever layout the model trains in
        model = model.clone(layout=NHWC)
    x = jax.ShapeDtypeStruct((1, *info.input_shape), jnp.dtype(info.input_dtype))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: nothing compiles
    rows, total_params, total_flops = [], 0, 0
    for module, inputs, output in _top_level_calls(model, variables, x):
        output = _main_output(output)
        layer_vars = {"params": variables["params"].get(module.name, {})}
        params = sum(p.size for p in jax.tree.leaves(layer_vars))
        flops = _flops(module, layer_vars, inputs)
        total_params += params
        total_flops += flops
        activation = getattr(module, "activation", "none")
        rows.append([
            module.name, getattr(module, "layer_type", type(module).__name__),
            "x".join(str(d) for d in output.shape[1:]), _kernel(module), _stride(module),
            activation if activation != "none" else "", str(getattr(module, "features", None) or output.shape[-1]),
            f"{params:,}", f"{flops:,}",
        ])
    totals = ["Total", "", "", "", "", "", "", f"{total_params:,}", f"{total_flops:,}"]
    return COLUMNS, rows, totals


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), tree)


def _top_level_calls(model: nn.Module, variables: Any, x: Any) -> list[tuple[nn.Module, tuple, Any]]:
    """(module, abstract inputs, abstract output) for each direct child called in a forward pass."""
    calls = []

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        if context.method_name == "__call__" and module.scope is not None and len(module.scope.path) == 1:
            # recurrent layers that return their carry give (carry, outputs): show the outputs
            shown = out[-1] if isinstance(out, tuple) else out
            calls.append((module.clone(parent=None), _abstract(args), _abstract(shown)))
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(model.apply, variables, x)
    first = {}  # a layer called at every step (a decoder unrolled over time) is one row
    for call in calls:
        first.setdefault(call[0].name, call)
    return list(first.values())


def _main_output(out: Any) -> Any:
    """A layer's output array; for layers returning (carry, outputs), the outputs."""
    return out if hasattr(out, "shape") else jax.tree.leaves(out)[-1]


def _flops(module: nn.Module, variables: Any, inputs: tuple) -> int:
    """XLA's FLOP count for this layer alone (per example: the batch is 1)."""
    try:
        cost = jax.jit(module.apply).lower(variables, *inputs).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return int(cost.get("flops", 0))
    except Exception:  # noqa: BLE001 - FLOPs are informative; a backend without cost analysis gets 0
        return 0


def _kernel(module: nn.Module) -> str:
    k = getattr(module, "kernel", None)
    return "x".join(map(str, k)) if isinstance(k, tuple) else ""


def _stride(module: nn.Module) -> str:
    s = getattr(module, "stride", None)
    return str(s) if s is not None and _kernel(module) else ""


def _energy_rows(dataset) -> tuple[list[list[str]], list[str]]:
    n = int(dataset.train.x.shape[1])
    shape = dataset.meta.get("image_shape", (n,))
    rows = [["units", "Binary threshold", "x".join(map(str, shape)), "", "", "step (theta)", str(n),
             f"{n * n - n + n:,}", f"{2 * n * n:,}"]]
    totals = ["Total", "", "", "", "", "", "", f"{n * n - n + n:,}", f"{2 * n * n:,}"]
    return rows, totals
