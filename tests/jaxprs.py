"""What a traced function stores: the shapes of its loops' outputs, nested jaxprs included."""


def scan_output_shapes(jaxpr) -> list[tuple[int, ...]]:
  """The shapes of every `lax.scan`'s outputs (final carries and per-step outputs) in ``jaxpr`` and in the
  jaxprs it holds (jit, custom VJP, loop bodies)."""
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan":
      shapes += [var.aval.shape for var in eqn.outvars]
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else [param]:
        inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr holds its Jaxpr
        if hasattr(inner, "eqns"):
          shapes += scan_output_shapes(inner)
  return shapes
