"""`nnrun show`: a per-layer table of a model (type, output shape, kernel, stride,
activation, maps/units, parameters, multiply-adds, FLOPs) and its totals, found by
intercepting the submodule calls of one abstract forward pass (jax.eval_shape: no
parameter is ever allocated, so a 60M-parameter AlexNet shows in about a second), so any
Flax model gets a table without describing itself twice.

Two cost columns, per example:
- MACs: multiply-accumulates of the convolutions and dense layers (output positions x
  kernel size), the convention of the papers' and torchvision's "FLOPs" tables
  (e.g. ResNet-18: 1.8 G).
- FLOPs: XLA's cost analysis of each layer alone (every add, multiply, activation and
  bias: about 2 x MACs plus the elementwise work).

A model config may define `fixed_input()`, the input its variant is defined for (e.g. the
ImageNet networks at 224x224x3 and 1,000 classes): the table then needs no data at all; and
`show_notes(total_params)`, lines printed under the table.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.config import Experiment
from experiments.errors import UserError
from experiments.models import MODELS, DataInfo, build_model, data_info
from experiments.models.patch_conv import NHWC

COLUMNS = ["Layer", "Type", "Output", "Kernel", "Stride", "Activation", "Maps/Units", "Params", "MACs", "FLOPs"]


def model_table(exp: Experiment) -> tuple[list[str], list[list[str]], list[str], list[str]]:
    """(columns, one row per top-level layer, the totals row, notes)."""
    trainer = MODELS.get(exp.model.name).trainer
    fixed = getattr(exp.model, "fixed_input", lambda: None)()
    if fixed is None:
        from experiments.data import load_dataset

        dataset = load_dataset(exp.data)
    if trainer == "hebbian":
        return COLUMNS, *_energy_rows(dataset), []
    if trainer != "gradient":
        raise UserError(f"`nnrun show` has no table for models of the '{trainer}' trainer yet")
    info = fixed if fixed is not None else data_info(dataset)
    rows, totals = layer_rows(build_model(exp.model, info), info)
    notes_fn = getattr(exp.model, "show_notes", None)
    notes = notes_fn(int(totals[COLUMNS.index("Params")].replace(",", ""))) if notes_fn else []
    return COLUMNS, rows, totals, notes


def count_params(model: nn.Module, info: DataInfo) -> int:
    """Trainable parameters of `model` on inputs like `info`'s, without allocating them."""
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), _input(info))
    return sum(p.size for p in jax.tree.leaves(variables.get("params", {})))


def _input(info: DataInfo) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((1, *info.input_shape), jnp.dtype(info.input_dtype))


def layer_rows(model: nn.Module, info: DataInfo) -> tuple[list[list[str]], list[str]]:
    if "layout" in getattr(model, "__dataclass_fields__", {}):
        # the table describes the network, not how it stores activations: show NHWC
        # shapes whichever layout the model trains in
        model = model.clone(layout=NHWC)
    x = _input(info)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: nothing compiles
    calls, macs = _calls(model, variables, x)
    rows, total_params, total_macs, total_flops = [], 0, 0, 0
    for module, inputs, output in calls:
        layer_vars = {c: tree[module.name] for c, tree in variables.items() if module.name in tree}
        params = sum(p.size for p in jax.tree.leaves(layer_vars.get("params", {})))
        flops = _flops(module, layer_vars, inputs)
        total_params += params
        total_macs += macs.get(module.name, 0)
        total_flops += flops
        activation = getattr(module, "activation", "none")
        out = _main_output(output)
        rows.append([
            module.name, getattr(module, "layer_type", type(module).__name__),
            "x".join(str(d) for d in out.shape[1:]), _kernel(module), _stride(module),
            activation if isinstance(activation, str) and activation != "none" else "",
            str(getattr(module, "features", None) or out.shape[-1]),
            f"{params:,}", f"{macs.get(module.name, 0):,}", f"{flops:,}",
        ])
    totals = ["Total", "", "", "", "", "", "", f"{total_params:,}", f"{total_macs:,}", f"{total_flops:,}"]
    return rows, totals


def _abstract(tree: Any) -> Any:
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype) if hasattr(a, "shape") else a, tree)


def _calls(model: nn.Module, variables: Any, x: Any) -> tuple[list[tuple[nn.Module, tuple, Any]], dict[str, int]]:
    """(module, abstract inputs, abstract output) for each direct child called in a forward
    pass, and the multiply-adds of each direct child (its kernels at any depth)."""
    calls, macs = [], {}

    def interceptor(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        module = context.module
        path = module.scope.path if module.scope is not None else ()
        if context.method_name != "__call__" or not path:
            return out
        if len(path) == 1:
            calls.append((module.clone(parent=None), _abstract(args), _abstract(out)))
        kernel = _own_params(variables.get("params", {}), path).get("kernel")
        if kernel is not None and getattr(kernel, "ndim", 0) >= 2:
            positions = math.prod(jax.tree.leaves(out)[0].shape[:-1])  # batch 1: output positions
            macs[path[0]] = macs.get(path[0], 0) + positions * kernel.size
        return out

    with nn.intercept_methods(interceptor):
        jax.eval_shape(model.apply, variables, x)
    first = {}  # a layer called at every step (a decoder unrolled over time) is one row
    for call in calls:
        first.setdefault(call[0].name, call)
    return list(first.values()), macs


def _own_params(params: Any, path: tuple[str, ...]) -> dict:
    for name in path:
        if not hasattr(params, "get"):
            return {}
        params = params.get(name, {})
    return params if hasattr(params, "get") else {}


def _main_output(out: Any) -> Any:
    """A layer's output array; for layers returning (carry, outputs), the outputs."""
    return out if hasattr(out, "shape") else jax.tree.leaves(out)[-1]



def _flops(module: nn.Module, variables: Any, inputs: tuple) -> int:
    """XLA's FLOP count for this layer alone (per example: the batch is 1)."""
    arrays = [a for a in inputs if isinstance(a, jax.ShapeDtypeStruct)]
    static = [a for a in inputs if not isinstance(a, jax.ShapeDtypeStruct)]
    try:
        apply = lambda v, *xs: module.apply(v, *xs, *static)  # noqa: E731 - flags (train=False) stay Python values
        cost = jax.jit(apply).lower(variables, *arrays).cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        return int(cost.get("flops", 0))
    except Exception:  # noqa: BLE001 - FLOPs are informative; a backend without cost analysis gets 0
        return 0


def _kernel(module: nn.Module) -> str:
    k = getattr(module, "kernel", None)
    return "x".join(map(str, k)) if isinstance(k, tuple) else ""


def _stride(module: nn.Module) -> str:
    s = getattr(module, "stride", None)
    if s is None and isinstance(getattr(module, "kernel", None), tuple) and hasattr(module, "window"):
        s = module.window  # pooling: the stride defaults to the window
    return str(s) if s is not None and _kernel(module) else ""


def _energy_rows(dataset) -> tuple[list[list[str]], list[str]]:
    n = int(dataset.train.x.shape[1])
    shape = dataset.meta.get("image_shape", (n,))
    rows = [["units", "Binary threshold", "x".join(map(str, shape)), "", "", "step (theta)", str(n),
             f"{n * n - n + n:,}", f"{n * n:,}", f"{2 * n * n:,}"]]
    totals = ["Total", "", "", "", "", "", "", f"{n * n - n + n:,}", f"{n * n:,}", f"{2 * n * n:,}"]
    return rows, totals
