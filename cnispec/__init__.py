"""What both halves of weft speak — the plugin (``cni``) and its IPAM (``ipam``): the CNI
spec's error codes and classes, the spec's and the kernel's rules for ids, interface names
and MTUs, the IP address types. A leaf: imports nothing from ``cni`` or ``ipam``, so the
two packages depend on it and ``cni`` on ``ipam``, never the other way round."""
