"""End-to-end tests: a private containerd running busybox containers through CNI."""
