"""Real data shipped with the package, and a generic loader for panel data.

- :func:`load_panel` reads a panel (id, period, state, action) from a CSV file or arrays into a
  :class:`Panel`: transitions for :func:`~bayesirl.core.dynamics.fit_transitions` and one
  demonstration per id.
- :func:`rust_bus` is Rust's (1987) bus engine replacement problem: the MDP, with transitions
  estimated from the data, and one demonstration per bus; :func:`rust_bus_panel` the raw panel,
  :func:`rust_bus_transitions` the first stage's Dirichlet posterior.

Every data file ships inside the package (``bayesirl/datasets/data``) with a README stating its
source and licence; nothing is downloaded.
"""

from bayesirl.datasets.panel import Panel, load_panel, read_csv_columns
from bayesirl.datasets.rust import rust_bus, rust_bus_panel, rust_bus_transitions

__all__ = ["Panel", "load_panel", "read_csv_columns", "rust_bus", "rust_bus_panel",
           "rust_bus_transitions"]
