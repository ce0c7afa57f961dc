"""The ``weft serve`` helper: its wire protocol, the client every exec runs first (builtins
only), and the fork server that runs requests in the client's namespaces."""
