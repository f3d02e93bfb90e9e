r"""The computation graph of any JAX function, with every node's value and adjoint.

``gd.trace(f, *args)`` turns ``f`` into a jaxpr, evaluates it one equation at a time
keeping every intermediate value, then runs the reverse pass one equation at a time,
each primitive through its own VJP. For an output ``J`` and a node ``x`` whose value
feeds the nodes ``y₁ … y_k`` (fan-out), the adjoint is the sum of what arrives back
along each edge::

    dJ/dx = Σᵢ dJ/dyᵢ · ∂yᵢ/∂x            (the local partials ∂yᵢ/∂x are kept for scalar edges)

so the graph shows the picture the documents draw by hand: values flowing left to
right, adjoints flowing right to left, summed where a value fans out. The adjoints of
the inputs are exactly ``jax.grad`` of ``f``.

Names. Inputs take their argument names and pytree paths (``a`` for ``params["a"]``
when that is unambiguous, else ``params['a']``); a value tagged with
``gd.name(x, "u")`` inside ``f`` is the node ``u``; the output is ``J`` unless named;
everything else gets a short name after its operation (``mul1``, ``exp2``).

Nested computations. ``jit``/``closed_call``/``checkpoint`` bodies are inlined: their
equations become nodes of the graph. A function with its own derivative rule
(``jax.custom_jvp``/``custom_vjp``, e.g. ``jax.nn.relu``) is one node, differentiated by
its own rule, as ``jax.grad`` does. ``scan``, ``while`` and ``cond`` are one node each,
with a note. ``jax.nn.sigmoid`` is JAX's ``logistic`` primitive: one node, shown as
``sigmoid(z)``.

A name is marked in the jaxpr by ``name_p``, an identity primitive that
:func:`gdjax.name` binds only while :func:`trace` is tracing. A function that was
``jax.jit``-compiled and called *before* the trace keeps its cached jaxpr, in which the
names are missing: its nodes then get operation names.

Example::

    >>> import gdjax as gd, jax.numpy as jnp
    >>> g = gd.trace(gd.models.get("G1").loss, {"a": 5.0, "b": 3.0, "c": 2.0})
    >>> float(g["u"].value), float(g["u"].adjoint)
    (6.0, 3.0)

Layers (each a module of this package): :mod:`~gdjax.graph.primitive` (the name mark),
:mod:`~gdjax.graph.build` (jaxpr to a flat list of steps), :mod:`~gdjax.graph.interpret`
(forward and reverse passes, :func:`trace`), :mod:`~gdjax.graph.assemble` (naming the
nodes), :mod:`~gdjax.graph.graph` (:class:`Graph`, :class:`Node`, :class:`Edge`) and
:mod:`~gdjax.graph.render` (text, DOT, Graphviz and matplotlib), and the explorer page:
:mod:`~gdjax.graph.html` (``Graph.to_html``, ``check_html``), :mod:`~gdjax.graph._overlay`
(a check report on the graph) and :mod:`~gdjax.graph._explorer` (its script and style).

A ``while`` loop has no reverse-mode rule in JAX (its trip count is known only at run
time): the graph keeps its forward values, and every node the output depends on only
through the loop gets ``adjoint=None`` and a note saying why.
"""

from gdjax.graph.graph import Edge, Graph, Node
from gdjax.graph.interpret import trace
from gdjax.graph.primitive import name_p

__all__ = ["Edge", "Graph", "Node", "name_p", "trace"]
