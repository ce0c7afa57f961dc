"""The Linux boundary: netlink (the one pyroute2 adapter), network namespaces, sysctls and
iptables. Foreign errors become CNI errors here, by errno."""
