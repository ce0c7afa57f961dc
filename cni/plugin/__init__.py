"""The plugin: the network configuration, the ADD plan, CHECK's diff (pure), and the
handlers that apply them through the Linux boundary and the IPAM store."""
